"""Property: funnel velocity and attribution credits served by the lifecycle facts
(``TransitionFact``, ``TransitionCredit``) equal the figures computed from raw data."""

import dataclasses
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Activity, Campaign, Contact, Deal, LifecycleTransition
from crm.models import ActivityKind as K
from reports.credit_facts import sales_cycle_apply_transitions
from reports.lifecycle_facts import (
    lifecycle_facts_apply_activities,
    lifecycle_facts_apply_transitions,
    lifecycle_facts_rebuild,
    lifecycle_facts_reconcile,
    new_leads_rebuild,
)
from reports.metrics.attribution import MODELS
from reports.metrics.cost import (
    attributed_revenue,
    attributed_revenue_raw,
    stage_credits,
    stage_credits_raw,
)
from reports.metrics.email import landing_pages, landing_pages_raw
from reports.metrics.funnel import (
    cohort,
    cohort_raw,
    conversions,
    conversions_raw,
    drop_offs,
    drop_offs_raw,
    flow,
    flow_raw,
)
from reports.metrics.leads import reopened_counts, reopened_counts_raw
from reports.models import (
    CampaignLeadDaily,
    CohortReachDaily,
    CreditDaily,
    DealCredit,
    DealCreditDaily,
    DropDaily,
    LandingDaily,
    LandingSpan,
    LandingVisitFact,
    LeadScoreDaily,
    LeadScoreMonth,
    NewLeadDaily,
    ReopenedDayFact,
    StageEntryDaily,
    StagePopulationDaily,
    TransitionCredit,
    TransitionFact,
)
from reports.query import ReportQuery
from reports.stage_facts import stage_facts_apply_transitions

from .factories import at

STAGES = ["lead", "mql", "sql", "opportunity", "customer", "recycled", "mql", "sql"]
event = st.one_of(
    st.tuples(
        st.just("act"),
        st.integers(0, 2),  # contact
        st.integers(0, 3),  # campaign (3 = none)
        st.integers(0, 60),  # days after Feb 1
        st.integers(0, 3),  # hour (ties on purpose)
        st.sampled_from(
            [K.PAGE_VISIT, K.FORM_SUBMITTED, K.LANDING_PAGE_CONVERSION, K.EMAIL_OPENED]
        ),
        st.sampled_from(["", "https://x.example/a", "https://x.example/b"]),
    ),
    st.tuples(
        st.just("deal"),
        st.integers(0, 2),
        st.sampled_from(["0", "100.50", "1200"]),
        st.integers(0, 60),
        st.integers(0, 3),
        st.booleans(),  # won with the move to customer (else: an existing customer's deal)
    ),
    st.tuples(
        st.just("move"),
        st.integers(0, 2),
        st.sampled_from(STAGES),
        st.integers(0, 60),
        st.integers(0, 3),
    ),
)
PERIODS = [
    ReportQuery(start=date(2025, 2, 10), end=date(2025, 3, 10)),
    ReportQuery(start=date(2025, 1, 1), end=date(2025, 4, 1)),
    ReportQuery(start=date(2025, 2, 20), end=date(2025, 3, 5)),
    ReportQuery(start=date(2025, 3, 1), end=date(2025, 3, 20), source="paid"),
]


def _world():
    for model in (
        LeadScoreDaily,  # frozen months of an earlier example (reports.score_facts)
        LeadScoreMonth,
        NewLeadDaily,  # and its funnel cohort counts (reports.cohort_facts)
        CohortReachDaily,
        DropDaily,  # reports.drop_facts (unfiltered drop-offs)
        DealCredit,
        DealCreditDaily,  # reports.deal_facts (unfiltered attributed revenue)
        Deal,
        CreditDaily,  # reports.credit_facts (unfiltered cost report credits)
        CampaignLeadDaily,
        ReopenedDayFact,
        LandingVisitFact,
        LandingDaily,  # reports.landing_rollup (unfiltered landing pages)
        LandingSpan,
        StageEntryDaily,  # reports.stage_facts (unfiltered flow)
        StagePopulationDaily,
        TransitionCredit,
        TransitionFact,
        Activity,
        LifecycleTransition,
        Contact,
    ):
        model.objects.all().delete()
    Campaign.objects.all().delete()
    camps = [Campaign.objects.create(name=f"C{i}") for i in range(3)]
    contacts = [
        Contact.objects.create(
            email=f"f{i}@x.example", created_at=at(day), source=src, created_suppressed=sup
        )
        for i, (day, src, sup) in enumerate(
            [
                ("2025-02-01", "paid", False),
                ("2025-02-20", "web_form", False),
                ("2025-02-05", "paid", True),
            ]
        )
    ]
    return camps, contacts


def _store(ev, camps, contacts):
    kind, c, what, day, hour, *rest = ev
    when = at("2025-02-01") + timedelta(days=day, hours=hour)
    if kind == "act":
        return Activity.objects.create(
            contact=contacts[c],
            campaign=camps[what] if what < 3 else None,
            kind=rest[0],
            url=rest[1],
            occurred_at=when,
        )
    if kind == "deal":
        deal = Deal.objects.create(
            contact=contacts[c],
            amount=Decimal(what),
            status=Deal.Status.WON,
            created_at=when - timedelta(days=1),
            closed_at=when,
        )
        if rest[0]:
            return LifecycleTransition.objects.create(
                contact=contacts[c], from_stage="", to_stage="customer", at=when
            )
        return deal
    return LifecycleTransition.objects.create(
        contact=contacts[c], from_stage="", to_stage=what, at=when
    )


SNAP_DEAL = ["deal_id", "campaign_id", "closed_at", "amount", "touches", "n", "first", "last"]


def _snapshot(deal_ids=None):
    deals = DealCredit.objects.all()
    if deal_ids is not None:  # deals won without a stage change wait for reconciliation
        deals = deals.filter(deal_id__in=deal_ids)
    return (
        sorted(TransitionFact.objects.values_list()),
        sorted(deals.values_list(*SNAP_DEAL)),
        sorted(ReopenedDayFact.objects.values_list("contact_id", "day", "prev_day")),
        sorted(
            LandingVisitFact.objects.values_list(
                "url", "contact_id", "day", "kind", "prev_day", "other_day"
            )
        ),
        sorted(
            TransitionCredit.objects.values_list(
                *["transition_id", "campaign_id", "touches", "n", "first", "last", "to_stage", "at"]
            )
        ),
    )


def _cohort_snapshot():
    return (
        sorted(NewLeadDaily.objects.values_list("day", "mql", "sql", "opportunity", "customer")),
        sorted(
            CohortReachDaily.objects.exclude(leads=0).values_list(
                "day", "stage", "reached_day", "leads"
            )
        ),
    )


@pytest.mark.django_db
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(event, min_size=1, max_size=6), min_size=1, max_size=5))
def test_lifecycle_facts_equal_raw_for_random_batches(batches):
    camps, contacts = _world()
    for batch in batches:  # out of order in time, like late webhooks and history imports
        stored = [_store(ev, camps, contacts) for ev in batch]
        moves = [s for s in stored if isinstance(s, LifecycleTransition)]  # deals: no hook
        acts = [s for s in stored if isinstance(s, Activity)]
        if moves:
            lifecycle_facts_apply_transitions(transitions=moves)
            stage_facts_apply_transitions(transitions=moves)  # unfiltered flow's day rows
            sales_cycle_apply_transitions(moves)  # the revenue report's sales cycle
        if acts:
            lifecycle_facts_apply_activities(activities=acts)
    new_leads_rebuild()  # the world's contacts were bulk-created; keeps the stage counts
    for q in PERIODS:
        assert cohort(q) == cohort_raw(q)
        assert conversions(q) == conversions_raw(q)
        assert drop_offs(q) == drop_offs_raw(q)
        assert flow(q) == flow_raw(q)
        assert landing_pages(q) == landing_pages_raw(q)
        assert reopened_counts(q) == reopened_counts_raw(q)
        for model in MODELS:
            assert stage_credits(q, model) == stage_credits_raw(q, model), model
            rq = dataclasses.replace(q, attribution=model)
            assert attributed_revenue(rq) == attributed_revenue_raw(rq), model
    incremental = _snapshot()
    cohort_rows = _cohort_snapshot()
    lifecycle_facts_rebuild()
    assert _snapshot({row[0] for row in incremental[1]}) == incremental
    assert _cohort_snapshot() == cohort_rows
    assert lifecycle_facts_reconcile(day=date(2025, 2, 3)) == {
        "new_leads": {},
        "transition_facts": {},
        "transition_credits": {},
        "landing": {},
        "reopened": {},
        "deals": {},
        "cohort": {},
        "drops": {},
        "lead_scores": {},
    }


@pytest.mark.django_db
def test_reconcile_reports_and_repairs_a_drifted_fact():
    camps, contacts = _world()
    Activity.objects.create(
        contact=contacts[0], campaign=camps[0], kind=K.PAGE_VISIT, occurred_at=at("2025-02-02")
    )
    t = LifecycleTransition.objects.create(
        contact=contacts[0], from_stage="lead", to_stage="mql", at=at("2025-02-03")
    )
    lifecycle_facts_apply_transitions(transitions=[t])
    TransitionCredit.objects.update(campaign_id=camps[1].id)
    diff = lifecycle_facts_reconcile(day=date(2025, 2, 3))
    assert len(diff["transition_credits"]) == 2
    assert list(TransitionCredit.objects.values_list("campaign_id", flat=True)) == [camps[0].id]


@pytest.mark.django_db
def test_reconcile_repairs_drifted_durations_and_same_move_times():
    _camps, contacts = _world()
    moves = [
        LifecycleTransition.objects.create(
            contact=contacts[0], from_stage=a, to_stage=b, at=at("2025-02-03") + timedelta(hours=h)
        )
        for h, (a, b) in enumerate([("lead", "mql"), ("mql", "recycled"), ("recycled", "mql")])
    ]
    moves.append(
        LifecycleTransition.objects.create(
            contact=contacts[0], from_stage="mql", to_stage="recycled", at=at("2025-02-04")
        )
    )
    lifecycle_facts_apply_transitions(transitions=moves)
    right = sorted(TransitionFact.objects.values_list())
    assert TransitionFact.objects.get(transition=moves[3]).prev_pair_at == moves[1].at
    TransitionFact.objects.update(next_us=7, lead_us=None, prev_pair_at=None, from_stage="x")
    diff = lifecycle_facts_reconcile(day=date(2025, 2, 3))
    assert len(diff["transition_facts"]) == 4
    assert sorted(TransitionFact.objects.values_list()) == right


@pytest.mark.django_db
def test_the_daily_reconciliation_task_checks_the_lifecycle_facts():
    from reports.tasks import reconcile_rollups

    _camps, contacts = _world()
    t = LifecycleTransition.objects.create(
        contact=contacts[0], from_stage="lead", to_stage="mql", at=at("2025-02-03")
    )
    lifecycle_facts_apply_transitions(transitions=[t])
    out = reconcile_rollups(day="2025-02-03")
    assert out["transition_facts"] == out["transition_credits"] == out["deals"] == 0


@pytest.mark.django_db
def test_new_leads_per_day_follow_contact_creation_and_equal_the_contacts(settings):
    from crm.lifecycle import stages_initial
    from reports.lifecycle_facts import new_leads_rebuild
    from reports.metrics.leads import new_leads, new_leads_by_month, new_leads_qs
    from reports.models import NewLeadDaily

    settings.TIME_ZONE = "America/New_York"
    _world()  # three contacts without creation transitions (a bulk load): rebuilt below
    new_leads_rebuild()
    made = [
        Contact.objects.create(email=f"n{i}@x.example", created_at=at(when), created_suppressed=s)
        for i, (when, s) in enumerate(
            [("2025-03-01 03:00", False), ("2025-03-01 06:00", False), ("2025-03-02", True)]
        )
    ]
    stages_initial(contacts=made)  # publishes the creation transitions to the handlers
    incremental = sorted(NewLeadDaily.objects.exclude(new_leads=0).values_list("day", "new_leads"))
    new_leads_rebuild()
    assert sorted(NewLeadDaily.objects.values_list("day", "new_leads")) == incremental
    for q in [*PERIODS, ReportQuery(start=date(2025, 2, 28), end=date(2025, 3, 2))]:
        raw = dataclasses.replace(q, source="")
        assert new_leads(raw) == new_leads_qs(raw).count()
        assert sum(new_leads_by_month(raw).values()) == new_leads_qs(raw).count()


def _facts_equal_a_rebuild():
    incremental, cohort_rows = _snapshot(), _cohort_snapshot()
    lifecycle_facts_rebuild()
    assert _snapshot({row[0] for row in incremental[1]}) == incremental
    assert _cohort_snapshot() == cohort_rows


@pytest.mark.django_db
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batches=st.lists(st.lists(event, min_size=1, max_size=6), min_size=1, max_size=5),
    shifted=st.lists(st.booleans(), min_size=5, max_size=5),
    repeat=st.booleans(),
)
def test_appended_stage_changes_keep_the_facts_equal_to_a_rebuild(batches, shifted, repeat):
    """Mostly later batches (the append path on PostgreSQL: new rows, ``next_at`` of the
    earlier entries), some back-dated or at the same time (the rewrite), and a repeated run."""
    camps, contacts = _world()
    for i, batch in enumerate(batches):
        later = [(e[0], e[1], e[2], e[3] + 61 * i * shifted[i], *e[4:]) for e in batch]
        stored = [_store(ev, camps, contacts) for ev in later]
        moves = [s for s in stored if isinstance(s, LifecycleTransition)]
        acts = [s for s in stored if isinstance(s, Activity)]
        if moves:
            lifecycle_facts_apply_transitions(transitions=moves)
            if repeat:
                lifecycle_facts_apply_transitions(transitions=moves)
        if acts:
            lifecycle_facts_apply_activities(activities=acts)
    new_leads_rebuild()
    q = ReportQuery(start=date(2025, 1, 1), end=date(2026, 1, 1))
    assert cohort(q) == cohort_raw(q)
    assert conversions(q) == conversions_raw(q)
    _facts_equal_a_rebuild()


@pytest.mark.django_db
def test_a_later_stage_change_appends_its_fact_and_moves_the_earlier_next_entry():
    camps, contacts = _world()
    first = [
        LifecycleTransition.objects.create(contact=c, from_stage="", to_stage=s, at=at(day))
        for c, s, day in [
            (contacts[0], "mql", "2025-02-02"),
            (contacts[1], "mql", "2025-02-21"),
            (contacts[1], "sql", "2025-02-22"),
        ]
    ]
    lifecycle_facts_apply_transitions(transitions=first)
    later = [
        LifecycleTransition.objects.create(contact=c, from_stage="", to_stage=s, at=at(day))
        for c, s, day in [
            (contacts[0], "sql", "2025-02-10"),  # after every stored change: appended
            (contacts[0], "opportunity", "2025-02-11"),
            (contacts[1], "mql", "2025-02-22"),  # same time as a stored one: rewritten
        ]
    ]
    lifecycle_facts_apply_transitions(transitions=later)
    mql = TransitionFact.objects.get(transition=first[0])
    assert mql.next_at == at("2025-02-10")
    assert TransitionFact.objects.get(transition=later[0]).next_at == at("2025-02-11")
    _facts_equal_a_rebuild()


@pytest.mark.django_db
def test_appending_a_batch_reads_and_writes_in_three_queries_and_a_copy(
    django_assert_num_queries,
):
    from django.db import connection

    from reports.lifecycle_facts import transition_facts_append

    if connection.vendor != "postgresql":
        pytest.skip("the append path is PostgreSQL's (SQLite recomputes the contacts)")
    camps, contacts = _world()
    suppressed = contacts[2]  # no cohort counts to move: the append's statements alone
    mql = LifecycleTransition.objects.create(
        contact=suppressed, from_stage="", to_stage="mql", at=at("2025-02-06")
    )
    lifecycle_facts_apply_transitions(transitions=[mql])
    sql = LifecycleTransition.objects.create(
        contact=suppressed, from_stage="mql", to_stage="sql", at=at("2025-02-10")
    )
    # latest entries, creation times, next_at of the earlier mql (the new row's COPY is
    # not a captured query)
    with django_assert_num_queries(3):
        transition_facts_append(transitions=[sql])
    assert TransitionFact.objects.get(transition=mql).next_at == at("2025-02-10")
    facts = _snapshot()[0]
    lifecycle_facts_rebuild()
    assert _snapshot()[0] == facts
