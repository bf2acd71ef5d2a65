"""Property: stage counts served by the stage day rows (reports.stage_facts) equal the counts
computed from the transitions, for random histories (re-entries, same-instant ties,
back-dated imports, history before creation) and periods; merges and deletions, which
publish no stage change, are repaired by the daily reconciliation."""

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Contact, LifecycleTransition
from crm.services import contact_merge
from reports.metrics import customers, leads
from reports.metrics.funnel import flow, flow_raw
from reports.models import StageEntryDaily, StagePopulationDaily
from reports.query import ReportQuery
from reports.stage_facts import (
    stage_facts_apply_transitions,
    stage_facts_rebuild,
    stage_facts_reconcile,
)

from .factories import at

BASE = date(2025, 2, 1)
STAGES = ["lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified", "churned"]
FROM = ["lead", "mql", "recycled", "customer"]  # stored from_stage (acceptance reads mql)
event = st.one_of(
    # A change of contact i at day d, hour h (the same day and hour twice: a tie).
    st.tuples(
        st.just("move"),
        st.integers(0, 4),
        st.sampled_from(FROM),
        st.sampled_from(STAGES),
        st.integers(0, 40),
        st.sampled_from([0, 9, 23]),
    ),
    # A batch: the same change for several contacts at one instant.
    st.tuples(
        st.just("batch"),
        st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True),
        st.sampled_from(STAGES),
        st.integers(0, 40),
    ),
    st.tuples(st.just("merge"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("delete"), st.integers(0, 4)),
)
period = st.tuples(st.integers(-3, 40), st.integers(1, 45))


def _world() -> list[Contact]:
    for model in (StageEntryDaily, StagePopulationDaily, LifecycleTransition, Contact):
        model.objects.all().delete()
    contacts = []
    # (created day, first transition's day offset from creation): 0 is the creation
    # transition every creation path records; > 0 leaves the contact untouched until then;
    # < 0 is history imported from before the contact was created here.
    for i, (day, first) in enumerate([(0, 0), (3, 0), (5, 4), (8, -6), (12, 0)]):
        c = Contact.objects.create(
            email=f"s{i}@x.example",
            created_at=at("2025-02-01 10:00") + timedelta(days=day),
            source="paid",
        )
        t = LifecycleTransition.objects.create(
            contact=c, from_stage="", to_stage="lead", at=c.created_at + timedelta(days=first)
        )
        stage_facts_apply_transitions(transitions=[t])
        contacts.append(c)
    return contacts


def _alive(contacts, i):
    return Contact.objects.filter(pk=contacts[i].pk).first()


def _apply(ev, contacts) -> bool:
    """Apply an event; True when it bypasses the stage-changed upkeep (merge, delete)."""
    kind = ev[0]
    if kind == "move":
        _, i, from_stage, to_stage, day, hour = ev
        c = _alive(contacts, i)
        if c is None:
            return False
        t = LifecycleTransition.objects.create(
            contact=c,
            from_stage=from_stage,
            to_stage=to_stage,
            at=at("2025-02-01") + timedelta(days=day, hours=hour),
        )
        stage_facts_apply_transitions(transitions=[t])
    elif kind == "batch":
        _, who, to_stage, day = ev
        alive = [c for c in (_alive(contacts, i) for i in who) if c is not None]
        ts = LifecycleTransition.objects.bulk_create(
            [
                LifecycleTransition(
                    contact=c,
                    from_stage="mql",
                    to_stage=to_stage,
                    at=at("2025-02-01") + timedelta(days=day, hours=12),
                )
                for c in alive
            ]
        )
        assert all(t.pk for t in ts)
        stage_facts_apply_transitions(transitions=ts)
    elif kind == "merge":
        keep, dup = _alive(contacts, ev[1]), _alive(contacts, ev[2])
        if keep is None or dup is None or keep.pk == dup.pk:
            return False
        contact_merge(keep=keep, duplicate=dup)
        return True
    else:
        c = _alive(contacts, ev[1])
        if c is None:
            return False
        c.delete()
        return True
    return False


def _query(p) -> ReportQuery:
    start = BASE + timedelta(days=p[0])
    return ReportQuery(start=start, end=start + timedelta(days=p[1]))


def _served(q: ReportQuery) -> tuple:
    return (
        flow(q),
        leads._lifecycle_counts(q),
        leads.mqls(q),
        leads.sqls(q),
        leads.acceptance(q),
        customers.rates(q),
    )


def _raw(q: ReportQuery) -> tuple:
    # Every contact of the world is "paid": under that filter the reports take their raw
    # paths (transitions and contacts) over the same contacts.
    paid = replace(q, source="paid")
    return (
        flow_raw(q),
        leads.lifecycle_counts_raw(q),
        leads.mqls(paid),
        leads.sqls(paid),
        leads.acceptance(paid),
        customers.rates(paid),
    )


def _rows():
    return (
        sorted(
            StageEntryDaily.objects.exclude(entries=0).values_list(
                "day", "from_stage", "to_stage", "prev_day", "entries"
            )
        ),
        sorted(
            (d, s, e, lft)
            for d, s, e, lft in StagePopulationDaily.objects.values_list(
                "day", "stage", "entered", "left"
            )
            if e or lft
        ),
    )


@pytest.mark.django_db
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(event, min_size=1, max_size=10), periods=st.lists(period, min_size=3))
def test_stage_day_rows_serve_the_raw_counts_for_random_histories(events, periods):
    contacts = _world()
    bypassed = False
    for ev in events:
        bypassed |= _apply(ev, contacts)
    if bypassed:  # merges and deletions: the daily reconciliation repairs every day
        for d in range(-10, 45):
            stage_facts_reconcile(day=BASE + timedelta(days=d))
    for d in range(-10, 45):  # nothing left to repair
        assert stage_facts_reconcile(day=BASE + timedelta(days=d)) == {"stage_facts": {}}
    for p in [*periods, (-10, 60)]:
        q = _query(p)
        assert _served(q) == _raw(q), q
    kept = _rows()
    stage_facts_rebuild()
    assert _rows() == kept


@pytest.mark.django_db
def test_populations_count_contacts_once_created_and_by_their_latest_stage(
    django_assert_num_queries,
):
    from tests.factories import ContactFactory

    from .factories import move

    march = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))
    lead = ContactFactory(created_at=at("2025-02-01"))
    move(lead, "", "lead", "2025-02-01")
    customer = ContactFactory(created_at=at("2025-02-01"))
    move(customer, "", "lead", "2025-02-01")
    move(customer, "lead", "customer", "2025-02-10")
    move(customer, "customer", "churned", "2025-02-20")
    move(customer, "churned", "customer", "2025-03-05")  # back, not new: first was Feb 10
    recycled = ContactFactory(created_at=at("2025-02-01"))
    move(recycled, "", "lead", "2025-02-01")
    move(recycled, "lead", "mql", "2025-02-28 23:59")
    move(recycled, "mql", "recycled", "2025-02-28 23:59")  # same instant: recycled at start
    imported = ContactFactory(created_at=at("2025-03-01 00:00"))  # created at the start: out
    move(imported, "", "customer", "2025-01-15")  # history from before it was created here
    late = ContactFactory(created_at=at("2025-02-15"))  # untouched until its first change
    move(late, "", "mql", "2025-03-10")
    with django_assert_num_queries(2):  # populations at the start, unique entries
        got = customers.rates(march)
    assert (got["open_leads"], got["customers_at_start"]) == (2, 0)  # lead, late; churned
    assert got["new_customers"] == 1  # unique contacts entering customer in March
    assert got == customers.rates(replace(march, source=lead.source))  # the raw path
    assert customers.clv_by_cohort(march)[0]["customers"] == 0  # first became one in Feb


@pytest.mark.django_db
def test_acceptance_counts_each_decision_and_mqls_each_contact_once(django_assert_num_queries):
    from tests.factories import ContactFactory

    from .factories import move

    march = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))
    c = ContactFactory(created_at=at("2025-02-01"))
    move(c, "lead", "mql", "2025-02-27")  # before the period: not an MQL of March …
    move(c, "mql", "recycled", "2025-03-02")  # … but decided in March
    move(c, "recycled", "mql", "2025-03-04")
    move(c, "mql", "sql", "2025-03-06")
    with django_assert_num_queries(3):
        got = (leads.mqls(march), leads.sqls(march), leads.acceptance(march))
    assert got[0] == {"mql_entries": 1, "mqls": 1}
    assert got[1] == 1
    assert (got[2]["decided"], got[2]["accepted"]) == (2, 1)
    paid = replace(march, source=c.source)
    assert got == (leads.mqls(paid), leads.sqls(paid), leads.acceptance(paid))
