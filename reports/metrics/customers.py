"""Customers (METRICS.md "Customers", lines 92–101)."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import (
    Avg,
    CharField,
    Count,
    DecimalField,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce

from crm.models import Activity, ActivityKind, Contact, Deal, LifecycleTransition, Stage
from crm.models.choices import OPEN_STAGES

from ..csat_facts import csat_totals
from ..models import TransitionFact
from ..query import ReportQuery, money, ratio
from ..stage_facts import UNTOUCHED, entry_counts, population_at
from .lifecycle import entries, month_of, months


def _stage_at(moment):
    """The stage of the latest transition before ``moment`` ("lead" if none)."""
    return Coalesce(
        Subquery(
            LifecycleTransition.objects.filter(contact_id=OuterRef("id"), at__lt=moment)
            .order_by("-at", "-id")
            .values("to_stage")[:1]
        ),
        Value(Stage.LEAD),
        output_field=CharField(),
    )


def _stages_at_start(q: ReportQuery) -> dict:
    """Open leads and customers at the period start, set-based (was one probe per contact).

    A contact's stage then is its latest transition before the start (ties by id), or
    ``lead`` without one: latest transitions are those with no later one before the start;
    contacts without any transition before the start count as open leads.
    """
    before = LifecycleTransition.objects.filter(at__lt=q.start_dt)
    later = before.filter(contact_id=OuterRef("contact_id")).filter(
        Q(at__gt=OuterRef("at")) | Q(at=OuterRef("at"), id__gt=OuterRef("id"))
    )
    latest = (
        before.filter(contact__created_at__lt=q.start_dt)
        .filter(q.contact_q("contact__"))
        .exclude(Exists(later))
        .aggregate(
            open_leads=Count("id", filter=Q(to_stage__in=OPEN_STAGES)),
            customers_at_start=Count("id", filter=Q(to_stage=Stage.CUSTOMER)),
        )
    )
    untouched = (
        Contact.objects.filter(created_at__lt=q.start_dt)
        .filter(q.contact_q())
        .exclude(Exists(before.filter(contact_id=OuterRef("id"))))
        .count()
    )
    return {
        "open_leads": latest["open_leads"] + untouched,
        "customers_at_start": latest["customers_at_start"],
    }


def _stages_at_start_facts(q: ReportQuery) -> dict:
    """:func:`_stages_at_start` from ``StagePopulationDaily`` (reports.stage_facts): the
    contacts in each stage at the period start are the day rows before it summed (a read
    of days × stages rows instead of every transition before the start)."""
    population = population_at(q.start)
    return {
        "open_leads": sum(population.get(s, 0) for s in (UNTOUCHED, *OPEN_STAGES)),
        "customers_at_start": population.get(Stage.CUSTOMER, 0),
    }


def rates(q: ReportQuery) -> dict:
    """Acquisition, churn and retention rate (METRICS.md lines 96–98).

    Choices: "open at the period start" = created before the start and, by the latest
    transition before the start, in ``lead``/``mql``/``sql``/``opportunity`` (recycled
    contacts are not open leads); numerators are unique contacts.

    Without filters, from day rows (reports.stage_facts: stage populations at the start,
    unique entries into ``customer``/``churned``); with any, from the transitions.
    """
    if q.has_contact_filters or q.campaign or q.channel:
        at_start = _stages_at_start(q)
        new_customers = entries(q, Stage.CUSTOMER).aggregate(n=Count("contact_id", distinct=True))[
            "n"
        ]
        churned = entries(q, Stage.CHURNED).aggregate(n=Count("contact_id", distinct=True))["n"]
    else:
        at_start = _stages_at_start_facts(q)
        counts = entry_counts(q, [Stage.CUSTOMER, Stage.CHURNED])
        new_customers = counts.get(Stage.CUSTOMER, {}).get("contacts", 0)
        churned = counts.get(Stage.CHURNED, {}).get("contacts", 0)
    churn = ratio(churned, at_start["customers_at_start"])
    return {
        **at_start,
        "new_customers": new_customers,
        "acquisition_rate": ratio(new_customers, at_start["open_leads"]),
        "churned": churned,
        "churn_rate": churn,
        "retention_rate": None if churn is None else 1 - churn,
    }


def clv_by_cohort(q: ReportQuery) -> list[dict]:
    """METRICS.md line 99: average won revenue per customer, by customer start month.

    A customer's start is its first entry into ``customer``; cohorts are the months of the
    period; revenue is all won deals of the contact, whenever closed.

    Read from ``TransitionFact`` (its ``(to_stage, at)`` index): a contact's first entry
    into ``customer`` is its row without a previous one (``prev_same_at`` null), so only
    the period's first entries are read — not every customer transition grouped per
    contact — and grouped per month in the database with each one's won revenue (a sum
    through the deals' contact index): a handful of rows back instead of every new
    customer and its deals (~0.3 s of Python per view at 1M contacts for 365 days).
    """
    won = (
        Deal.objects.filter(contact_id=OuterRef("contact_id"), status=Deal.Status.WON)
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("amount"))
        .values("s")
    )
    by_month = {
        month: (customers, won_revenue)
        for month, customers, won_revenue in TransitionFact.objects.filter(
            to_stage=Stage.CUSTOMER,
            prev_same_at__isnull=True,
            at__gte=q.start_dt,
            at__lt=q.end_dt,
        )
        .filter(q.contact_q("contact__"))
        .annotate(
            month=month_of("at", q),
            revenue=Coalesce(Subquery(won), Value(Decimal(0)), output_field=DecimalField()),
        )
        .values("month")
        .annotate(customers=Count("contact_id"), won_revenue=Sum("revenue"))
        .values_list("month", "customers", "won_revenue")
        .order_by()
    }
    out = []
    for first, s, _ in months(q):
        n, total = by_month.get(s, (0, 0))
        total = total or 0
        out.append(
            {
                "cohort": first.strftime("%Y-%m"),
                "customers": n,
                "won_revenue": money(total),
                "customer_lifetime_value": money(total / n) if n else None,
            }
        )
    return out


def csat(q: ReportQuery) -> dict:
    """METRICS.md line 100: share of answers 4–5 and the mean (1–5 answers in the period).

    Answers outside 1–5 are ignored. Every answer counts (not unique contacts). Served by
    the CSAT day rows (reports.csat_facts) without filters; a contact filter, or a
    campaign/channel one (the answering contacts' acquiring campaign, as :func:`rates`),
    reads the answers.
    """
    if not (q.has_contact_filters or q.campaign or q.channel):
        answers, satisfied, total = csat_totals(q.start, q.end)
        return {
            "csat_answers": answers,
            "csat": ratio(satisfied, answers),
            "csat_mean": round(total / answers, 2) if answers else None,
        }
    return csat_raw(q)


def csat_raw(q: ReportQuery) -> dict:
    """:func:`csat` from the answer activities (contact filters; property-test reference)."""
    agg = (
        Activity.objects.filter(
            kind=ActivityKind.CSAT_ANSWER, occurred_at__gte=q.start_dt, occurred_at__lt=q.end_dt
        )
        .filter(q.contact_q("contact__"))
        .annotate(answer=Cast(KT("details__answer"), IntegerField()))
        .filter(answer__gte=1, answer__lte=5)
        .aggregate(
            csat_answers=Count("id"),
            satisfied=Count("id", filter=Q(answer__gte=4)),
            csat_mean=Avg("answer"),
        )
    )
    return {
        "csat_answers": agg["csat_answers"],
        "csat": ratio(agg["satisfied"], agg["csat_answers"]),
        "csat_mean": round(agg["csat_mean"], 2) if agg["csat_mean"] is not None else None,
    }
