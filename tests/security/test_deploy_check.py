"""Production settings pass Django's deploy checks, and every response carries the security
headers (CSP, framing, referrer, nosniff; HSTS when served over HTTPS)."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_reports_nothing_with_production_values(tmp_path):
    """README, Scale-out: "check --deploy reports no issues with these values" — the
    minimal production layout's (the servers' URLs aside: checks connect to neither)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "CSRF_TRUSTED_ORIGINS",
            "SECURE_SSL_REDIRECT",
            "DJANGO_ALLOW_ASYNC_UNSAFE",  # set for the browser tests only
        }
    }
    env.update(
        DJANGO_SETTINGS_MODULE="crm.settings",
        LEADCYCLE_VAR_DIR=str(tmp_path),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="crm.example.com",
        SITE_URL="https://crm.example.com",
        SECURE_HTTPS="1",
        BEHIND_PROXY="1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Not even drf-spectacular's schema warnings (drf_spectacular.W001), which it reports
    # as system checks: the README says "no issues".
    assert "System check identified no issues" in output, output
    assert not (tmp_path / "secret_key").exists(), "a production key is never generated"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/healthz", "/", "/no-such-page/"])
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response  # plain HTTP in tests


@pytest.mark.django_db
@override_settings(
    SECURE_HSTS_SECONDS=31536000,
    SECURE_HSTS_INCLUDE_SUBDOMAINS=True,
    SECURE_HSTS_PRELOAD=True,
    SECURE_SSL_REDIRECT=True,
)
def test_https_responses_carry_hsts_and_plain_http_is_redirected(client):
    secure = client.get("/accounts/login/", secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")


@pytest.mark.django_db
def test_session_and_csrf_cookies_are_http_only_where_it_matters(client):
    from tests.factories import UserFactory

    UserFactory(username="cookie", role="sales")
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", {"username": "cookie", "password": "pw-Secret-123"})
    assert response.cookies["sessionid"]["httponly"]
    assert response.cookies["sessionid"]["samesite"] == "Lax"
