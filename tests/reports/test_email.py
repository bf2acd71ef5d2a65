"""Email report: hand-computed figures, rollup vs raw, zero denominators, boundaries."""

from datetime import date

import pytest

from crm.models import ActivityKind as K
from reports.metrics.email import email_by_campaign
from reports.query import ReportQuery
from reports.rollups import rollups_rebuild
from tests.factories import CampaignFactory, ContactFactory

from .factories import act, at

pytestmark = pytest.mark.django_db
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))


@pytest.fixture
def dataset():
    a = CampaignFactory(name="A", goal_action=K.DEMO_REQUESTED)
    b = CampaignFactory(name="B")
    c1, c2, c3 = (ContactFactory(created_at=at("2025-01-01")) for _ in range(3))
    act(c2, K.EMAIL_SENT, "2025-03-01 00:00", a, "m5")  # exactly at the start: in
    for c, m in ((c1, "m1"), (c2, "m2"), (c3, "m3")):
        act(c, K.EMAIL_SENT, "2025-03-02 09:00", a, m)
    act(c1, K.EMAIL_OPENED, "2025-03-03 09:00", a, "m1")
    act(c1, K.EMAIL_OPENED, "2025-03-03 09:05", a, "m1")  # a second open: still one
    act(c1, K.EMAIL_CLICKED, "2025-03-03 10:00", a, "m1")
    act(c1, K.DEMO_REQUESTED, "2025-03-05 10:00")  # goal within 7 days: a conversion
    act(c2, K.EMAIL_OPENED, "2025-03-03 09:00", a, "m2", is_machine=True)
    act(c2, K.EMAIL_UNSUBSCRIBED, "2025-03-04 09:00", a, "m2")
    act(c3, K.EMAIL_BOUNCED, "2025-03-02 09:01", a, "m3", details={"bounce_type": "hard"})
    act(c1, K.EMAIL_SENT, "2025-04-01 00:00", a, "m4")  # exactly at the end: out
    act(c3, K.EMAIL_COMPLAINED, "2025-03-10 09:00", b, "m6")  # B: nothing sent
    return a, b


A_EXPECTED = {
    "sent": 4,
    "bounced": 1,
    "hard_bounced": 1,
    "delivered": 3,
    "unique_opens": 1,
    "machine_opens": 1,
    "unique_clicks": 1,
    "unsubscribed": 1,
    "complaints": 0,
    "conversions": 1,
    "bounce_rate": 0.25,
    "hard_bounce_rate": 0.25,
    "open_rate": 1 / 3,
    "click_through_rate": 1 / 3,
    "click_to_open_rate": 1.0,
    "unsubscribe_rate": 1 / 3,
    "complaint_rate": 0.0,
    "conversion_rate": 1 / 3,
    "unsubscribe_flag": True,
}


def _check(rows, a, b):
    by = {r["campaign"]: r for r in rows}
    assert by["A"]["campaign_id"] == a.id
    for key, value in A_EXPECTED.items():
        assert by["A"][key] == pytest.approx(value), key
    assert by["B"]["complaints"] == 1
    assert by["B"]["delivered"] == 0
    for rate in ("open_rate", "click_through_rate", "complaint_rate", "bounce_rate"):
        assert by["B"][rate] is None


def test_it_counts_email_figures_from_the_rollup(dataset):
    a, b = dataset
    rollups_rebuild(start_day=date(2025, 2, 1), end_day=date(2025, 5, 1))
    rows, totals = email_by_campaign(MARCH)
    _check(rows, a, b)
    assert totals["sent"] == 4
    assert totals["complaints"] == 1
    assert totals["complaint_rate"] == pytest.approx(1 / 3)


def test_it_counts_the_same_from_raw_activities(dataset, django_user_model):
    a, b = dataset
    from crm.models import Activity, Segment, SegmentMembership
    from reports.metrics.email import email_counts_raw

    seg = Segment.objects.create(name="all")
    SegmentMembership.objects.bulk_create(
        SegmentMembership(segment=seg, contact_id=cid, joined_at=at("2025-01-01"))
        for cid in set(Activity.objects.values_list("contact_id", flat=True))
    )
    q = ReportQuery(start=MARCH.start, end=MARCH.end, segment=seg.id)  # segment → raw path
    rows, _ = email_by_campaign(q)
    _check(rows, a, b)
    assert email_counts_raw(MARCH)[a.id]["sent"] == 4


def test_it_keeps_the_rollup_current_through_ingestion():
    from crm.ingest import activities_record

    a = CampaignFactory(name="A")
    c = ContactFactory(created_at=at("2025-01-01"))
    base = {"contact": c.id, "campaign": a.id, "message_id": "x1"}
    activities_record(
        items=[{**base, "kind": "email_sent", "occurred_at": "2025-03-02T09:00:00Z"}],
        source="test",
    )
    activities_record(
        items=[
            {**base, "kind": "email_opened", "occurred_at": "2025-03-05T09:00:00Z"},
            {**base, "kind": "email_opened", "occurred_at": "2025-03-04T09:00:00Z"},
        ],
        source="test",
    )
    rows, _ = email_by_campaign(MARCH)
    assert rows[0]["sent"] == 1
    assert rows[0]["unique_opens"] == 1


def test_an_empty_period_has_no_rows_and_null_rates():
    rows, totals = email_by_campaign(MARCH)
    assert rows == []
    assert totals["sent"] == 0
    assert totals["open_rate"] is None
