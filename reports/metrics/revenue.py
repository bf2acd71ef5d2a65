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

from ..credit_facts import sales_cycle_pairs
from ..deal_facts import influenced_q
from ..models import WonDealFact
from ..query import ReportQuery, money, ratio
from .attribution import NO_CAMPAIGN
from .cost import _won_deals, attributed_revenue, missing_won_deals, to_money
from .lifecycle import entries

DAY = 86400.0


def influenced(q: ReportQuery, missing: list | None = None) -> dict:
    """METRICS.md line 70: won revenue of deals with ≥1 campaign touch before the deal was
    created ÷ all won revenue (deals closed in the period).

    Summed from the period's ``WonDealFact`` rows (reports.deal_facts); the won deals
    without one yet (``cost.missing_won_deals``, or ``missing`` when the caller read
    them) have their contact's activities probed.
    """
    agg = (
        WonDealFact.objects.filter(closed_at__gte=q.start_dt, closed_at__lt=q.end_dt)
        .filter(q.contact_q("contact__"))
        .aggregate(
            won_revenue=Sum("amount"),
            won_deals=Count("pk"),
            influenced_revenue=Sum("amount", filter=Q(influenced=True)),
        )
    )
    if missing is None:
        missing = missing_won_deals(q)
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


def sales_cycle(q: ReportQuery) -> dict:
    """METRICS.md line 53: median days from entering ``sql`` to becoming ``customer``.

    Over contacts that became customer in the period; the start is the latest entry into
    ``sql`` before that. Customers without an ``sql`` entry are left out. Read from the
    per-entry ``SalesCycleFact`` rows (reports.credit_facts), contact filters applied.
    """
    return _cycle(sales_cycle_pairs(q))


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
    missing = missing_won_deals(cq)  # read once for revenue and influence
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
        **influenced(cq, missing),
        **sales_cycle(q.contact_filters_only()),
        **open_pipeline(q.contact_filters_only()),
    }
    return rows, totals, channels
