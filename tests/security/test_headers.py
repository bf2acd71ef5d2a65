"""Security headers on the three kinds of response: an HTML page, an API response and a
public tracking URL (test_deploy_check covers the log-in page, /healthz, the 404 page and
HSTS on the log-in page; this adds the signed-in, API and public-token cases and
Permissions-Policy)."""

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def _assert_headers(response) -> None:
    csp = response["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ):
        assert directive in csp, (directive, csp)
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    policy = response["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()"):
        assert feature in policy
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.fixture
def urls():
    return {
        "html": "/crm/contacts/",
        "api": "/api/v1/contacts/",
        "tracking": "/t/o/not-a-token.gif",
        "unsubscribe": "/u/not-a-token",
    }


@pytest.mark.parametrize("kind", ["html", "api", "tracking", "unsubscribe"])
def test_every_kind_of_response_carries_the_security_headers(admin_client_, urls, kind):
    response = admin_client_.get(urls[kind])
    assert response.status_code in (200, 404)
    _assert_headers(response)
    assert "Strict-Transport-Security" not in response  # plain HTTP


@pytest.mark.parametrize("kind", ["html", "api", "tracking"])
@override_settings(SECURE_HSTS_SECONDS=31536000, SECURE_HSTS_INCLUDE_SUBDOMAINS=True)
def test_https_responses_of_every_kind_carry_hsts(admin_client_, urls, kind):
    response = admin_client_.get(urls[kind], secure=True)
    _assert_headers(response)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_a_valid_open_pixel_is_not_cached_and_carries_the_headers(client, settings):
    from nurture.services.enrollment import contacts_enroll
    from nurture.services.sending import enrollments_advance
    from nurture.tokens import open_url
    from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    program = ProgramFactory()
    StepFactory(program=program)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    from nurture.models import EmailSend

    message_id = EmailSend.objects.get(contact=contact).message_id
    path = "/" + open_url(message_id).split("/", 3)[3]
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    _assert_headers(response)


def test_the_api_docs_page_loads_nothing_its_csp_refuses(marketing_client):
    """Review finding: /api/docs/ loaded Swagger UI from a CDN and booted it with an inline
    script and style, all refused by the CSP: a blank page (tests/e2e/test_api_docs.py
    drives it in Chromium)."""
    import re

    page = marketing_client.get("/api/docs/")
    assert page.status_code == 200
    _assert_headers(page)
    html = page.content.decode()
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert all(src.startswith("/") for src in sources), sources
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline script"
    assert "<style" not in html
    assert " style=" not in html
    (script,) = re.findall(r'<script src="([^"]+\?[^"]*script[^"]*)"', html)
    boot = marketing_client.get(script.replace("&amp;", "&"))
    assert boot.status_code == 200
    assert boot["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle(" in boot.content
