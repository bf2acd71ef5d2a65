"""Customers (METRICS.md "Customers", lines 92–101)."""

from __future__ import annotations

from django.db.models import (
    Avg,
    CharField,
    Count,
    DecimalField,
    IntegerField,
    Min,
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

from ..query import ReportQuery, money, ratio
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


def rates(q: ReportQuery) -> dict:
    """Acquisition, churn and retention rate (METRICS.md lines 96–98).

    Choices: "open at the period start" = created before the start and, by the latest
    transition before the start, in ``lead``/``mql``/``sql``/``opportunity`` (recycled
    contacts are not open leads); numerators are unique contacts.
    """
    at_start = (
        Contact.objects.filter(created_at__lt=q.start_dt)
        .filter(q.contact_q())
        .annotate(stage_then=_stage_at(q.start_dt))
        .aggregate(
            open_leads=Count("id", filter=Q(stage_then__in=OPEN_STAGES)),
            customers_at_start=Count("id", filter=Q(stage_then=Stage.CUSTOMER)),
        )
    )
    new_customers = entries(q, Stage.CUSTOMER).aggregate(n=Count("contact_id", distinct=True))["n"]
    churned = entries(q, Stage.CHURNED).aggregate(n=Count("contact_id", distinct=True))["n"]
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
    """
    won = (
        Deal.objects.filter(contact_id=OuterRef("id"), status=Deal.Status.WON)
        .values("contact_id")
        .annotate(s=Sum("amount"))
        .values("s")[:1]
    )
    first_customer = (
        LifecycleTransition.objects.filter(contact_id=OuterRef("id"), to_stage=Stage.CUSTOMER)
        .values("contact_id")
        .annotate(m=Min("at"))
        .values("m")[:1]
    )
    rows = (
        Contact.objects.filter(q.contact_q())
        .annotate(started=Subquery(first_customer))
        .filter(started__gte=q.start_dt, started__lt=q.end_dt)
        .annotate(cohort=month_of("started", q))
        .values("cohort")
        .annotate(
            customers=Count("id"),
            revenue=Sum(Coalesce(Subquery(won), Value(0), output_field=DecimalField())),
        )
    )
    by = {r["cohort"]: r for r in rows}
    out = []
    for first, s, _ in months(q):
        r = by.get(s, {"customers": 0, "revenue": 0})
        out.append(
            {
                "cohort": first.strftime("%Y-%m"),
                "customers": r["customers"],
                "won_revenue": money(r["revenue"]),
                "customer_lifetime_value": (
                    money(r["revenue"] / r["customers"]) if r["customers"] else None
                ),
            }
        )
    return out


def csat(q: ReportQuery) -> dict:
    """METRICS.md line 100: share of answers 4–5 and the mean (1–5 answers in the period).

    Answers outside 1–5 are ignored. Every answer counts (not unique contacts).
    """
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
