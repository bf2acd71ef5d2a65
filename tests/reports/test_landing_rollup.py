"""Property: the landing-page figures served by the landing day rows
(reports.landing_rollup) equal the figures computed from the activities, for random
visits and submissions over several months (late and repeated ones, erasures that strip
query strings), and for periods that start or end mid-month, before or after the data."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Activity, Contact
from crm.models import ActivityKind as K
from crm.privacy import contact_erase
from reports.landing_facts import landing_facts_apply_activities
from reports.landing_rollup import landing_rollup_rebuild, landing_rollup_reconcile
from reports.metrics.email import landing_pages, landing_pages_raw
from reports.models import LandingDaily, LandingSpan, LandingVisitFact
from reports.query import ReportQuery

from .factories import at

URLS = ["https://x.example/a", "https://x.example/b?email=p@x.example", "https://x.example/B"]
KINDS = [K.PAGE_VISIT, K.PAGE_VISIT, K.FORM_SUBMITTED, K.LANDING_PAGE_CONVERSION]
event = st.one_of(
    st.tuples(
        st.just("act"),
        st.integers(0, 3),  # contact
        st.integers(0, 2),  # url
        st.integers(0, 3),  # kind
        st.integers(0, 150),  # day from 2025-01-01
        st.integers(0, 23),  # hour
    ),
    st.tuples(st.just("erase"), st.integers(0, 3)),
)
PERIODS = [
    (date(2025, 1, 1), date(2025, 7, 1)),  # everything
    (date(2025, 2, 1), date(2025, 3, 1)),  # whole months, data on both sides
    (date(2025, 2, 10), date(2025, 3, 20)),  # mid-month edges
    (date(2025, 2, 10), date(2025, 2, 20)),  # inside one month
    (date(2025, 3, 15), date(2025, 4, 1)),
    (date(2025, 4, 1), date(2025, 4, 2)),  # one day
    (date(2025, 5, 10), date(2026, 1, 1)),  # ends after the data
    (date(2024, 12, 1), date(2025, 1, 15)),  # starts before it
]


def _world():
    for model in (LandingDaily, LandingSpan, LandingVisitFact, Activity, Contact):
        model.objects.all().delete()
    return [
        Contact.objects.create(email=f"l{i}@x.example", created_at=at("2024-12-01"))
        for i in range(4)
    ]


def _apply(batch, contacts):
    acts = []
    for ev in batch:
        if ev[0] == "erase":
            contact_erase(contact=contacts[ev[1]])
            continue
        _, c, url, kind, day, hour = ev
        acts.append(
            Activity.objects.create(
                contact=contacts[c],
                kind=KINDS[kind],
                url=URLS[url],
                occurred_at=at("2025-01-01") + timedelta(days=day, hours=hour),
            )
        )
    if acts:
        landing_facts_apply_activities(activities=acts)


def _rows():
    return (
        sorted(
            LandingDaily.objects.exclude(firsts=0, opened=0, closed=0).values_list(
                "url", "tag", "day", "firsts", "opened", "closed"
            )
        ),
        sorted(
            LandingSpan.objects.exclude(n=0).values_list(
                "url", "tag", "grain", "p_key", "d_key", "n"
            )
        ),
    )


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(event, min_size=1, max_size=6), min_size=1, max_size=5))
def test_landing_rows_serve_the_raw_figures_for_random_histories(batches):
    contacts = _world()
    for batch in batches:
        _apply(batch, contacts)
    for start, end in PERIODS:
        q = ReportQuery(start=start, end=end)
        assert landing_pages(q) == landing_pages_raw(q), q
    kept = _rows()
    landing_rollup_rebuild()
    assert _rows() == kept
    assert landing_rollup_reconcile() == {}


@pytest.mark.django_db
def test_a_contact_counts_once_per_page_and_converts_with_both_in_the_period():
    a, b = _world()[:2]
    page = URLS[0]
    _apply(
        [
            ("act", 0, 0, 0, 0, 10),  # a visits Jan 1 ...
            ("act", 0, 0, 0, 40, 10),  # ... Feb 10 ...
            ("act", 0, 0, 2, 100, 10),  # ... and submits Apr 11
            ("act", 1, 0, 1, 41, 10),  # b visits Feb 11
            ("act", 1, 0, 3, 41, 9),  # and converted earlier that day
        ],
        [a, b],
    )
    rows = landing_pages(ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1)))
    assert rows == [
        {
            "url": page,
            "unique_visitors": 2,
            "converted_visitors": 1,
            "landing_page_conversion_rate": 0.5,
        }
    ]
    year = ReportQuery(start=date(2025, 1, 1), end=date(2026, 1, 1))
    assert landing_pages(year)[0]["converted_visitors"] == 2
    gap = ReportQuery(start=date(2025, 1, 15), end=date(2025, 2, 1))  # a's visits span it
    assert landing_pages(gap) == []


@pytest.mark.django_db
def test_unfiltered_landing_pages_take_one_query(django_assert_num_queries):
    contacts = _world()
    _apply([("act", 0, 0, 0, 3, 1), ("act", 1, 1, 2, 5, 1)], contacts)
    with django_assert_num_queries(1):
        landing_pages(ReportQuery(start=date(2025, 1, 1), end=date(2025, 2, 1)))


@pytest.mark.django_db
def test_reconcile_reports_and_repairs_drifted_landing_rows():
    contacts = _world()
    _apply([("act", 0, 0, 0, 3, 1), ("act", 0, 0, 0, 50, 1)], contacts)
    LandingSpan.objects.filter(grain="dd").update(n=5)
    assert landing_rollup_reconcile()
    assert landing_rollup_reconcile() == {}


@pytest.mark.django_db
def test_the_daily_reconciliation_task_checks_the_landing_and_holdout_rows():
    from reports.tasks import reconcile_rollups

    contacts = _world()
    _apply([("act", 0, 0, 0, 3, 1), ("act", 0, 0, 2, 40, 1)], contacts)
    out = reconcile_rollups(day="2025-01-04")
    assert out["landing_rollup"] == out["holdout"] == 0
