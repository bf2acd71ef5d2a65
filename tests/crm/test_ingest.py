from datetime import timedelta

import pytest
from django.utils import timezone

from crm import ingest, lifecycle
from crm.ingest import activities_record
from crm.models import Activity, Contact, EmailStatus, Reopening, Stage
from crm.services import contact_create

pytestmark = pytest.mark.django_db


def _now_iso(delta=timedelta(0)):
    return (timezone.now() - delta).isoformat()


def test_it_stores_a_batch_and_drops_duplicates_by_external_id():
    contact = contact_create(email="a@example.com")
    items = [
        {
            "contact": contact.pk,
            "kind": "page_visit",
            "occurred_at": _now_iso(),
            "external_id": "e1",
        },
        {
            "contact": contact.pk,
            "kind": "page_visit",
            "occurred_at": _now_iso(),
            "external_id": "e1",
        },
        {
            "contact": contact.pk,
            "kind": "email_opened",
            "occurred_at": _now_iso(),
            "external_id": "e2",
        },
    ]
    result = ingest.activities_record(items=items)
    assert (result.created, result.duplicates) == (2, 1)
    again = ingest.activities_record(items=items)
    assert (again.created, again.duplicates) == (0, 3)
    assert Activity.objects.count() == 2


def test_an_invalid_item_rejects_the_whole_batch_with_every_error():
    contact = contact_create(email="a@example.com")
    items = [
        {"contact": contact.pk, "kind": "page_visit", "occurred_at": _now_iso()},
        {"contact": contact.pk, "kind": "teleported", "occurred_at": "2026-01-01T10:00:00"},
        {"contact": "abc", "kind": "page_visit", "occurred_at": _now_iso()},
    ]
    with pytest.raises(ingest.IngestError) as err:
        ingest.activities_record(items=items)
    assert set(err.value.errors) == {1, 2}
    assert "kind" in err.value.errors[1]
    assert "occurred_at" in err.value.errors[1]
    assert Activity.objects.count() == 0


def test_a_form_submission_with_a_new_email_creates_the_contact():
    result = ingest.activities_record(
        items=[
            {
                "email": "New@Example.com",
                "kind": "form_submitted",
                "occurred_at": _now_iso(),
                "first_name": "Nia",
            }
        ],
        source="web_form",
    )
    contact = Contact.objects.get(email="new@example.com")
    assert (result.contacts_created, contact.first_name, contact.source) == (1, "Nia", "web_form")
    assert contact.transitions.get().to_stage == Stage.LEAD


def test_an_email_event_for_an_unknown_address_is_an_error():
    with pytest.raises(ingest.IngestError) as err:
        ingest.activities_record(
            items=[
                {"email": "ghost@example.com", "kind": "email_opened", "occurred_at": _now_iso()}
            ]
        )
    assert "email" in err.value.errors[0]


def test_an_unsubscribe_suppresses_the_contact():
    contact = contact_create(email="a@example.com")
    ingest.activities_record(
        items=[{"contact": contact.pk, "kind": "email_unsubscribed", "occurred_at": _now_iso()}]
    )
    contact.refresh_from_db()
    assert contact.email_status == EmailStatus.UNSUBSCRIBED
    assert contact.is_suppressed


def test_a_hard_bounce_suppresses_but_a_soft_one_does_not():
    hard = contact_create(email="h@example.com")
    soft = contact_create(email="s@example.com")
    ingest.activities_record(
        items=[
            {
                "contact": hard.pk,
                "kind": "email_bounced",
                "occurred_at": _now_iso(),
                "details": {"bounce_type": "hard"},
            },
            {
                "contact": soft.pk,
                "kind": "email_bounced",
                "occurred_at": _now_iso(),
                "details": {"bounce_type": "soft"},
            },
        ]
    )
    hard.refresh_from_db()
    soft.refresh_from_db()
    assert (hard.email_status, soft.email_status) == (EmailStatus.HARD_BOUNCED, EmailStatus.ACTIVE)


def test_a_recycled_contact_that_engages_is_reopened_once_per_round():
    contact = contact_create(email="a@example.com", created_at=timezone.now() - timedelta(days=10))
    lifecycle.stage_change(
        contact=contact, to_stage=Stage.MQL, at=timezone.now() - timedelta(days=5)
    )
    lifecycle.stage_change(
        contact=contact, to_stage=Stage.RECYCLED, at=timezone.now() - timedelta(days=4)
    )
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "email_sent",
                "occurred_at": _now_iso(timedelta(days=3)),
            },
            {
                "contact": contact.pk,
                "kind": "email_clicked",
                "occurred_at": _now_iso(timedelta(days=2)),
            },
        ]
    )
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "page_visit",
                "occurred_at": _now_iso(timedelta(days=1)),
            },
        ]
    )
    (reopening,) = Reopening.objects.filter(contact=contact)
    assert reopening.recycle_round == 1
    assert reopening.activity.kind == "email_clicked"


def test_a_batch_over_the_limit_is_refused(settings):
    settings.ACTIVITY_BATCH_LIMIT = 2
    with pytest.raises(ingest.BatchTooLarge):
        ingest.activities_record(items=[{}] * 3)


_SEEN: list = []


def _record(event) -> None:
    _SEEN.append(event)


def test_handlers_get_the_stored_activities_with_their_ids_and_fields(settings):
    settings.ACTIVITIES_RECORDED_HANDLERS = ["tests.crm.test_ingest._record"]
    _SEEN.clear()
    contact = contact_create(email="a@example.com")
    at = timezone.now() - timedelta(hours=1)
    items = [
        {
            "contact": contact.pk,
            "kind": "page_visit",
            "occurred_at": at.isoformat(),
            "external_id": f"h{n}",
            "url": "https://example.com/pricing",
            "details": {"n": n},
        }
        for n in range(3)
    ] + [{"contact": contact.pk, "kind": "email_opened", "occurred_at": at, "is_machine": True}]
    ingest.activities_record(items=items)
    ingest.activities_record(items=items[:1])  # a replay reaches no handler
    (event,) = _SEEN
    stored = {a.pk: a for a in Activity.objects.all()}
    assert [a.pk for a in event.activities] == sorted(stored)
    for a in event.activities:
        row = stored[a.pk]
        for name in ("contact_id", "kind", "occurred_at", "campaign_id", "url", "details"):
            assert getattr(a, name) == getattr(row, name), name
        assert (a.is_machine, a.message_id, a.external_id) == (
            row.is_machine,
            row.message_id,
            row.external_id,
        )
        assert a.contact == contact  # usable like any loaded instance
    assert event.created_contact_ids == frozenset()


def test_details_are_stored_as_given_flat_nested_or_empty():
    contact = contact_create(email="a@example.com")
    shapes = [{}, {"form": "demo"}, {"form": "demo"}, {"utm": {"source": "x"}, "tags": [1, 2]}]
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "form_submitted",
                "occurred_at": _now_iso(),
                "external_id": f"d{n}",
                "details": details,
            }
            for n, details in enumerate(shapes)
        ]
    )
    stored = dict(Activity.objects.values_list("external_id", "details"))
    assert stored == {f"d{n}": details for n, details in enumerate(shapes)}


@pytest.mark.parametrize(
    "click",
    [
        {"url": "https://CRM.example.com/u/token"},  # the unsubscribe link (host in capitals)
        {"url": "https://x.example/offer", "is_machine": True},  # a link scanner
    ],
    ids=["unsubscribe-link", "machine"],
)
def test_a_click_that_is_not_a_click_does_not_reopen_a_recycled_contact(settings, click):
    """METRICS.md "unique clicks": neither the unsubscribe link's click nor a machine's is a
    click, so neither is the engagement that re-opens a recycled lead."""
    settings.SITE_URL = "https://crm.example.com"
    contact = contact_create(email="a@example.com", created_at=timezone.now() - timedelta(days=10))
    lifecycle.stage_change(
        contact=contact, to_stage=Stage.MQL, at=timezone.now() - timedelta(days=5)
    )
    lifecycle.stage_change(
        contact=contact, to_stage=Stage.RECYCLED, at=timezone.now() - timedelta(days=4)
    )
    item = {"contact": contact.pk, "kind": "email_clicked", **click}
    ingest.activities_record(items=[{**item, "occurred_at": _now_iso(timedelta(days=2))}])
    assert not Reopening.objects.filter(contact=contact).exists()
    human = {"contact": contact.pk, "kind": "email_clicked", "url": "https://x.example/offer"}
    ingest.activities_record(items=[{**human, "occurred_at": _now_iso(timedelta(days=1))}])
    (reopening,) = Reopening.objects.filter(contact=contact)
    assert reopening.activity.url == "https://x.example/offer"


def test_a_program_only_unsubscribe_does_not_suppress_the_address():
    """``email_unsubscribed`` with details scope "program" (crm.models.activities): the
    contact left one nurture program and stays subscribed; any other scope suppresses."""
    left, gone, odd = (contact_create(email=f"{n}@example.com") for n in ("l", "g", "o"))
    ingest.activities_record(
        items=[
            {
                "contact": left.pk,
                "kind": "email_unsubscribed",
                "occurred_at": _now_iso(),
                "details": {"scope": "program"},
            },
            {"contact": gone.pk, "kind": "email_unsubscribed", "occurred_at": _now_iso()},
            {
                "contact": odd.pk,
                "kind": "email_unsubscribed",
                "occurred_at": _now_iso(),
                "details": {"scope": "Program"},
            },
        ]
    )
    statuses = dict(Contact.objects.values_list("email", "email_status"))
    assert statuses == {
        "l@example.com": EmailStatus.ACTIVE,
        "g@example.com": EmailStatus.UNSUBSCRIBED,
        "o@example.com": EmailStatus.UNSUBSCRIBED,
    }


def test_new_contact_created_at_is_its_earliest_activity_and_keeps_its_name():
    activities_record(
        items=[
            {
                "email": "n@example.com",
                "kind": "page_visit",
                "occurred_at": timezone.now() - timedelta(days=1),
            },
            {
                "email": "n@example.com",
                "kind": "form_submitted",
                "occurred_at": timezone.now() - timedelta(days=20),
                "first_name": "Nia",
            },
        ]
    )
    c = Contact.objects.get(email="n@example.com")
    earliest = Activity.objects.filter(contact=c).order_by("occurred_at").first().occurred_at
    assert (c.created_at, c.first_name) == (earliest, "Nia")
