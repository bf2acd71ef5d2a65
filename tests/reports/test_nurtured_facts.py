"""Property: the funnel's nurtured vs non-nurtured figures served by the nurtured day rows
(reports.nurtured_facts) equal the figures computed from the enrollments and transitions,
whatever order enrollments, stage changes, exits and erasures come in."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Contact, LifecycleTransition
from crm.privacy import contact_erase
from nurture.models import Enrollment, Program
from nurture.services.enrollment import EXIT_MANUAL, contacts_enroll, enrollments_exit
from reports.lifecycle_facts import lifecycle_facts_apply_transitions, new_leads_rebuild
from reports.metrics.funnel import nurtured_vs_non, nurtured_vs_non_raw
from reports.models import (
    CohortReachDaily,
    NewLeadDaily,
    NurturedDaily,
    NurturedReachDaily,
    TransitionFact,
)
from reports.nurtured_facts import nurtured_rebuild, nurtured_reconcile
from reports.query import ReportQuery
from tests.nurture.factories import ProgramFactory

from .factories import at

STAGES = ["mql", "sql", "opportunity", "customer", "recycled", "opportunity"]
event = st.one_of(
    # Enroll some contacts in program 0 (treated), 1 (always held out) or 2 (re-entry
    # allowed, held out): the same day twice re-enrolls at the same instant.
    st.tuples(
        st.just("enroll"),
        st.lists(st.integers(0, 3), min_size=1, max_size=3),
        st.integers(0, 2),
        st.integers(0, 60),
    ),
    st.tuples(st.just("move"), st.integers(0, 3), st.sampled_from(STAGES), st.integers(0, 60)),
    st.tuples(st.just("exit"), st.integers(0, 3)),
    st.tuples(st.just("erase"), st.integers(0, 3)),
)
PERIODS = [
    ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1)),
    ReportQuery(start=date(2025, 1, 1), end=date(2025, 6, 1)),
    ReportQuery(start=date(2025, 2, 10), end=date(2025, 3, 20)),  # some reach it later
    ReportQuery(start=date(2025, 2, 1), end=date(2025, 2, 20)),
    ReportQuery(start=date(2025, 1, 1), end=date(2025, 6, 1), source="paid"),  # raw path
]


def _world():
    for model in (
        NurturedDaily,
        NurturedReachDaily,
        NewLeadDaily,
        CohortReachDaily,
        TransitionFact,
        Enrollment,
        LifecycleTransition,
        Contact,
        Program,
    ):
        model.objects.all().delete()
    programs = [
        ProgramFactory(holdout_percent=0),
        ProgramFactory(holdout_percent=100),
        ProgramFactory(holdout_percent=100, reentry=Program.Reentry.ALWAYS),
    ]
    contacts = [
        Contact.objects.create(
            email=f"n{i}@x.example", created_at=at(day), source=src, created_suppressed=sup
        )
        for i, (day, src, sup) in enumerate(
            [
                ("2025-02-01", "paid", False),
                ("2025-02-12", "web_form", False),
                ("2025-02-05", "paid", True),  # not a new lead: in no group
                ("2025-02-25", "paid", False),
            ]
        )
    ]
    for c in contacts:  # the creation transition every creation path records
        lifecycle_facts_apply_transitions(
            transitions=[
                LifecycleTransition.objects.create(
                    contact=c, from_stage="", to_stage="lead", at=c.created_at
                )
            ]
        )
    return programs, contacts


def _apply(ev, programs, contacts):
    kind = ev[0]
    if kind == "enroll":
        _, who, program, day = ev
        contacts_enroll(
            program=programs[program],
            contact_ids=[contacts[i].pk for i in who],
            source="test",
            now=at("2025-02-01") + timedelta(days=day),
        )
    elif kind == "move":
        _, c, stage, day = ev
        t = LifecycleTransition.objects.create(
            contact=contacts[c],
            from_stage="",
            to_stage=stage,
            at=at("2025-02-01") + timedelta(days=day, hours=3),
        )
        lifecycle_facts_apply_transitions(transitions=[t])
    elif kind == "exit":
        enrollments_exit(
            queryset=Enrollment.objects.filter(contact=contacts[ev[1]]), reason=EXIT_MANUAL
        )
    else:
        contact_erase(contact=contacts[ev[1]])


def _rows():
    return (
        sorted(
            NurturedDaily.objects.exclude(leads=0, opportunity=0).values_list(
                "day", "group", "leads", "opportunity"
            )
        ),
        sorted(
            NurturedReachDaily.objects.exclude(leads=0).values_list(
                "day", "group", "reached_day", "leads"
            )
        ),
    )


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(event, min_size=1, max_size=12))
def test_nurtured_rows_serve_the_raw_figures_for_random_histories(events):
    programs, contacts = _world()
    for ev in events:
        _apply(ev, programs, contacts)
    new_leads_rebuild()  # the world's contacts were created directly
    for q in PERIODS:
        assert nurtured_vs_non(q) == nurtured_vs_non_raw(q), q
    kept = _rows()
    nurtured_rebuild()
    assert _rows() == kept
    assert nurtured_reconcile() == {}


@pytest.mark.django_db
def test_a_held_out_lead_moves_to_nurtured_when_treated_and_counts_its_opportunity():
    programs, contacts = _world()
    lead = contacts[1]
    q = ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1))
    new_leads_rebuild()
    _apply(("enroll", [1], 1, 3), programs, contacts)
    assert nurtured_vs_non(q)["nurtured"] == 0
    assert nurtured_vs_non(q)["non_nurtured"] == 2  # contacts 0 and 3 (2 is suppressed)
    _apply(("move", 1, "opportunity", 20), programs, contacts)
    _apply(("enroll", [1], 0, 25), programs, contacts)
    got = nurtured_vs_non(q)
    assert (got["nurtured"], got["nurtured_opportunities"]) == (1, 1)
    assert got == nurtured_vs_non_raw(q)
    # Reached after the end of an earlier period: not an opportunity of that period.
    early = ReportQuery(start=date(2025, 2, 1), end=date(2025, 2, 15))
    assert nurtured_vs_non(early)["nurtured_opportunities"] == 0
    assert nurtured_vs_non(early) == nurtured_vs_non_raw(early)
    assert lead.pk in Enrollment.objects.values_list("contact_id", flat=True)


@pytest.mark.django_db
def test_reconcile_reports_and_repairs_drifted_nurtured_rows():
    programs, contacts = _world()
    _apply(("enroll", [0, 1], 0, 2), programs, contacts)
    NurturedDaily.objects.filter(group="nurtured").update(leads=7)
    diff = nurtured_reconcile()
    assert diff
    assert all(k.startswith("nurtured") for k in diff)
    assert nurtured_reconcile() == {}


@pytest.mark.django_db
def test_unfiltered_nurtured_figures_take_one_query(django_assert_num_queries):
    programs, contacts = _world()
    _apply(("enroll", [0, 1, 3], 0, 2), programs, contacts)
    q = ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1))
    coh = {"lead": 3, "opportunity": 0}
    with django_assert_num_queries(1):
        got = nurtured_vs_non(q, coh)
    assert (got["nurtured"], got["non_nurtured"]) == (3, 0)
