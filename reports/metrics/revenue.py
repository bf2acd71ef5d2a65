"""Revenue (METRICS.md lines 53, 67–71): attributed revenue, influence, cycle, pipeline."""

from __future__ import annotations

import statistics
from collections import defaultdict
from fractions import Fraction

from django.db.models import (
    Count,
    OuterRef,
    Q,
    Subquery,
    Sum,
)

from crm.models import Campaign, Deal, LifecycleTransition, Stage

from ..credit_facts import sales_cycle_middle
from ..deal_facts import influenced_q
from ..query import ReportQuery, money, ratio
from .attribution import NO_CAMPAIGN
from .cost import _won_deals, attributed_revenue, missing_won_deals, to_money, won_facts
from .lifecycle import entries

DAY = 86400.0


def influenced(q: ReportQuery, missing: list | None = None, facts: dict | None = None) -> dict:
    """METRICS.md line 70: won revenue of deals with ≥1 campaign touch before the deal was
    created ÷ all won revenue (deals closed in the period).

    Summed from the period's ``WonDealFact`` rows (reports.deal_facts; ``facts``: their
    :func:`won_fact_totals` when the caller read them); the won deals without one yet
    (``cost.missing_won_deals``, or ``missing`` when the caller read them) have their
    contact's activities probed.
    """
    agg = dict(facts) if facts is not None else won_fact_totals(q)
    if missing is None:
        missing = missing_won_deals(q, known=agg["won_deals"])
    agg["won_revenue"] = (agg["won_revenue"] or 0) + sum(d[3] for d in missing)
    agg["won_deals"] += len(missing)
    agg["influenced_revenue"] = (agg["influenced_revenue"] or 0) + sum(
        d[3] for d in missing if d[4]
    )
    won, inf = agg["won_revenue"] or 0, agg["influenced_revenue"] or 0
    return {
        "won_revenue": money(won),
        "won_deals": agg["won_deals"],
        "influenced_revenue": money(inf),
        "marketing_influenced_revenue": ratio(inf, won),
    }


def won_fact_totals(q: ReportQuery) -> dict:
    """Won revenue, won deals and influenced revenue of the period's ``WonDealFact`` rows."""
    return won_facts(q).aggregate(
        won_revenue=Sum("amount"),
        won_deals=Count("pk"),
        influenced_revenue=Sum("amount", filter=Q(influenced=True)),
    )


def sales_cycle(q: ReportQuery) -> dict:
    """METRICS.md line 53: median days from entering ``sql`` to becoming ``customer``.

    Over contacts that became customer in the period; the start is the latest entry into
    ``sql`` before that. Customers without an ``sql`` entry are left out. Read from the
    per-entry ``SalesCycleFact`` rows (reports.credit_facts), contact filters applied: their
    number and the middle one or two by length (the median is theirs, as
    ``statistics.median`` of all lengths: float days are monotone in the exact lengths).
    """
    n, middle = sales_cycle_middle(q)
    days = [(at - s).total_seconds() / DAY for s, at in middle]
    return {
        "sales_cycle_days": round(statistics.median(days), 2) if days else None,
        "sales_cycle_n": n,
    }


def _cycle(pairs) -> dict:
    days = [(at - s).total_seconds() / DAY for s, at in pairs]
    return {
        "sales_cycle_days": round(statistics.median(days), 2) if days else None,
        "sales_cycle_n": len(days),
    }


def sales_cycle_raw(q: ReportQuery) -> dict:
    """:func:`sales_cycle` from the transitions (property-test reference)."""
    last_sql = (
        LifecycleTransition.objects.filter(
            contact_id=OuterRef("contact_id"), to_stage=Stage.SQL, at__lte=OuterRef("at")
        )
        .order_by("-at", "-id")
        .values("at")[:1]
    )
    pairs = (
        entries(q, Stage.CUSTOMER)
        .annotate(sql_at=Subquery(last_sql))
        .filter(sql_at__isnull=False)
        .values_list("sql_at", "at")
    )
    return _cycle(pairs)


def influenced_raw(q: ReportQuery) -> dict:
    """:func:`influenced` probing every deal's activities (property-test reference)."""
    agg = _won_deals(q).aggregate(
        won_revenue=Sum("amount"),
        won_deals=Count("id"),
        influenced_revenue=Sum("amount", filter=Q(influenced_q())),
    )
    won, inf = agg["won_revenue"] or 0, agg["influenced_revenue"] or 0
    return {
        "won_revenue": money(won),
        "won_deals": agg["won_deals"],
        "influenced_revenue": money(inf),
        "marketing_influenced_revenue": ratio(inf, won),
    }


def open_pipeline(q: ReportQuery) -> dict:
    """Open deals now (status open) created before the period end: count and amount."""
    agg = (
        Deal.objects.filter(status=Deal.Status.OPEN, created_at__lt=q.end_dt)
        .filter(q.contact_q("contact__"))
        .aggregate(n=Count("id"), amount=Sum("amount"))
    )
    return {"open_pipeline_deals": agg["n"], "open_pipeline": money(agg["amount"])}


def revenue_report(q: ReportQuery) -> tuple[list[dict], dict, list[dict]]:
    """Rows per campaign, totals, and rows per channel (METRICS.md lines 67–70)."""
    cq = q.contact_filters_only()
    facts = won_fact_totals(cq)
    missing = missing_won_deals(cq, known=facts["won_deals"])  # once for revenue and influence
    credit = attributed_revenue(cq, missing)
    campaigns = {
        c.id: c
        for c in Campaign.objects.filter(Q(id__in=[k for k in credit if k]) & q.campaign_q())
    }
    keys = sorted(campaigns, key=lambda i: campaigns[i].name.lower())
    if NO_CAMPAIGN in credit and not (q.campaign or q.channel):
        keys.append(NO_CAMPAIGN)
    rows = []
    by_channel: dict[str, Fraction] = defaultdict(Fraction)
    for cid in keys:
        camp = campaigns.get(cid)
        channel = camp.channel if camp else ""
        by_channel[channel] += credit[cid]
        rows.append(
            {
                "campaign_id": cid or None,
                "campaign": camp.name if camp else "(no campaign)",
                "channel": channel,
                "attributed_revenue": to_money(credit[cid]),
            }
        )
    channels = [
        {"channel": ch or "(no campaign)", "attributed_revenue": to_money(v)}
        for ch, v in sorted(by_channel.items())
    ]
    totals = {
        "attributed_revenue": to_money(sum((credit[k] for k in keys), Fraction(0))),
        **influenced(cq, missing, facts),
        **sales_cycle(q.contact_filters_only()),
        **open_pipeline(q.contact_filters_only()),
    }
    return rows, totals, channels
