"""Personal data: export everything about a contact, erase it, and prove nothing is left.

The erased person is given distinctive names and an address that are copied, the way real
data flows copy them, into activities (URL, details), the lifecycle note, a deal name,
nurture sends (subject, links), notifications and the admin log. After erasure every text
and JSON column of every table is searched for them; report totals must not move.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Count, Sum
from django.utils import timezone

from crm import privacy, services
from crm.ingest import activities_record
from crm.lifecycle import stage_change
from crm.models import (
    Activity,
    ActivityKind,
    Contact,
    Deal,
    LifecycleTransition,
    Notification,
    Segment,
    SegmentMembership,
    Stage,
)
from crm.sales import deal_lose
from crm.segments.services import segment_members_add
from nurture.models import EmailSend, Enrollment
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from scoring.models import LedgerEntry
from tests.crm.segments_factories import SegmentFactory
from tests.factories import CampaignFactory, CompanyFactory, ContactFactory, DealFactory
from tests.nurture.factories import EmailTemplateFactory, ProgramFactory, StepFactory
from tests.scoring.factories import EngagementRuleFactory

pytestmark = pytest.mark.django_db

EMAIL = "zelphira.quonset@privacy-probe.example"
FIRST, LAST, PHONE = "Zelphira", "Quonsetmaddox", "+44 7700 900123"
NEEDLES = [EMAIL, FIRST, LAST, PHONE, "privacy-probe"]


@pytest.fixture(autouse=True)
def _mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://crm.example.com"


@pytest.fixture
def person(admin_user, sales_user):
    """A contact whose personal data has spread through every app."""
    campaign = CampaignFactory(name="Spring webinar")
    contact = services.contact_create(
        email=EMAIL,
        first_name=FIRST,
        last_name=LAST,
        phone=PHONE,
        job_title="VP Privacy",
        company=CompanyFactory(name="Probe Ltd"),
        attributes={"nickname": FIRST, "personal_email": EMAIL},
        consent_source=f"web form signed by {FIRST} {LAST}",
        acquired_by=campaign,
        by_user=admin_user,
    )
    EngagementRuleFactory(points=10)
    now = timezone.now()
    activities_record(
        items=[
            {
                "kind": ActivityKind.PAGE_VISIT,
                "occurred_at": now - timedelta(hours=3),
                "contact": contact.pk,
                "campaign": campaign.pk,
                "url": f"https://example.com/pricing?email={EMAIL}",
                "details": {"form": "pricing", "name": f"{FIRST} {LAST}", "email": EMAIL},
            },
            {
                "kind": ActivityKind.FORM_SUBMITTED,
                "occurred_at": now - timedelta(hours=2),
                "contact": contact.pk,
                "campaign": campaign.pk,
                "details": {"phone": PHONE},
            },
        ]
    )
    contact.refresh_from_db()
    if contact.stage == Stage.LEAD:
        stage_change(
            contact=contact, to_stage=Stage.MQL, by_user=admin_user, note=f"Called {FIRST}"
        )
    DealFactory(contact=contact, name=f"{FIRST} {LAST} deal", amount=5000, owner=sales_user)
    lost = DealFactory(contact=contact, name=f"{FIRST} renewal", amount=900, owner=sales_user)
    deal_lose(deal=lost, by=sales_user, reason=f"{FIRST} {LAST} signed with a competitor")
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(Deal),
        object_id=str(lost.pk),
        object_repr=str(lost),
        action_flag=CHANGE,
        change_message="Changed name",
    )
    segment = SegmentFactory(name="VIPs", kind=Segment.Kind.STATIC)
    segment_members_add(segment=segment, contact_ids=[contact.pk])
    program = ProgramFactory(campaign=campaign)
    StepFactory(
        program=program,
        position=1,
        template=EmailTemplateFactory(
            subject="Hello {{ contact.first_name }} {{ contact.last_name }}",
            html_body=(
                "<p>Hi {{ contact.first_name }}</p>"
                '<a href="https://example.com/p?who={{ contact.last_name }}">Guide</a>'
            ),
        ),
    )
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    Notification.objects.create(
        user=sales_user, text=f"New MQL: {FIRST} {LAST}", url=contact.get_absolute_url()
    )
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=str(contact.pk),
        object_repr=str(contact),
        action_flag=CHANGE,
        change_message=f"Changed email to {EMAIL}",
    )
    bystander = ContactFactory(email="someone.else@example.com", first_name="Other")
    activities_record(items=[{"kind": "page_visit", "occurred_at": now, "contact": bystander.pk}])
    contact.refresh_from_db()
    return contact


def _hits(needle: str) -> list[str]:
    """Every (table.column) of every model whose text or JSON holds ``needle``."""
    found = []
    for model in apps.get_models():
        meta = model._meta
        if meta.proxy or not meta.managed:
            continue
        for f in meta.concrete_fields:
            if not isinstance(f, models.CharField | models.TextField | models.JSONField):
                continue
            if model.objects.filter(**{f"{f.name}__icontains": needle}).exists():
                found.append(f"{meta.db_table}.{f.column}")
    return found


def _totals() -> dict:
    return {
        "contacts_by_stage": dict(
            Contact.objects.values_list("stage").annotate(n=Count("id")).order_by()
        ),
        "activities_by_kind": dict(
            Activity.objects.values_list("kind").annotate(n=Count("id")).order_by()
        ),
        "activities_by_campaign": dict(
            Activity.objects.values_list("campaign").annotate(n=Count("id")).order_by()
        ),
        "transitions_by_stage": dict(
            LifecycleTransition.objects.values_list("to_stage").annotate(n=Count("id")).order_by()
        ),
        "deal_amounts": Deal.objects.aggregate(total=Sum("amount"))["total"],
        "ledger_points": LedgerEntry.objects.aggregate(total=Sum("points"))["total"],
        "sends_by_status": dict(
            EmailSend.objects.values_list("status").annotate(n=Count("id")).order_by()
        ),
        "enrollments": Enrollment.objects.count(),
        "memberships": SegmentMembership.objects.count(),
        "scores": list(Contact.objects.order_by("pk").values_list("pk", "scorecard__score")),
        "acquired_by": list(Contact.objects.order_by("pk").values_list("pk", "acquired_by")),
    }


def _report(api, name: str) -> dict:
    today = timezone.localdate()
    start, end = today - timedelta(days=30), today + timedelta(days=1)
    response = api.get(f"/api/v1/reports/{name}/?start={start}&end={end}")
    assert response.status_code == 200, response.content
    body = response.json()
    # Erasure keeps the page of a visit but drops its query string (where the address was).
    for row in body.get("landing_pages", []):
        row["url"] = row["url"].split("?")[0]
    return body


def test_the_fixture_really_spreads_the_personal_data(person):
    # Guards the erasure test below: each place it scrubs does hold the data first.
    hits = _hits(EMAIL) + _hits(FIRST)
    for table in ("crm_activity", "crm_notification", "nurture_emailsend", "crm_deal"):
        assert any(h.startswith(table + ".") for h in hits), (table, hits)
    assert LedgerEntry.objects.filter(contact=person).exists()
    assert EmailSend.objects.filter(contact=person, status="sent").exists()


def test_the_export_holds_everything_about_the_contact(person):
    data = privacy.contact_data_export(contact=person)
    json.dumps(data)  # JSON-ready as it stands
    assert data["contact"]["email"] == EMAIL
    assert data["contact"]["attributes"]["nickname"] == FIRST
    assert data["company"]["name"] == "Probe Ltd"
    kinds = {a["kind"] for a in data["activities"]}
    assert {"page_visit", "form_submitted", "email_sent"} <= kinds
    assert [h["to_stage"] for h in data["history"]][0] == "lead"
    assert data["deals"][0]["name"] == f"{FIRST} {LAST} deal"
    assert data["segments"][0]["segment__name"] == "VIPs"
    assert data["nurture"]["enrollments"][0]["state"] in {"active", "waiting", "completed"}
    assert data["nurture"]["sends"][0]["subject"] == f"Hello {FIRST} {LAST}"
    assert data["scoring"]["ledger"], "scoring contributes the ledger"
    assert "someone.else@example.com" not in json.dumps(data)


def test_erasure_leaves_no_trace_in_any_table_and_keeps_report_totals(
    person, admin_user, admin_api
):
    before = _totals()
    reports_before = {name: _report(admin_api, name) for name in ("funnel", "email", "leads")}

    erased = privacy.contact_erase(contact=person, by=admin_user)

    for needle in NEEDLES:
        assert _hits(needle) == [], f"{needle!r} still stored after erasure"
    assert _totals() == before
    for name, body in reports_before.items():
        assert _report(admin_api, name) == body, f"report {name} changed"
    assert erased.email == f"erased-{person.pk}@erased.invalid"
    assert erased.erased_at is not None
    assert erased.is_suppressed
    assert erased.stage == person.stage
    assert erased.created_at == person.created_at
    assert erased.acquired_by_id == person.acquired_by_id
    assert Contact.objects.filter(email="someone.else@example.com", first_name="Other").exists()
    kept = Activity.objects.filter(contact=person, kind="email_sent").get()
    assert kept.message_id
    assert kept.campaign_id == person.acquired_by_id


def test_an_erased_contact_is_never_emailed_again(person, admin_user):
    from django.core import mail

    privacy.contact_erase(contact=person, by=admin_user)
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    contacts_enroll(program=program, contact_ids=[person.pk], source="manual")
    mail.outbox.clear()
    enrollments_advance()
    assert mail.outbox == []
    assert not Contact.objects.sendable().filter(pk=person.pk).exists()


def test_admin_exports_and_erases_from_the_contact_page(person, admin_client_):
    page = admin_client_.get(person.get_absolute_url())
    assert b"Export personal data (JSON)" in page.content
    assert b"Erase personal data" in page.content
    assert b"data-confirm=" in page.content

    download = admin_client_.get(f"/crm/contacts/{person.pk}/personal-data/")
    assert download.status_code == 200
    assert download["Content-Type"].startswith("application/json")
    assert "attachment" in download["Content-Disposition"]
    assert json.loads(download.content)["contact"]["email"] == EMAIL

    response = admin_client_.post(f"/crm/contacts/{person.pk}/erase/")
    assert response.status_code == 302
    person.refresh_from_db()
    assert person.erased_at is not None
    again = admin_client_.get(person.get_absolute_url())
    assert b"personal data erased" in again.content
    assert FIRST.encode() not in again.content


@pytest.mark.parametrize("role", ["marketing", "sales"])
def test_only_admins_see_or_use_the_personal_data_actions(person, client, role):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username=f"priv-{role}", role=role))
    assert b"Erase personal data" not in client.get(person.get_absolute_url()).content
    assert client.get(f"/crm/contacts/{person.pk}/personal-data/").status_code == 403
    assert client.post(f"/crm/contacts/{person.pk}/erase/").status_code == 403
    person.refresh_from_db()
    assert person.erased_at is None


def test_the_api_exports_and_erases_for_admins_only(person, admin_api, marketing_api, sales_api):
    url = f"/api/v1/contacts/{person.pk}/"
    for api in (marketing_api, sales_api):
        assert api.get(url + "personal-data/").status_code == 403
        assert api.post(url + "erase/").status_code == 403
    exported = admin_api.get(url + "personal-data/")
    assert exported.status_code == 200
    assert exported.json()["contact"]["email"] == EMAIL
    erased = admin_api.post(url + "erase/")
    assert erased.status_code == 200
    assert erased.json()["email"] == f"erased-{person.pk}@erased.invalid"
    again = admin_api.post(url + "erase/")  # idempotent
    assert again.status_code == 200
    assert admin_api.get("/api/v1/contacts/999999/personal-data/").status_code == 404


@pytest.mark.django_db(transaction=True)  # the mail files are cleared once the erasure commits
def test_erasure_removes_the_persons_emails_from_the_file_backend(
    settings, tmp_path, marketing_client
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    erased = ContactFactory(email=EMAIL, first_name=FIRST, consent_basis="consent")
    other = ContactFactory(email="someone.else@example.com", consent_basis="consent")
    contacts_enroll(program=program, contact_ids=[erased.pk, other.pk], source="manual")
    assert enrollments_advance().sent == 2
    assert "privacy-probe" in marketing_client.get("/nurture/outbox/").content.decode()

    privacy.contact_erase(contact=erased)

    page = marketing_client.get("/nurture/outbox/").content.decode()
    stored = "".join(p.read_text(errors="replace") for p in tmp_path.iterdir())
    assert "privacy-probe" not in page
    assert "privacy-probe" not in stored
    assert "someone.else@example.com" in page
    assert "someone.else@example.com" in stored
