"""Email report rules beyond the basic figures (METRICS.md "Email and program engagement"),
each on the rollup served through ingestion and on the raw activities: delivered across a
period boundary, clicks that are not clicks (machine, unsubscribe link) and conversions
after any click."""

from datetime import date

import pytest

from crm.ingest import activities_record
from crm.models import Activity, Contact, Segment, SegmentMembership
from crm.models import ActivityKind as K
from reports.facts import facts_reconcile
from reports.metrics.email import email_by_campaign
from reports.query import ReportQuery, site_tz
from reports.rollups import rollups_reconcile
from tests.factories import CampaignFactory, ContactFactory

from .factories import at

pytestmark = pytest.mark.django_db
FEB = ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1))
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))


def rec(contact, kind, when, campaign=None, message_id="", **extra):
    item = {"contact": contact.pk, "kind": kind, "occurred_at": at(when).isoformat(), **extra}
    if campaign is not None:
        item.update(campaign=campaign.pk, message_id=message_id)
    activities_record(items=[item], source="test")


def both(q: ReportQuery) -> list[tuple[list, dict]]:
    """The report from the rollup and from the raw activities (a segment of everybody
    sends it to the raw path)."""
    everybody = Segment.objects.create(name="everybody")
    SegmentMembership.objects.bulk_create(
        SegmentMembership(segment=everybody, contact=c, joined_at=at("2025-01-01"))
        for c in Contact.objects.all()
    )
    raw_q = ReportQuery(start=q.start, end=q.end, segment=everybody.pk)
    try:
        return [email_by_campaign(q), email_by_campaign(raw_q)]
    finally:
        everybody.delete()


@pytest.fixture(autouse=True)
def _rollups_equal_a_rebuild():
    """After each test: the rows ingestion kept are those a rebuild of each day with an
    activity computes (campaign rollup and step facts)."""
    yield
    days = {
        a.astimezone(site_tz()).date()
        for a in Activity.objects.values_list("occurred_at", flat=True)
    }
    for d in sorted(days):
        assert rollups_reconcile(day=d) == {"email": {}, "stage": {}}, d
        assert facts_reconcile(day=d) == {"email_steps": {}}, d


def pick(row: dict, *keys) -> dict:
    return {k: row[k] for k in keys}


def test_bounces_of_last_periods_sends_never_make_delivered_negative():
    a = CampaignFactory(name="A")
    c1, c2, c3 = (ContactFactory(created_at=at("2025-01-01")) for _ in range(3))
    rec(c1, K.EMAIL_SENT, "2025-02-28 23:50", a, "m1")
    rec(c2, K.EMAIL_SENT, "2025-02-28 23:50", a, "m2")
    rec(c1, K.EMAIL_BOUNCED, "2025-03-01 00:05", a, "m1", details={"bounce_type": "soft"})
    rec(c2, K.EMAIL_CLICKED, "2025-03-01 08:00", a, "m2", url="https://x.example/a")
    keys = ("sent", "bounced", "delivered", "unique_opens", "unique_clicks")
    rates = ("bounce_rate", "open_rate", "click_through_rate", "click_to_open_rate")
    for rows, totals in both(MARCH):
        # March: no send, one bounce (of a February send), one click (likewise)
        assert pick(rows[0], *keys) == dict(zip(keys, (0, 1, 0, 1, 1), strict=True))
        assert pick(rows[0], *rates) == dict(zip(rates, (None, None, None, 1.0), strict=True))
        assert (totals["delivered"], totals["open_rate"]) == (0, None)
    for rows, _ in both(FEB):
        assert pick(rows[0], *keys) == dict(zip(keys, (2, 0, 2, 0, 0), strict=True))
    rec(c3, K.EMAIL_SENT, "2025-03-31 23:59", a, "m3")  # one send against one bounce
    for rows, _ in both(MARCH):
        assert pick(rows[0], "sent", "delivered", "bounce_rate", "open_rate") == {
            "sent": 1,
            "delivered": 0,
            "bounce_rate": 1.0,
            "open_rate": None,
        }
    rec(c3, K.EMAIL_SENT, "2025-03-15 10:00", a, "m4")
    for rows, _ in both(MARCH):
        assert pick(rows[0], "sent", "delivered", "open_rate", "click_through_rate") == {
            "sent": 2,
            "delivered": 1,
            "open_rate": 1.0,
            "click_through_rate": 1.0,
        }


def test_any_click_followed_by_the_goal_action_converts_on_that_clicks_day():
    a = CampaignFactory(name="A", goal_action=K.DEMO_REQUESTED)
    c1, c2, c3, c4 = (ContactFactory(created_at=at("2025-01-01")) for _ in range(4))
    for i, c in enumerate((c1, c2, c3, c4)):
        rec(c, K.EMAIL_SENT, "2025-03-01 08:00", a, f"m{i}")
    url = {"url": "https://x.example/demo"}
    # c1: the first click is 14 days before the demo, the second the day before it
    rec(c1, K.EMAIL_CLICKED, "2025-03-02 09:00", a, "m0", **url)
    rec(c1, K.EMAIL_CLICKED, "2025-03-15 09:00", a, "m0", **url)
    rec(c1, K.DEMO_REQUESTED, "2025-03-16 09:00")
    # c2: a demo 10 days after its only click: outside the 7-day window
    rec(c2, K.EMAIL_CLICKED, "2025-03-02 09:00", a, "m1", **url)
    rec(c2, K.DEMO_REQUESTED, "2025-03-12 09:00")
    # c3: clicked on the period's last evening, the demo the next (April) morning
    rec(c3, K.EMAIL_CLICKED, "2025-03-31 23:00", a, "m2", **url)
    rec(c3, K.DEMO_REQUESTED, "2025-04-01 01:00")
    # c4: the click that converts arrives late, after the demo was recorded
    rec(c4, K.EMAIL_CLICKED, "2025-03-02 09:00", a, "m3", **url)
    rec(c4, K.DEMO_REQUESTED, "2025-03-20 09:00")
    rec(c4, K.EMAIL_CLICKED, "2025-03-19 09:00", a, "m3", **url)
    keys = ("sent", "unique_clicks", "conversions", "conversion_rate")
    for rows, _ in both(MARCH):
        assert pick(rows[0], *keys) == dict(zip(keys, (4, 4, 3, 0.75), strict=True))
    first_half = ReportQuery(start=date(2025, 3, 1), end=date(2025, 3, 15))
    for rows, _ in both(first_half):  # first clicks of c1, c2, c4; no conversion yet
        assert pick(rows[0], "unique_clicks", "conversions") == {
            "unique_clicks": 3,
            "conversions": 0,
        }
    second_half = ReportQuery(start=date(2025, 3, 15), end=date(2025, 4, 1))
    for rows, _ in both(second_half):  # c3's first click; conversions on Mar 15, 19, 31
        assert pick(rows[0], "unique_clicks", "conversions") == {
            "unique_clicks": 1,
            "conversions": 3,
        }


def test_machine_and_unsubscribe_link_clicks_are_neither_clicks_nor_opens(settings):
    settings.SITE_URL = "https://crm.example.com"
    a = CampaignFactory(name="A", goal_action=K.DEMO_REQUESTED)
    c1, c2, c3 = (ContactFactory(created_at=at("2025-01-01")) for _ in range(3))
    for i, c in enumerate((c1, c2, c3)):
        rec(c, K.EMAIL_SENT, "2025-02-27 08:00", a, f"m{i}")
    offer = "https://x.example/offer"
    # c1: a link scanner opens and clicks seconds after delivery; a demo follows anyway
    rec(c1, K.EMAIL_OPENED, "2025-03-01 08:00", a, "m0", is_machine=True)
    rec(c1, K.EMAIL_CLICKED, "2025-03-01 08:01", a, "m0", is_machine=True, url=offer)
    rec(c1, K.DEMO_REQUESTED, "2025-03-02 08:00")
    # c2: the provider reports the unsubscribe link's click (host in capitals), then the
    # unsubscribe itself; a demo follows too
    unsubscribe = "https://CRM.example.com/u/token"
    rec(c2, K.EMAIL_CLICKED, "2025-03-03 08:00", a, "m1", url=unsubscribe)
    rec(c2, K.EMAIL_UNSUBSCRIBED, "2025-03-03 08:00", a, "m1")
    rec(c2, K.DEMO_REQUESTED, "2025-03-04 08:00")
    # c3: a machine click in February, the person's own click in March
    rec(c3, K.EMAIL_CLICKED, "2025-02-28 23:59", a, "m2", is_machine=True, url=offer)
    rec(c3, K.EMAIL_CLICKED, "2025-03-01 00:00", a, "m2", url=offer)
    keys = ("unique_opens", "machine_opens", "unique_clicks", "unsubscribed", "conversions")
    for rows, _ in both(MARCH):
        assert pick(rows[0], *keys) == dict(zip(keys, (1, 1, 1, 1, 0), strict=True))
    for rows, _ in both(FEB):
        assert pick(rows[0], "sent", "unique_opens", "unique_clicks") == {
            "sent": 3,
            "unique_opens": 0,
            "unique_clicks": 0,
        }


def test_a_program_only_unsubscribe_counts_in_its_emails_unsubscribe_rate():
    """METRICS.md "unsubscribe rate": contacts who unsubscribed from the email ÷ delivered.
    Leaving only the email's program (details scope "program") is unsubscribing from it;
    an email counts once, in the period of its first unsubscribe of either scope."""
    a = CampaignFactory(name="A")
    c = [ContactFactory(created_at=at("2025-01-01")) for _ in range(4)]
    for i, contact in enumerate(c):
        rec(contact, K.EMAIL_SENT, "2025-02-27 08:00", a, f"m{i}")
    rec(c[3], K.EMAIL_BOUNCED, "2025-02-27 08:05", a, "m3", details={"bounce_type": "soft"})
    program_only = {"details": {"scope": "program", "via": "link"}}
    rec(c[1], K.EMAIL_UNSUBSCRIBED, "2025-02-28 23:59", a, "m1", **program_only)
    rec(c[1], K.EMAIL_UNSUBSCRIBED, "2025-03-02 08:00", a, "m1")  # then from all email
    rec(c[0], K.EMAIL_UNSUBSCRIBED, "2025-03-01 00:00", a, "m0")
    rec(c[2], K.EMAIL_UNSUBSCRIBED, "2025-03-03 08:00", a, "m2", **program_only)
    keys = ("sent", "delivered", "unsubscribed", "unsubscribe_rate")
    for rows, _ in both(FEB):  # 4 sent, 1 bounced; c1 left the program on Feb 28
        assert pick(rows[0], *keys) == dict(zip(keys, (4, 3, 1, 1 / 3), strict=True))
    for rows, _ in both(MARCH):  # c0 (all email) and c2 (the program); nothing delivered
        assert pick(rows[0], *keys) == dict(zip(keys, (0, 0, 2, None), strict=True))
    statuses = [x.email_status for x in Contact.objects.order_by("pk")]
    assert statuses == ["unsubscribed", "unsubscribed", "active", "active"]
