"""Property: the cost-per-MQL and revenue figures served by the day rows and facts of
reports.credit_facts (new leads per campaign, credits per day, won-deal influence, sales
cycle) equal the figures computed from the contacts, transitions, touches and deals, for
random histories — recycled-then-requalified leads, changes with more touches than fold
into one row, acquisitions changed after creation, deals won with and without a stage
change, shared costs and periods without MQLs (zero denominators)."""

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from django.db.models import Count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm import events
from crm.models import Activity, CampaignCost, Contact, Deal, LifecycleTransition
from crm.models import ActivityKind as K
from reports.credit_facts import (
    DENOMINATOR,
    FOLD_N,
    campaign_leads_rebuild,
    credit_daily_rebuild,
    credit_facts_reconcile,
    fold_credits,
    new_leads_by_campaign,
    sales_cycle_apply_transitions,
    sales_cycle_rebuild,
    shape_numerators,
)
from reports.deal_facts import DAY_COLS, DAY_KEY, _normal, deal_days_rebuild, won_deal_facts_rebuild
from reports.lifecycle_facts import (
    lifecycle_facts_apply_activities,
    lifecycle_facts_apply_transitions,
)
from reports.metrics.attribution import MODELS, shape_credit
from reports.metrics.cost import (
    _sent_by_month,
    attributed_revenue,
    attributed_revenue_raw,
    cost_entries,
    cost_per_mql,
    cost_per_mql_by_month,
    cost_report,
    mql_credits_by_month,
    program_costs,
    stage_credits,
    stage_credits_raw,
)
from reports.metrics.lifecycle import months, new_leads_qs
from reports.metrics.revenue import influenced, influenced_raw, sales_cycle, sales_cycle_raw
from reports.models import (
    CampaignLeadDaily,
    CreditDaily,
    DealCreditDaily,
    EmailDaily,
    SalesCycleFact,
    WonDealFact,
)
from reports.query import ReportQuery
from reports.upkeep import upkeep_apply_activities
from tests.factories import CampaignFactory

from .factories import at

pytestmark = pytest.mark.django_db

BASE = at("2025-01-01")
STAGES = ["mql", "sql", "customer", "recycled", "mql", "opportunity", "sql"]
event = st.one_of(
    st.tuples(st.just("touch"), st.integers(0, 3), st.integers(0, 2), st.integers(0, 80)),
    st.tuples(st.just("burst"), st.integers(0, 3), st.integers(0, 80)),  # > FOLD_N touches
    st.tuples(st.just("move"), st.integers(0, 3), st.sampled_from(STAGES), st.integers(0, 80)),
    st.tuples(
        st.just("win"),
        st.integers(0, 3),
        st.integers(0, 80),
        st.integers(0, 20),
        st.booleans(),  # with the move to customer (deal_win), or as an existing customer
    ),
    st.tuples(st.just("acquire"), st.integers(0, 3), st.integers(-1, 2)),
)


def periods(model: str) -> list[ReportQuery]:
    return [
        ReportQuery(start=date(2025, 1, 1), end=date(2025, 4, 1), attribution=model),
        ReportQuery(start=date(2025, 1, 20), end=date(2025, 3, 3), attribution=model),
        ReportQuery(start=date(2025, 2, 10), end=date(2025, 2, 11), attribution=model),
        ReportQuery(start=date(2024, 1, 1), end=date(2024, 2, 1), attribution=model),  # empty
    ]


def _world():
    # one database for all examples: the rows the upkeep keeps go with the raw ones
    for model in (
        CreditDaily,
        CampaignLeadDaily,
        DealCreditDaily,
        EmailDaily,
        Deal,
        Activity,
        LifecycleTransition,
    ):
        model.objects.all().delete()
    Contact.objects.all().delete()
    CampaignCost.objects.all().delete()
    campaigns = [CampaignFactory(name=f"C{i}", channel=ch) for i, ch in enumerate("eep")]
    shared = CampaignCost.objects.create(
        campaign=campaigns[0],
        category="labour",
        amount=Decimal("90.00"),
        shared=True,
        period_start=date(2025, 1, 15),
        period_end=date(2025, 3, 14),
    )
    shared.shared_with.add(campaigns[1])
    by_sends = CampaignCost.objects.create(
        campaign=campaigns[1],
        category="labour",
        amount=Decimal("70.00"),
        shared=True,
        split=CampaignCost.Split.EMAILS_SENT,
        period_start=date(2025, 1, 25),
        period_end=date(2025, 3, 4),
    )
    by_sends.shared_with.add(campaigns[0], campaigns[2])
    CampaignCost.objects.create(
        campaign=campaigns[2],
        category="media",
        amount=Decimal("100.00"),
        period_start=date(2025, 2, 1),
        period_end=date(2025, 2, 28),
    )
    contacts = []
    for i, (day, suppressed, acquired) in enumerate(
        [("2025-01-02", False, 0), ("2025-01-20", False, None), ("2025-02-10", True, 1)]
        + [("2025-02-10 23:59", False, 2)]
    ):
        c = Contact.objects.create(
            email=f"c{i}@x.example",
            created_at=at(day),
            source="paid",
            created_suppressed=suppressed,
            acquired_by=None if acquired is None else campaigns[acquired],
        )
        events.contacts_changed([c.pk])  # what contacts_create_bulk publishes
        contacts.append(c)
    return campaigns, contacts


def _touch(contact, campaign, when, n=1, kind=K.PAGE_VISIT):
    acts = Activity.objects.bulk_create(
        [
            Activity(contact=contact, kind=kind, occurred_at=when, campaign=campaign)
            for _ in range(n)
        ]
    )
    upkeep_apply_activities(activities=acts)  # the activities-recorded handlers' upkeep
    lifecycle_facts_apply_activities(activities=acts)


def _move(contact, stage, when):
    t = LifecycleTransition.objects.create(
        contact=contact, from_stage="lead", to_stage=stage, at=when
    )
    # the stage-changed handlers' upkeep (reports.handlers and reports.credit_facts)
    lifecycle_facts_apply_transitions(transitions=[t])
    sales_cycle_apply_transitions([t])


def _apply(ev, campaigns, contacts):
    kind = ev[0]
    if kind == "touch":
        _, c, camp, day = ev
        sent = K.EMAIL_SENT if day % 2 else K.PAGE_VISIT  # sends split shared costs too
        _touch(contacts[c], campaigns[camp], BASE + timedelta(days=day, hours=2), kind=sent)
    elif kind == "burst":
        _, c, day = ev
        when = BASE + timedelta(days=day, hours=1)
        for camp in campaigns:
            _touch(contacts[c], camp, when, n=FOLD_N // 2)
    elif kind == "move":
        _, c, stage, day = ev
        _move(contacts[c], stage, BASE + timedelta(days=day, hours=3))
    elif kind == "win":
        _, c, day, length, with_move = ev
        closed = BASE + timedelta(days=day, hours=4)
        Deal.objects.create(
            contact=contacts[c],
            name="d",
            amount=Decimal("100.10") * (length + 1),
            status=Deal.Status.WON,
            created_at=closed - timedelta(days=length),
            closed_at=closed,
        )
        if with_move:
            _move(contacts[c], "customer", closed)
    else:
        _, c, camp = ev
        Contact.objects.filter(pk=contacts[c].pk).update(
            acquired_by=None if camp < 0 else campaigns[camp]
        )
        events.contacts_changed([contacts[c].pk], fields={"acquired_by"})


def _raw_new_leads(q):
    return dict(
        new_leads_qs(q)
        .filter(acquired_by__isnull=False)
        .values("acquired_by_id")
        .annotate(n=Count("id"))
        .values_list("acquired_by_id", "n")
        .order_by()
    )


def _tables():
    return (
        sorted(
            CampaignLeadDaily.objects.exclude(new_leads=0).values_list(
                "day", "campaign_id", "new_leads"
            )
        ),
        sorted(
            CreditDaily.objects.values_list(
                "to_stage",
                "day",
                "campaign_id",
                "n",
                "changes",
                "first",
                "last",
                "touches",
                "linear",
                "u_shaped",
            )
        ),
        sorted(SalesCycleFact.objects.values_list("transition_id", "contact_id", "at", "sql_at")),
        sorted(WonDealFact.objects.values_list("deal_id", "influenced")),
        _deal_days(),
    )


def _deal_days():
    """The deal day rows' values (limbs summed back: a rebuilt row holds the limbs of the
    sum, an upkept one the sum of each row's limbs)."""
    return _normal(
        {
            tuple(r[:3]): dict(zip(DAY_COLS, r[3:], strict=True))
            for r in DealCreditDaily.objects.values_list(*DAY_KEY, *DAY_COLS)
        }
    )


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(evs=st.lists(event, min_size=1, max_size=12))
def test_served_cost_and_revenue_figures_equal_the_raw_ones(evs):
    campaigns, contacts = _world()
    for ev in evs:
        _apply(ev, campaigns, contacts)
    for model in MODELS:
        for i, q in enumerate(periods(model)):
            assert stage_credits(q, model) == stage_credits_raw(q, model), q
            assert mql_credits_by_month(q) == mql_credits_by_month(q, served=False), q
            assert attributed_revenue(q) == attributed_revenue_raw(q), q
            if i and model != "u_shaped":
                continue  # whole reports: every model over the long period, one over all
            filtered = ReportQuery(**{**q.__dict__, "source": "paid"})  # every contact: raw
            assert cost_per_mql(q) == cost_per_mql(filtered), q
            assert cost_per_mql_by_month(q) == cost_per_mql_by_month(filtered), q
            # the report's shared reads (cost entries, sends per month summed) change nothing
            assert cost_report(q) == (*cost_per_mql(q), cost_per_mql_by_month(q)), q
    for q in periods("last_touch"):
        entries = cost_entries(q)
        sent = _sent_by_month(q, entries)
        for _, s, e in months(q):
            mq = ReportQuery(start=s.date(), end=e.date())
            assert program_costs(mq, entries, sent.get(s.date(), {})) == program_costs(mq)
        assert influenced(q) == influenced_raw(q), q
        assert sales_cycle(q) == sales_cycle_raw(q), q
        assert new_leads_by_campaign(q.start, q.end) == _raw_new_leads(q), q
    kept = _tables()
    campaign_leads_rebuild()
    credit_daily_rebuild()
    sales_cycle_rebuild()
    won_deal_facts_rebuild()
    deal_days_rebuild()
    assert _tables() == kept
    diff = credit_facts_reconcile(contact_ids=[c.pk for c in contacts])
    assert not any(diff.values()), diff


def test_reconcile_reports_and_repairs_drifted_day_rows():
    campaigns, contacts = _world()
    _touch(contacts[0], campaigns[0], BASE + timedelta(days=3))
    _move(contacts[0], "mql", BASE + timedelta(days=4))
    CreditDaily.objects.update(changes=5)
    CampaignLeadDaily.objects.exclude(campaign_id=0).update(new_leads=9)
    diff = credit_facts_reconcile(contact_ids=[])
    assert diff["credit_days"]
    assert diff["campaign_leads"]
    assert not any(credit_facts_reconcile(contact_ids=[]).values())


def test_folded_numerators_give_each_models_exact_credit():
    """Every shape up to FOLD_N touches, folded (n 0) or not (its n kept), is credited as
    ``attribution.shape_credit`` says, under every model."""
    for n in range(0, FOLD_N + 1):
        for t in range(0 if n == 0 else 1, n + 1):
            for f, lt in ((0, 0), (0, 1), (1, 0), (1, 1)):
                folded = ("s", 7, 0, 1, f, lt, t, *shape_numerators(n, t, f, lt, 1, DENOMINATOR))
                kept = ("s", 7, n, 1, f, lt, t, 0, 0)
                for model in MODELS:
                    want = shape_credit(model, n, t, f, lt, 1)
                    for row in (folded, kept) if n else (folded,):
                        got = fold_credits([row], model, 1).get(("s",), {}).get(7)
                        assert got == (want if want or model in ("linear", "u_shaped") else None)
    assert fold_credits([("s", 7, 40, 1, 1, 0, 3, 0, 0)], "linear", 1) == {
        ("s",): {7: Fraction(3, 40)}
    }
