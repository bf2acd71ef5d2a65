"""Segment membership replayed over a loaded history (crm.segment_history): each dynamic
segment evaluated as of every week, its joins and leaves dated in that week."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models.functions import TruncDate

from crm import demo, segment_demo
from crm.models import LifecycleTransition, Segment, SegmentChange, SegmentMembership
from crm.segment_history import as_of, membership_replay
from crm.segments import segments_refresh_all
from nurture import demo as nurture_demo
from scoring import demo as scoring_demo
from tests.crm.segments_factories import SegmentFactory
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 1, 12, tzinfo=UTC)
HOT = {"did": "page_visit", "url_contains": "/pricing", "min_count": 2, "within_last_days": 30}


def changes(segment) -> list[tuple[str, datetime]]:
    return list(
        SegmentChange.objects.filter(segment=segment).order_by("at").values_list("kind", "at")
    )


def test_behaviour_conditions_count_only_what_had_happened():
    t = datetime(2025, 6, 10, tzinfo=UTC)
    definition = {"all": [HOT, {"did_not": "email_opened"}, {"field": "stage", "op": "equals"}]}
    rewritten = as_of(definition, t)["all"]
    assert rewritten[0] == {
        "did": "page_visit",
        "url_contains": "/pricing",
        "min_count": 2,
        "between": ["2025-05-11", "2025-06-09"],
    }
    assert rewritten[1] == {"did_not": "email_opened", "between": ["1970-01-01", "2025-06-09"]}
    assert rewritten[2] == {"as_of": {"field": "stage", "op": "equals"}}


def test_a_pricing_visitor_joins_at_the_visit_and_leaves_when_the_window_runs_out():
    hot = SegmentFactory(definition=HOT)
    lead = ContactFactory(created_at=START + 10 * DAY)
    ActivityFactory(contact=lead, url="https://x.example/pricing", occurred_at=START + 40 * DAY)
    second = ActivityFactory(
        contact=lead, url="https://x.example/pricing", occurred_at=START + 43 * DAY
    )
    # A visit after the replay's end must not make it a member earlier.
    ActivityFactory(contact=lead, url="https://x.example/pricing", occurred_at=END + DAY)
    membership_replay(start=START, end=END)
    (joined, at_join), (left, at_leave) = changes(hot)
    assert (joined, at_join) == ("joined", second.occurred_at)
    assert left == "left"
    # Out of the 30-day window between two weekly evaluations, with no event to date it.
    ran_out = START + 40 * DAY + 30 * DAY
    assert ran_out < at_leave <= ran_out + 7 * DAY
    assert not SegmentMembership.objects.filter(segment=hot).exists()


def test_stage_and_email_status_are_read_as_they_were():
    leads = SegmentFactory(
        definition={
            "all": [
                {"field": "stage", "op": "equals", "value": "lead"},
                {"field": "email_status", "op": "equals", "value": "active"},
            ]
        }
    )
    # Today an unsubscribed MQL: a mailable lead until its hand-off, 100 days in.
    created = START + 20 * DAY
    contact = ContactFactory(
        created_at=created,
        stage="mql",
        email_status="unsubscribed",
        email_status_changed_at=START + 200 * DAY,
    )
    LifecycleTransition.objects.create(contact=contact, from_stage="", to_stage="lead", at=created)
    mql = START + 120 * DAY
    LifecycleTransition.objects.create(contact=contact, from_stage="lead", to_stage="mql", at=mql)
    membership_replay(start=START, end=END)
    assert changes(leads) == [("joined", created), ("left", mql)]


def test_a_segment_on_another_reads_its_membership_of_that_week():
    hot = SegmentFactory(definition=HOT)
    hot_leads = SegmentFactory(
        definition={
            "all": [{"in_segment": hot.pk}, {"field": "stage", "op": "equals", "value": "lead"}]
        }
    )
    lead = ContactFactory(created_at=START + DAY)
    LifecycleTransition.objects.create(contact=lead, from_stage="", to_stage="lead", at=START + DAY)
    for day in (100, 102):
        ActivityFactory(
            contact=lead, url="https://x.example/pricing", occurred_at=START + day * DAY
        )
    membership_replay(start=START, end=END)
    assert [kind for kind, _ in changes(hot_leads)] == ["joined", "left"]
    assert changes(hot_leads)[0] == changes(hot)[0]


def test_segments_are_seeded_after_what_they_read_and_reports_after_the_ledger():
    order = settings.DEMO_SEEDERS.index
    assert order("crm.segment_demo.seed") > order("nurture.demo.seed")
    assert order("crm.segment_demo.seed") > order("scoring.demo.seed")
    assert order("reports.demo.seed") > order("scoring.demo.seed")


@pytest.fixture(scope="class")
def seeded(django_db_setup, django_db_blocker):
    """The seeders segments read, then theirs, on one database rolled back afterwards."""
    with django_db_blocker.unblock(), transaction.atomic():
        ctx = demo.SeedContext(seed=5, contacts=200, users=demo.ensure_demo_users())
        for seeder in (demo, nurture_demo, scoring_demo, segment_demo):
            seeder.seed(ctx)
        yield ctx
        transaction.set_rollback(True)


@pytest.mark.django_db
class TestTheSeededSegments:
    def test_joins_and_leaves_cover_the_year(self, seeded):
        ctx = seeded
        dynamic = SegmentChange.objects.filter(segment__kind=Segment.Kind.DYNAMIC)
        assert dynamic.filter(at__lt=ctx.now - 180 * DAY, kind="joined").exists()
        assert dynamic.filter(at__lt=ctx.now - 30 * DAY, kind="left").exists()
        recent = dynamic.filter(at__gte=ctx.now - 90 * DAY).annotate(day=TruncDate("at"))
        # The segment page charts the last 90 days per day: not one seeding-minute bar.
        assert recent.values("day").distinct().count() > 20

    def test_the_stored_membership_is_current(self, seeded):
        assert set(segments_refresh_all().values()) == {(0, 0)}
        for segment in Segment.objects.filter(kind=Segment.Kind.DYNAMIC):
            joined = SegmentChange.objects.filter(segment=segment, kind="joined").count()
            left = SegmentChange.objects.filter(segment=segment, kind="left").count()
            assert SegmentMembership.objects.filter(segment=segment).count() == joined - left

    def test_the_trade_show_list_was_uploaded_after_the_show(self, seeded):
        ctx = seeded
        berlin = Segment.objects.get(kind=Segment.Kind.STATIC)
        show = ctx.shared["campaigns"]["Trade show Berlin"]
        times = set(SegmentChange.objects.filter(segment=berlin).values_list("at", flat=True))
        assert len(times) == 1
        assert times.pop().date() > show.end_date
