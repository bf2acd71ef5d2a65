"""Funnel velocity and drop-offs served by ``TransitionFact``'s stored durations and
same-move timestamps: the PostgreSQL ordered-set aggregates pick exactly the values the
Python median / nearest-rank p90 pick, and the fact-served figures equal raw data."""

import math
import random
from datetime import date, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Contact, LifecycleTransition
from reports.drop_facts import drops_rebuild, drops_reconcile
from reports.lifecycle_facts import lifecycle_facts_apply_transitions, lifecycle_facts_rebuild
from reports.metrics.funnel import _r, conversions, conversions_raw, drop_offs, drop_offs_raw
from reports.metrics.velocity import RANKS, median, percentile, velocity_python, velocity_sql
from reports.models import DropDaily, TransitionFact
from reports.query import ReportQuery
from tests.factories import ContactFactory

from .factories import at, move

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the ordered-set aggregates are PostgreSQL's"
)


def test_the_median_and_p90_fractions_pick_the_python_ranks():
    """percentile_disc(f) is the value at rank max(1, ceil(f·n)) (PostgreSQL computes the
    same double product): the fractions give the lower and upper middle and the p90 rank
    that :func:`median` and :func:`percentile` index, for every n tried."""
    lower, upper, p90 = RANKS
    for n in [*range(1, 200_001), 10**9, 10**9 + 1, 4 * 10**9, 4 * 10**9 + 1]:
        assert max(1, math.ceil(lower * n)) == n // 2 + (n % 2), n  # 1-based
        assert max(1, math.ceil(upper * n)) == n // 2 + 1, n
        assert max(1, math.ceil(p90 * n)) == max(0, math.ceil(0.9 * n) - 1) + 1, n


def _contacts_with_durations(durations_by_stage: dict[str, list[timedelta]]) -> ReportQuery:
    """One contact per duration: entered the stage in March 2025, the next stage after it."""
    nxt = {"mql": "sql", "sql": "opportunity", "opportunity": "customer"}
    for stage, durations in durations_by_stage.items():
        for i, d in enumerate(durations):
            c = ContactFactory(created_at=at("2025-01-01"))
            entered = at("2025-03-01") + timedelta(hours=i % 5)  # ties in entry time too
            move(c, "lead", stage, entered)
            move(c, stage, nxt[stage], entered + d)
    return ReportQuery(start=date(2025, 3, 1), end=date(2025, 6, 1))


@postgres_only
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 12])
def test_database_ranks_equal_the_python_median_and_p90(n):
    rng = random.Random(n)
    # Ties (repeated values), sub-second parts (float rounding) and whole days.
    pool = [timedelta(days=rng.randint(0, 20), microseconds=rng.randint(0, 10**6)) for _ in "ab"]
    durations = {
        "mql": [rng.choice(pool) for _ in range(n)],
        "sql": [timedelta(days=rng.randint(0, 30), seconds=rng.random() * 86400) for _ in range(n)],
        "opportunity": [timedelta(days=3)] * n,
    }
    q = _contacts_with_durations(durations)
    got = velocity_sql(q)
    assert got == velocity_python(q)
    for stage, ds in durations.items():
        times = [d.total_seconds() / 86400.0 for d in ds]
        assert got[stage] == (n, median(times), percentile(times, 0.9)), stage
    steps = {s["from_stage"]: s for s in conversions(q)}
    assert steps["opportunity"]["median_days"] == steps["opportunity"]["p90_days"] == 3.0
    assert conversions(q) == conversions_raw(q)


@postgres_only
def test_an_even_median_is_the_mean_of_the_two_middle_values():
    q = _contacts_with_durations({"mql": [timedelta(days=d) for d in (1, 2, 4, 10)]})
    assert velocity_sql(q)["mql"] == (4, 3.0, 10.0)
    mql = next(s for s in conversions(q) if s["from_stage"] == "mql")
    assert (mql["median_days"], mql["p90_days"]) == (_r(3.0), _r(10.0))


def test_drop_offs_count_each_contact_once_per_stage_left():
    a, b = (ContactFactory(created_at=at("2025-01-01")) for _ in range(2))
    move(a, "lead", "mql", "2025-02-20")
    move(a, "mql", "recycled", "2025-02-25")  # before the period: not counted
    move(a, "recycled", "mql", "2025-03-02")
    move(a, "mql", "recycled", "2025-03-05")  # counted (the earlier one is before)
    move(a, "recycled", "mql", "2025-03-06")
    move(a, "mql", "recycled", "2025-03-07")  # the same contact again: once
    move(a, "recycled", "sql", "2025-03-08")
    move(a, "sql", "recycled", "2025-03-09")  # another stage left: counted there
    move(b, "lead", "mql", "2025-03-01")
    move(b, "mql", "disqualified", "2025-03-03")
    move(b, "disqualified", "mql", "2025-03-03")  # same instant, then again
    move(b, "mql", "disqualified", "2025-03-03")
    q = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))
    got = drop_offs(q)
    assert got == drop_offs_raw(q)
    assert dict(got) == {
        "mql": {"recycled": 1, "disqualified": 1},
        "sql": {"recycled": 1, "disqualified": 0},
    }


FROM_TO = [
    ("", "lead"),
    ("lead", "mql"),
    ("mql", "sql"),
    ("sql", "opportunity"),
    ("opportunity", "customer"),
    ("mql", "recycled"),
    ("sql", "recycled"),
    ("opportunity", "recycled"),
    ("mql", "disqualified"),
    ("sql", "disqualified"),
    ("recycled", "mql"),
    ("disqualified", "mql"),
]
moves = st.tuples(
    st.integers(0, 3),  # contact
    st.sampled_from(FROM_TO),
    st.integers(0, 60),  # days after Feb 1
    st.integers(0, 2),  # hour (ties on purpose)
    st.sampled_from([0, 1, 999_999]),  # microseconds (float rounding of the days)
)
PERIODS = [
    ReportQuery(start=date(2025, 2, 10), end=date(2025, 3, 10)),
    ReportQuery(start=date(2025, 1, 1), end=date(2025, 4, 1)),
    ReportQuery(start=date(2025, 2, 20), end=date(2025, 3, 5)),
    ReportQuery(start=date(2025, 3, 1), end=date(2025, 3, 20), source="paid"),
]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(moves, min_size=1, max_size=6), min_size=1, max_size=5))
def test_velocity_and_drop_offs_from_facts_equal_raw_for_random_histories(batches):
    TransitionFact.objects.all().delete()
    DropDaily.objects.all().delete()
    LifecycleTransition.objects.all().delete()
    Contact.objects.all().delete()
    contacts = [
        ContactFactory(created_at=at("2025-02-01") + timedelta(days=i), source=src)
        for i, src in enumerate(["paid", "web_form", "paid", "event"])
    ]
    for batch in batches:  # out of order in time (back-dated imports take the rewrite)
        stored = [
            LifecycleTransition.objects.create(
                contact=contacts[c],
                from_stage=a,
                to_stage=b,
                at=at("2025-02-01") + timedelta(days=day, hours=hour, microseconds=us),
            )
            for c, (a, b), day, hour, us in batch
        ]
        lifecycle_facts_apply_transitions(transitions=stored)
    for q in PERIODS:
        assert drop_offs(q) == drop_offs_raw(q), q
        assert conversions(q) == conversions_raw(q), q
        if connection.vendor == "postgresql":
            assert velocity_sql(q) == velocity_python(q), q
    incremental = sorted(TransitionFact.objects.values_list())
    day_rows = _drop_rows()
    lifecycle_facts_rebuild(contact_ids=[c.pk for c in contacts])
    assert sorted(TransitionFact.objects.values_list()) == incremental
    assert _drop_rows() == day_rows  # a refresh moves the day rows by the difference
    drops_rebuild()
    assert _drop_rows() == day_rows


def _drop_rows():
    return sorted(
        DropDaily.objects.exclude(moves=0).values_list(
            "day", "from_stage", "to_stage", "prev_day", "moves"
        )
    )


def test_drop_day_rows_reconcile_reports_and_repairs_drift():
    c = ContactFactory(created_at=at("2025-01-01"))
    move(c, "lead", "mql", "2025-03-01")
    move(c, "mql", "recycled", "2025-03-02")
    q = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))
    right = drop_offs(q)
    assert right == {"mql": {"recycled": 1, "disqualified": 0}}
    DropDaily.objects.update(moves=5)
    assert len(drops_reconcile()) == 1
    assert drop_offs(q) == right
    assert drops_reconcile() == {}
