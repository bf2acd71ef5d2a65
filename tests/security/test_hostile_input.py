"""Hostile input, one test (or a small group) per class seen in CRM and marketing-automation
advisories: stored XSS, filter/sort/segment-field injection, CSV formula injection,
template injection in emails, open redirect and guessable/tampered/expired tracking tokens,
forged and replayed webhooks, user enumeration, and CSRF on every state-changing form.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from datetime import timedelta

import pytest
from django.core import mail, signing
from django.test import Client
from django.urls import resolve
from django.utils import timezone
from openpyxl import load_workbook

from crm.ingest import activities_record
from crm.models import Activity, Contact, Segment, Stage
from crm.segments.services import segment_members_add
from nurture import rendering, tokens
from nurture.models import EmailSend, EmailTemplate
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.factories import CampaignFactory, CompanyFactory, ContactFactory, DealFactory
from tests.nurture.factories import EmailTemplateFactory, ProgramFactory, StepFactory

from .test_access_matrix import ACCESS_TABLE, _owned_objects, _url, _write_method

pytestmark = pytest.mark.django_db

XSS = '<script>alert("xss")</script>'
XSS_ESCAPED = "&lt;script&gt;alert(&quot;xss&quot;)&lt;/script&gt;"
FORMULAS = ['=HYPERLINK("https://evil.example","x")', "+SUM(1,2)", "-2+3", "@cmd", "\t=1"]


@pytest.fixture(autouse=True)
def _site(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://crm.example.com"


# --- Stored XSS ------------------------------------------------------------------------------


@pytest.fixture
def hostile_world(admin_user):
    """Every user-typed name in the product set to a script tag, linked so pages show it."""
    from reports.review.models import ContentAsset

    campaign = CampaignFactory(name=f"Camp {XSS}", owner=admin_user)
    company = CompanyFactory(name=f"Co {XSS}")
    contact = ContactFactory(
        first_name=XSS,
        last_name=XSS,
        job_title=XSS,
        company=company,
        acquired_by=campaign,
        owner=admin_user,
        stage=Stage.MQL,
        attributes={"note": XSS},
    )
    activities_record(
        items=[
            {
                "kind": "page_visit",
                "occurred_at": timezone.now() - timedelta(hours=1),
                "contact": contact.pk,
                "campaign": campaign.pk,
                "details": {"title": XSS},
            }
        ]
    )
    segment = Segment.objects.create(
        name=f"Seg {XSS}", description=XSS, kind=Segment.Kind.STATIC, owner=admin_user
    )
    segment_members_add(segment=segment, contact_ids=[contact.pk])
    template = EmailTemplateFactory(
        name=f"Tpl {XSS}", subject=f"Hi {{{{ contact.first_name }}}} {XSS}"
    )
    program = ProgramFactory(name=f"Prog {XSS}", campaign=campaign)
    StepFactory(program=program, position=1, template=template)
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    DealFactory(contact=contact, name=f"Deal {XSS}", owner=admin_user)
    ContentAsset.objects.create(title=f"Asset {XSS}", type=ContentAsset.Type.choices[0][0])
    return {
        "contact": contact,
        "company": company,
        "campaign": campaign,
        "segment": segment,
        "template": template,
        "program": program,
    }


def _pages(world) -> list[str]:
    c, p = world["contact"], world["program"]
    today = timezone.localdate()
    period = f"?start={today - timedelta(days=30)}&end={today + timedelta(days=1)}"
    return [
        "/",
        "/crm/contacts/",
        f"/crm/contacts/{c.pk}/",
        f"/crm/contacts/{c.pk}/edit/",
        "/crm/companies/",
        f"/crm/companies/{world['company'].pk}/",
        "/crm/campaigns/",
        f"/crm/campaigns/{world['campaign'].pk}/",
        "/crm/segments/",
        f"/crm/segments/{world['segment'].pk}/",
        "/crm/mqls/",
        f"/crm/mqls/{c.pk}/",
        "/crm/deals/",
        "/nurture/programs/",
        f"/nurture/programs/{p.pk}/",
        "/nurture/templates/",
        f"/nurture/templates/{world['template'].pk}/",
        f"/nurture/templates/{world['template'].pk}/preview/",
        "/reports/review/",
        f"/reports/funnel/{period}",
        f"/reports/email/{period}",
        f"/reports/cost-per-mql/{period}",
        f"/reports/leads/{period}",
        f"/reports/drilldown/{period}&metric=new_leads",
    ]


def test_stored_xss_never_reaches_a_page_unescaped(hostile_world, admin_client_):
    escaped_somewhere = 0
    problems = []
    for url in _pages(hostile_world):
        response = admin_client_.get(url)
        if response.status_code >= 500:
            problems.append(f"{url}: {response.status_code}")
            continue
        if "html" not in response.get("Content-Type", ""):
            continue
        body = response.content.decode()
        if XSS in body or "<script>alert" in body:
            problems.append(f"{url}: raw <script> in the page")
        escaped_somewhere += body.count("&lt;script&gt;")
    assert not problems, "\n".join(problems)
    assert escaped_somewhere > 20, "the hostile names were expected on these pages, escaped"


def test_stored_xss_is_escaped_in_the_rendered_email(hostile_world):
    message = next(m for m in mail.outbox if m.to == [hostile_world["contact"].email])
    html = message.alternatives[0][0]
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    # Subject and text part are not HTML: they carry the text as typed (mail clients
    # display them as text), and the subject stays one line.
    assert "\n" not in message.subject


def test_json_views_answer_as_json_never_as_html(hostile_world, admin_api):
    c = hostile_world["contact"]
    for url in (f"/api/v1/contacts/{c.pk}/", "/api/v1/segments/", "/api/v1/email-templates/"):
        response = admin_api.get(url)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/json")
        assert response["X-Content-Type-Options"] == "nosniff"


# --- Injection through filters, sort parameters and segment field names -----------------------

INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE crm_contact; --",
    '") OR 1=1 --',
    "%' UNION SELECT password FROM auth_user --",
    "\x00",
    "𝕏" * 300,
    "-owner__password",
    "__class__",
]


@pytest.fixture
def three_contacts():
    return [ContactFactory(first_name=f"Plain{i}", stage=Stage.LEAD) for i in range(3)]


@pytest.mark.parametrize(
    "template",
    [
        "/crm/contacts/?q={v}",
        "/crm/contacts/?sort={v}",
        "/crm/contacts/?stage={v}",
        "/crm/contacts/?owner={v}",
        "/crm/contacts/?company={v}",
        "/crm/contacts/?created_after={v}",
        "/crm/companies/?q={v}&country={v}",
        "/crm/campaigns/?q={v}",
        "/crm/mqls/?sort={v}",
        "/crm/deals/?sort={v}&ordering={v}",
        "/crm/segments/?q={v}",
        "/reports/funnel/?start={v}&campaign={v}",
        "/reports/drilldown/?metric={v}",
    ],
)
def test_hostile_filter_and_sort_values_on_pages_are_harmless(
    admin_client_, three_contacts, template
):
    from urllib.parse import quote

    for value in INJECTIONS:
        response = admin_client_.get(template.format(v=quote(value)))
        assert response.status_code in (200, 302, 400, 404), (value, response.status_code)
        if template.startswith("/crm/contacts/?q=") and response.status_code == 200:
            assert b"Plain0" not in response.content, f"a search for {value!r} matched all"


@pytest.mark.parametrize(
    ("template", "expect"),
    [
        ("/api/v1/contacts/?ordering={v}", "all"),
        ("/api/v1/contacts/?q={v}", "none"),
        ("/api/v1/contacts/?stage={v}", "none"),
        ("/api/v1/activities/?ordering={v}&external_id={v}", "none"),
        ("/api/v1/deals/?ordering={v}", "any"),
        ("/api/v1/companies/?ordering={v}&q={v}", "none"),
        ("/api/v1/scoring/rules/?search={v}&ordering={v}", "any"),
        ("/api/v1/segments/?ordering={v}", "any"),
        ("/api/v1/reports/funnel/?start=2025-01-01&end=2025-02-01&campaign={v}", "any"),
        ("/api/v1/reports/{v}/", "any"),
    ],
)
def test_hostile_filter_and_sort_values_on_the_api_are_harmless(
    admin_api, three_contacts, template, expect
):
    from urllib.parse import quote

    for value in INJECTIONS:
        response = admin_api.get(template.format(v=quote(value, safe="")))
        assert response.status_code in (200, 400, 404), (value, response.status_code)
        if response.status_code != 200 or expect == "any":
            continue
        ids = {row["id"] for row in response.json()["results"]}
        if expect == "all":  # a refused sort key is ignored: never widens or narrows the list
            assert ids == {c.pk for c in three_contacts}, value
        else:
            assert ids == set(), f"the filter value {value!r} matched rows"


@pytest.mark.parametrize(
    "field",
    [
        "owner__password",
        "email') OR 1=1 --",
        "__class__",
        "attributes__",
        "company__contacts__email",
        "id; DROP TABLE crm_contact",
        "",
        None,
        ["email"],
    ],
)
def test_segment_definitions_with_hostile_field_names_are_refused(admin_api, field):
    definition = {"all": [{"field": field, "op": "equals", "value": "x"}]}
    preview = admin_api.post("/api/v1/segments/preview/", {"definition": definition})
    assert preview.status_code == 400, preview.content
    create = admin_api.post(
        "/api/v1/segments/", {"name": "Evil", "kind": "dynamic", "definition": definition}
    )
    assert create.status_code == 400, create.content
    assert not Segment.objects.filter(name="Evil").exists()


# --- CSV formula injection ----------------------------------------------------------------------


@pytest.fixture
def formula_contacts():
    campaign = CampaignFactory(name=FORMULAS[0])
    company = CompanyFactory(name=FORMULAS[1])
    return [
        ContactFactory(
            first_name=f,
            last_name=FORMULAS[-1 - i],
            job_title=f,
            company=company,
            acquired_by=campaign,
        )
        for i, f in enumerate(FORMULAS)
    ]


def _csv_cells(content: bytes) -> list[str]:
    text = content.decode("utf-8-sig")
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def _assert_inert(cells) -> None:
    dangerous = [
        c for c in cells if isinstance(c, str) and c[:1] in ("=", "+", "-", "@", "\t", "\r")
    ]
    # A lone negative number is data, not a formula; anything else starting like one is not.
    dangerous = [c for c in dangerous if not c.lstrip("-").replace(".", "", 1).isdigit()]
    assert not dangerous, dangerous


def test_contact_exports_neutralise_formulas(admin_client_, formula_contacts):
    response = admin_client_.get("/crm/contacts/?export=csv")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    cells = _csv_cells(body)
    assert any("HYPERLINK" in c for c in cells), "the hostile values are exported (inert)"
    _assert_inert(cells)

    response = admin_client_.get("/crm/contacts/?export=xlsx")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.content)).active
    cells = [cell for row in sheet.iter_rows() for cell in row]
    assert not [c for c in cells if c.data_type == "f"], "a formula cell in the XLSX"
    # XLSX cells are typed: the hostile text is kept as it is, in a text cell marked with
    # Excel's quote prefix (what typing a leading ' does), so it never turns into a formula.
    risky = [c for c in cells if isinstance(c.value, str) and "HYPERLINK" in c.value]
    assert risky
    assert all(c.data_type == "s" and c.quotePrefix for c in risky)


def test_segment_member_export_neutralises_formulas_and_keeps_blank_cells(
    admin_client_, formula_contacts
):
    """Review finding: the segment members' CSV had a check of its own that missed a tab
    or CR before a formula, and wrote every blank text cell as a lone quote."""
    segment = Segment.objects.create(name="Hostile", kind=Segment.Kind.STATIC)
    segment_members_add(segment=segment, contact_ids=[c.pk for c in formula_contacts])
    response = admin_client_.get(f"/crm/segments/{segment.pk}/?format=csv")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == len(FORMULAS)
    cells = [v for row in rows for v in row.values()]
    assert any("HYPERLINK" in c for c in cells), "the hostile values are exported (inert)"
    _assert_inert(cells)
    assert "'" not in {row["country"] for row in rows}, "a blank cell exported as a quote"


def test_a_web_form_lead_is_stored_with_its_names_stripped():
    """The API's self-identifying activity creates the contact as forms and imports do:
    names stripped, so a tab or CR cannot lead a stored value."""
    activities_record(
        items=[
            {
                "email": "tabbed@example.com",
                "kind": "form_submitted",
                "occurred_at": timezone.now(),
                "first_name": '\t=HYPERLINK("https://evil.example")',
                "job_title": "\r\n  CTO  ",
            }
        ]
    )
    contact = Contact.objects.get(email="tabbed@example.com")
    assert (contact.first_name, contact.job_title) == ('=HYPERLINK("https://evil.example")', "CTO")


def test_report_exports_neutralise_formulas(admin_client_, formula_contacts):
    today = timezone.localdate()
    period = f"start={today - timedelta(days=30)}&end={today + timedelta(days=1)}"
    for url in (
        f"/reports/leads/?{period}&format=csv",
        f"/reports/funnel/?{period}&format=csv",
        f"/reports/drilldown/?{period}&metric=new_leads&format=csv",
        "/reports/review/export.csv",
    ):
        response = admin_client_.get(url)
        assert response.status_code in (200, 400, 404), url
        if response.status_code == 200:
            body = b"".join(response.streaming_content) if response.streaming else response.content
            _assert_inert(_csv_cells(body))


# --- Server-side template injection in email templates -------------------------------------------

REFUSED_SOURCES = [
    "{% load static %}{% static 'x' %}",
    "{% debug %}",
    "{% include 'base.html' %}",
    "{% extends 'base.html' %}",
    "{% ssi '/etc/passwd' %}",
    "{{ contact.__class__ }}",
    "{{ contact.__class__.__mro__ }}",
]
INERT_SOURCES = [
    "{{ settings.SECRET_KEY }}",
    "{{ request.user.password }}",
    "{{ contact.save }}",
    "{{ owner.user.password }}",
    "{% now 'Y' %}{{ contact.first_name }}",
]


@pytest.mark.parametrize("source", REFUSED_SOURCES)
def test_templates_that_reach_outside_are_refused_on_save(admin_api, source):
    response = admin_api.post(
        "/api/v1/email-templates/",
        {"name": "SSTI", "subject": source, "text_body": source, "html_body": source},
    )
    assert response.status_code == 400, response.content
    assert not EmailTemplate.objects.filter(name="SSTI").exists()


@pytest.mark.parametrize("source", INERT_SOURCES)
def test_templates_render_inert_when_they_try_to_reach_secrets(settings, source):
    context = rendering.merge_context(
        contact={"first_name": "Ann", "email": "ann@example.com"},
        owner={"name": "Olly"},
        unsubscribe_url="https://crm.example.com/u/x",
    )
    out = rendering.render_string(source, context)
    assert settings.SECRET_KEY not in out
    assert "pbkdf2" not in out
    assert "<" not in out, out
    assert "bound method" not in out


def test_a_template_saved_before_the_rules_is_still_refused_when_sent():
    template = EmailTemplateFactory(subject="{% debug %}")  # bypasses the form/API check
    with pytest.raises(rendering.TemplateRefused):
        rendering.render_email(
            template, rendering.merge_context(contact={}, owner={}, unsubscribe_url="")
        )


# --- Tracking: open redirect, guessable, tampered and expired tokens ------------------------------


@pytest.fixture
def sent():
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    send = EmailSend.objects.get(contact=contact)
    EmailSend.objects.filter(pk=send.pk).update(sent_at=timezone.now() - timedelta(minutes=5))
    return send


def _path(url: str) -> str:
    return url.replace("https://crm.example.com", "")


def test_a_click_token_redirects_only_to_its_own_link(client, sent):
    ok = client.get(_path(tokens.click_url(sent.message_id, 0)))
    assert ok.status_code == 302
    assert ok["Location"] == sent.links[0]
    # Another index, a link that is not in the email, or a target in the query: refused.
    for url in (
        tokens.click_url(sent.message_id, 1),
        tokens.click_url(sent.message_id, 99),
        tokens.click_url(sent.message_id, 0) + "?next=https://evil.example",
    ):
        response = client.get(_path(url))
        assert response.status_code in (302, 404)
        if response.status_code == 302:
            assert response["Location"] == sent.links[0]
    EmailSend.objects.filter(pk=sent.pk).update(links=["javascript:alert(1)"])
    assert client.get(_path(tokens.click_url(sent.message_id, 0))).status_code == 404


def test_tampered_tokens_are_refused_and_record_nothing(client, sent):
    before = Activity.objects.count()
    good = tokens.click_url(sent.message_id, 0)
    token = good.rsplit("/", 1)[1]
    value, _, signature = token.partition(":")
    forged = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # one character of the signature
        token.replace(sent.message_id, sent.message_id[:-1] + "0", 1),  # another message
        f"{value}:{'x' * len(signature)}",
        signing.TimestampSigner(key="not-our-key", salt=tokens.CLICK).sign(f"{sent.message_id}~0"),
        "1",
        "../../admin",
    ]
    for bad in forged:
        assert client.get(f"/t/c/{bad}").status_code == 404, bad
        assert client.get(f"/t/o/{bad}.gif").status_code == 404, bad
        assert client.post(f"/u/{bad}").status_code == 404, bad
    # A token is bound to its purpose: an open token neither clicks nor unsubscribes.
    open_token = tokens.make(tokens.OPEN, {"m": sent.message_id})
    assert client.get(f"/t/c/{open_token}").status_code == 404
    assert client.post(f"/u/{open_token}").status_code == 404
    assert Activity.objects.count() == before
    sent.contact.refresh_from_db()
    assert not sent.contact.is_suppressed


def test_tracking_tokens_are_not_guessable(sent):
    other = ContactFactory()
    contacts_enroll(program=sent.program, contact_ids=[other.pk], source="manual")
    enrollments_advance()
    second = EmailSend.objects.get(contact=other)
    for message_id in (sent.message_id, second.message_id):
        local = message_id.split("@")[0]
        assert len(local) >= 32, message_id
        assert not local.isdigit()
        assert str(sent.contact_id) != local
    # Compare the random local parts (the host after "@" is the same by design).
    first_local, second_local = sent.message_id.split("@")[0], second.message_id.split("@")[0]
    shared = sum(a == b for a, b in zip(first_local, second_local, strict=False))
    assert shared < len(first_local) // 2, "message ids look sequential"
    token = tokens.unsubscribe_url(sent.message_id).rsplit("/", 1)[1]
    assert str(sent.contact.email) not in token


class _OldSigner(signing.TimestampSigner):
    def __init__(self, *, days: int, **kwargs):
        super().__init__(**kwargs)
        self.days = days

    def timestamp(self):
        return signing.b62_encode(int(time.time()) - self.days * 86400)


def test_expired_tokens_are_refused(client, sent, settings):
    settings.TRACKING_TOKEN_MAX_AGE_DAYS = 30
    old = _OldSigner(days=31, salt=tokens.CLICK).sign(f"{sent.message_id}~0")
    recent = _OldSigner(days=29, salt=tokens.CLICK).sign(f"{sent.message_id}~0")
    assert client.get(f"/t/c/{old}").status_code == 404
    assert client.get(f"/t/c/{recent}").status_code == 302
    old_unsub = _OldSigner(days=31, salt=tokens.UNSUBSCRIBE).sign(sent.message_id)
    assert client.post(f"/u/{old_unsub}").status_code == 404


# --- Mail-provider webhooks: forged and replayed ---------------------------------------------

POSTMARK_SECRET = "hook:s3cret-value"


def _postmark_event(send, record_type="Open") -> dict:
    return {
        "RecordType": record_type,
        "MessageID": send.esp_message_id or "pm-1",
        "Recipient": send.contact.email,
        "ReceivedAt": timezone.now().isoformat(),
        "FirstOpen": True,
        "Platform": "Desktop",
        "UserAgent": "Mozilla/5.0 (Windows NT 10.0) Thunderbird/115",
    }


def _basic(secret: str) -> dict:
    import base64

    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()}


def test_forged_webhooks_are_refused(client, sent, settings):
    EmailSend.objects.filter(pk=sent.pk).update(esp_message_id="pm-1")
    sent.refresh_from_db()
    body = json.dumps(_postmark_event(sent))
    url = "/webhooks/postmark/tracking/"
    settings.ANYMAIL = {"WEBHOOK_SECRET": POSTMARK_SECRET}
    before = Activity.objects.count()
    assert client.post(url, body, "application/json").status_code == 400
    assert client.post(url, body, "application/json", **_basic("hook:guess")).status_code == 400
    # Without a configured secret the endpoint cannot tell a forgery: it refuses everything.
    settings.ANYMAIL = {}
    assert client.post(url, body, "application/json").status_code == 404
    # Mailgun signs with HMAC: a wrong signature is refused whatever the basic auth.
    settings.ANYMAIL = {"WEBHOOK_SECRET": POSTMARK_SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": "k"}
    mailgun = {
        "signature": {"timestamp": str(int(time.time())), "token": "t" * 50, "signature": "0" * 64},
        "event-data": {"event": "opened", "recipient": sent.contact.email},
    }
    response = client.post(
        "/webhooks/mailgun/tracking/",
        json.dumps(mailgun),
        "application/json",
        **_basic(POSTMARK_SECRET),
    )
    assert response.status_code == 400
    assert Activity.objects.count() == before


def test_replayed_webhooks_record_the_event_once(client, sent, settings):
    EmailSend.objects.filter(pk=sent.pk).update(esp_message_id="pm-1")
    sent.refresh_from_db()
    settings.ANYMAIL = {"WEBHOOK_SECRET": POSTMARK_SECRET}
    body = json.dumps(_postmark_event(sent, "Open"))
    for _ in range(3):
        response = client.post(
            "/webhooks/postmark/tracking/", body, "application/json", **_basic(POSTMARK_SECRET)
        )
        assert response.status_code == 200
    assert Activity.objects.filter(kind="email_opened", message_id=sent.message_id).count() == 1


# --- User enumeration through log-in messages and timing -------------------------------------


def _login(client, username, password, addr):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=addr
    )


def test_log_in_says_the_same_for_an_unknown_user_and_a_wrong_password(client):
    from tests.factories import UserFactory

    UserFactory(username="known-user")
    unknown = _login(client, "no-such-user", "whatever-123", "10.0.0.1")
    wrong = _login(client, "known-user", "wrong-password-1", "10.0.0.2")
    assert unknown.status_code == wrong.status_code == 200
    errors = [r.context["form"].non_field_errors() for r in (unknown, wrong)]
    assert errors[0] == errors[1]
    assert b"no-such-user" not in unknown.content.replace(b'value="no-such-user"', b"")


def test_log_in_takes_comparable_time_for_an_unknown_user_and_a_wrong_password(client, settings):
    from django.contrib.auth import get_user_model

    # The real default hasher (tests elsewhere may use a fast one): the point is that
    # Django's ModelBackend runs it for unknown users too.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    user = get_user_model().objects.create(username="timed-user")
    user.set_password("Right-pass-123")
    user.save()

    def timed(username: str, i: int) -> float:
        start = time.perf_counter()
        _login(client, username, f"wrong-pass-{i}", f"10.1.{i}.{len(username)}")
        return time.perf_counter() - start

    _login(client, "warm-up", "x", "10.9.9.9")  # first request imports and compiles
    unknown = statistics.median(timed("nobody-at-all", i) for i in range(2))
    known = statistics.median(timed("timed-user", i) for i in range(2))
    ratio = max(unknown, known) / min(unknown, known)
    assert ratio < 3, f"unknown {unknown:.3f}s vs wrong password {known:.3f}s"


# --- CSRF on every state-changing HTML form --------------------------------------------------

# Views that accept POST without a CSRF token on purpose, with the reason.
CSRF_EXEMPT = {
    "nurture_public:unsubscribe": "RFC 8058 one-click unsubscribe is posted by the mail client",
    "nurture_public:webhook-postmark": "server-to-server; basic auth",
    "nurture_public:webhook-mailgun": "server-to-server; HMAC signature",
    "nurture_public:webhook-ses": "server-to-server; basic auth",
}


def test_every_html_form_refuses_a_post_without_the_csrf_token(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    objects = _owned_objects(admin_user)
    checked, problems = 0, []
    for name, row in ACCESS_TABLE.items():
        if name.startswith("api:") or name.startswith("api-") or row.write is None:
            continue
        url = _url(name, row, objects)
        view = resolve(url).func
        if _write_method(view) != "post":
            continue
        exempt = getattr(view, "csrf_exempt", False)
        if name in CSRF_EXEMPT:
            assert exempt, f"{name} is listed as exempt but checks CSRF: update CSRF_EXEMPT"
            continue
        if exempt:
            problems.append(f"{name}: csrf_exempt but not in CSRF_EXEMPT")
            continue
        response = client.post(url, {"name": "x"})
        checked += 1
        if response.status_code != 403:
            problems.append(f"POST {url} [{name}] without a token: {response.status_code}")
    assert not problems, "\n".join(problems)
    assert checked > 40
    # And the log-in form itself (anonymous): a login-CSRF would sign a victim in as us.
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post("/accounts/login/", {"username": "a", "password": "b"}).status_code == 403


def test_the_api_refuses_a_session_post_without_the_csrf_token(admin_user):
    from rest_framework.test import APIClient

    api = APIClient(enforce_csrf_checks=True)
    api.login(username=admin_user.username, password="pw-Secret-123")
    response = api.post("/api/v1/contacts/", {"email": "csrf@example.com"}, format="json")
    assert response.status_code == 403
    assert not Contact.objects.filter(email="csrf@example.com").exists()


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/activities/",
        "/api/v1/segments/",
        "/api/v1/deals/",
        "/api/v1/scoring/rules/",
        "/api/v1/programs/",
        "/api/v1/email-templates/",
        "/api/v1/scoring/backtest/",
    ],
)
def test_an_oversized_body_is_refused_with_413_on_every_api_endpoint(admin_api, settings, url):
    """Every endpoint, not only the ingestion ones: DRF's parsers read the stream
    themselves, past Django's own check (crm.middleware.ApiBodyLimitMiddleware)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "x" * 2000})
    r = admin_api.post(url, data=body, content_type="application/json")
    assert r.status_code == 413
    assert r.json()["detail"].startswith(f"The body is {len(body)} bytes; the limit is 1000.")
    small = admin_api.post(url, data=json.dumps({}), content_type="application/json")
    assert small.status_code != 413


def test_the_body_limit_holds_under_a_script_prefix(admin_api, settings):
    """Mounted under a prefix (SCRIPT_NAME), the API's paths still start with /api/."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = admin_api.post(
        "/api/v1/segments/",
        data=json.dumps({"name": "x" * 2000}),
        content_type="application/json",
        SCRIPT_NAME="/crm",
    )
    assert r.status_code == 413
