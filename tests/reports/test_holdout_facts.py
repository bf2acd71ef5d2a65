"""Property: the funnel's holdout lift served by the holdout day rows
(reports.holdout_facts) equals the figures computed from the enrollments and transitions,
whatever order enrollments (re-entries the same day and later), stage changes, exits and
erasures come in."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import LifecycleTransition
from nurture.models import Program
from nurture.services.enrollment import contacts_enroll
from reports.holdout_facts import (
    holdout_apply_transitions,
    holdout_rebuild,
    holdout_reconcile,
)
from reports.metrics.funnel import holdout_lift, holdout_lift_raw
from reports.models import HoldoutDaily, HoldoutReachDaily
from reports.query import ReportQuery
from tests.nurture.factories import ProgramFactory

from .factories import at
from .test_nurtured_facts import _apply as _nurtured_apply
from .test_nurtured_facts import _world

event = st.one_of(
    # Enroll some contacts in program 0 (treated), 1 (held out), 2 (held out, re-entry
    # allowed) or 3 (half held out, re-entry allowed).
    st.tuples(
        st.just("enroll"),
        st.lists(st.integers(0, 3), min_size=1, max_size=3),
        st.integers(0, 3),
        st.integers(0, 60),
    ),
    st.tuples(
        st.just("move"),
        st.integers(0, 3),
        st.sampled_from(["mql", "opportunity", "customer", "recycled"]),
        st.integers(0, 60),
    ),
    st.tuples(st.just("exit"), st.integers(0, 3)),
    st.tuples(st.just("erase"), st.integers(0, 3)),
)
PERIODS = [
    ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1)),
    ReportQuery(start=date(2025, 1, 1), end=date(2025, 6, 1)),
    ReportQuery(start=date(2025, 2, 10), end=date(2025, 3, 20)),  # some reach it later
    ReportQuery(start=date(2025, 2, 1), end=date(2025, 2, 20)),
    ReportQuery(start=date(2025, 2, 15), end=date(2025, 2, 16)),  # one day
]


def _holdout_world():
    HoldoutDaily.objects.all().delete()
    HoldoutReachDaily.objects.all().delete()
    programs, contacts = _world()
    programs.append(ProgramFactory(holdout_percent=50, reentry=Program.Reentry.ALWAYS))
    return programs, contacts


def _apply(ev, programs, contacts):
    """As the nurtured test applies events; a stage change also runs the holdout upkeep
    (reports.handlers.on_stage_changed runs both)."""
    _nurtured_apply(ev, programs, contacts)
    if ev[0] == "move":
        holdout_apply_transitions(transitions=[LifecycleTransition.objects.latest("id")])


def _rows():
    return (
        sorted(
            HoldoutDaily.objects.exclude(enrolled=0, opportunity=0).values_list(
                "day", "program_id", "group", "prev_day", "enrolled", "opportunity"
            )
        ),
        sorted(
            HoldoutReachDaily.objects.exclude(enrolled=0).values_list(
                "reached_day", "program_id", "group", "day", "prev_day", "enrolled"
            )
        ),
    )


@pytest.mark.django_db
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(event, min_size=1, max_size=12))
def test_holdout_rows_serve_the_raw_figures_for_random_histories(events):
    programs, contacts = _holdout_world()
    for ev in events:
        _apply(ev, programs, contacts)
    for q in PERIODS:
        assert holdout_lift(q) == holdout_lift_raw(q), q
    kept = _rows()
    holdout_rebuild()
    assert _rows() == kept
    assert holdout_reconcile() == {}


@pytest.mark.django_db
def test_a_re_entry_counts_its_contact_once_per_period_and_an_opportunity_moves_it():
    programs, contacts = _holdout_world()
    held = programs[2]  # always held out, re-entry allowed
    for day in (3, 3, 10):  # the same instant twice, then a week later
        contacts_enroll(
            program=held,
            contact_ids=[contacts[0].pk],
            source="test",
            now=at("2025-02-01") + timedelta(days=day),
        )
    q = ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1))
    late = ReportQuery(start=date(2025, 2, 8), end=date(2025, 3, 1))
    assert [r["held_out"] for r in holdout_lift(q)] == [1]
    assert [r["held_out"] for r in holdout_lift(late)] == [1]
    _apply(("move", 0, "opportunity", 20), programs, contacts)
    (row,) = holdout_lift(q)
    assert row["held_out_opportunity_rate"] == 1.0
    early = ReportQuery(start=date(2025, 2, 1), end=date(2025, 2, 15))
    assert holdout_lift(early)[0]["held_out_opportunity_rate"] == 0.0  # reached later
    for p in (q, late, early):
        assert holdout_lift(p) == holdout_lift_raw(p)
    assert LifecycleTransition.objects.filter(to_stage="opportunity").count() == 1


@pytest.mark.django_db
def test_reconcile_reports_and_repairs_drifted_holdout_rows():
    programs, contacts = _holdout_world()
    _apply(("enroll", [0, 1], 1, 2), programs, contacts)
    HoldoutDaily.objects.update(enrolled=7)
    diff = holdout_reconcile()
    assert diff
    assert all(k.startswith("holdout") for k in diff)
    assert holdout_reconcile() == {}


@pytest.mark.django_db
def test_unfiltered_holdout_lift_takes_one_query(django_assert_num_queries):
    programs, contacts = _holdout_world()
    _apply(("enroll", [0, 1, 3], 1, 2), programs, contacts)
    _apply(("enroll", [0, 1], 0, 2), programs, contacts)
    q = ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1))
    with django_assert_num_queries(1):
        (row,) = holdout_lift(q)
    assert (row["held_out"], row["program_id"]) == (3, programs[1].pk)
