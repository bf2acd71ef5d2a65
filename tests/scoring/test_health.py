"""The scoring health page's figures against hand-computed expectations (METRICS.md "lead
score profile of new leads", "MQL acceptance rate"), in the site time zone."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from statistics import median

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm.models import LifecycleTransition, Stage
from scoring import queries
from scoring.models import LedgerEntry
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db
START = datetime(2025, 2, 1, tzinfo=UTC)
END = datetime(2025, 3, 1, tzinfo=UTC)


def _lead(created_at, *points_at, **fields):
    contact = ContactFactory(created_at=created_at, **fields)
    for points, at in points_at:
        LedgerEntry.objects.create(contact=contact, points=points, at=at, reason="activity")
    return contact


def test_the_profile_buckets_and_median_scores_as_they_stood_at_the_end():
    inside = START + timedelta(days=3)
    _lead(inside, (-5, inside))
    _lead(inside, (10, inside), (90, END))  # the 90 comes at the end: not counted
    _lead(inside, (20, inside), (10, inside + timedelta(days=1)))  # 30
    _lead(inside, (30, inside))
    _lead(inside, (120, END - timedelta(microseconds=1)))
    _lead(START - timedelta(microseconds=1), (40, inside))  # created before the month
    _lead(END, (40, END))  # created after it
    _lead(inside, (60, inside), created_suppressed=True)  # suppressed when created
    profile = queries.new_lead_scores(start=START, end=END)
    assert profile["total"] == 5
    assert profile["median"] == 30  # −5, 10, 30, 30, 120
    assert [(b["label"], b["contacts"]) for b in profile["buckets"]] == [
        ("below 0", 1),
        ("0–24", 1),
        ("25–49", 2),
        ("50–74", 0),
        ("75–99", 0),
        ("100+", 1),
    ]


def test_an_even_count_has_the_mean_of_the_middle_two_and_no_leads_no_median():
    inside = START + timedelta(days=3)
    for points in (10, 20, 35, 40):
        _lead(inside, (points, inside))
    _lead(inside)  # no entries: score 0
    assert queries.new_lead_scores(start=START, end=END)["median"] == 20
    _lead(inside, (37, inside))
    assert queries.new_lead_scores(start=START, end=END)["median"] == 27.5  # (20 + 35) / 2
    empty = queries.new_lead_scores(start=END, end=END + timedelta(days=1))
    assert (empty["total"], empty["median"]) == (0, None)
    assert all(b["contacts"] == 0 for b in empty["buckets"])


@given(st.lists(st.integers(-200, 200), max_size=40))
def test_median_of_counts_is_the_median(values):
    expected = median(values) if values else None
    assert queries.median_of_counts(Counter(values)) == expected


def test_the_page_reads_site_time_zone_months(sales_client, settings, monkeypatch):
    """Review finding: the page's months began at UTC midnight; a lead created on
    28 February at 22:00 in New York was counted in March."""
    settings.TIME_ZONE = "America/New_York"
    monkeypatch.setattr("scoring.views.timezone.now", lambda: datetime(2025, 3, 15, 12, tzinfo=UTC))
    _lead(datetime(2025, 3, 1, 3, tzinfo=UTC))  # 28 Feb, 22:00 in New York
    _lead(datetime(2025, 3, 1, 5, tzinfo=UTC))  # 1 March, 00:00 in New York
    response = sales_client.get("/scoring/health/")
    (february, previous), (march, current) = response.context["profiles"]
    assert (previous["total"], current["total"]) == (1, 1)
    assert february == datetime(2025, 2, 1, 5, tzinfo=UTC)  # midnight, New York (EST)
    assert march == datetime(2025, 3, 1, 5, tzinfo=UTC)
    assert "February 2025" in response.content.decode()


def test_acceptance_months_are_whole_site_time_zone_months(settings):
    """Review finding: the window began at a UTC midnight, so a zone west of UTC got a
    first row holding a few hours of the month before (a false rate)."""
    settings.TIME_ZONE = "America/New_York"
    now = datetime(2025, 3, 15, 12, tzinfo=UTC)
    decisions = [
        (datetime(2025, 1, 31, 23, tzinfo=UTC), Stage.DISQUALIFIED),  # 31 Jan, 18:00 NY
        (datetime(2025, 2, 1, 4, 59, tzinfo=UTC), Stage.SQL),  # 31 Jan, 23:59 NY
        (datetime(2025, 2, 1, 5, tzinfo=UTC), Stage.SQL),  # 1 Feb, 00:00 NY
        (datetime(2025, 3, 1, 1, tzinfo=UTC), Stage.RECYCLED),  # 28 Feb, 20:00 NY
        (datetime(2025, 3, 10, tzinfo=UTC), Stage.SQL),
        (datetime(2025, 3, 15, 12, tzinfo=UTC), Stage.SQL),  # at "now": outside [start, now)
    ]
    for at, to_stage in decisions:
        LifecycleTransition.objects.create(
            contact=ContactFactory(), from_stage=Stage.MQL, to_stage=to_stage, at=at
        )
    rows = queries.acceptance_by_month(months=2, now=now)
    got = [(r["month"].date(), r["decided"], r["accepted"], r["rate"]) for r in rows]
    assert got == [
        (datetime(2025, 2, 1).date(), 2, 1, 0.5),
        (datetime(2025, 3, 1).date(), 1, 1, 1.0),
    ]
    assert queries.acceptance_by_month(months=2, now=datetime(2025, 5, 1, 12, tzinfo=UTC)) == []


def test_points_per_rule_counts_as_advanced_only_contacts_that_moved_on_after_the_points():
    """Health page: "how contacts that got them fared". A customer since last year who
    browses the docs did not advance after getting the docs rule's points; a lead that
    reaches sql after its visit did."""
    from scoring.models import Rule

    now = datetime(2025, 6, 1, tzinfo=UTC)
    rule = Rule.objects.create(name="Docs visit", kind="engagement", points=5)
    customer = _lead(now - timedelta(days=400))
    LifecycleTransition.objects.create(
        contact=customer, from_stage=Stage.LEAD, to_stage=Stage.CUSTOMER,
        at=now - timedelta(days=300),
    )  # fmt: skip
    lead = _lead(now - timedelta(days=40))
    LifecycleTransition.objects.create(
        contact=lead, from_stage=Stage.MQL, to_stage=Stage.SQL, at=now - timedelta(days=5)
    )
    for contact in (customer, lead):
        LedgerEntry.objects.create(
            contact=contact, rule=rule, points=5, at=now - timedelta(days=10), reason="activity"
        )
    (row,) = queries.points_per_rule(now=now)
    assert (row["contacts"], row["advanced"], row["advance_rate"]) == (2, 1, 0.5)
