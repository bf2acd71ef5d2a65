"""A program's figures for a review period, from the reports' own metric functions.

Review periods run from the last review to now; the reports work in whole site-time-zone
days, so a period is widened to the days it touches ([first day, day after the last)).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from ..metrics.cost import cost_per_mql
from ..metrics.email import email_by_campaign
from ..query import ReportQuery, site_tz

EMAIL_KEYS = [
    "delivered",
    "unique_clicks",
    "click_through_rate",
    "unsubscribed",
    "unsubscribe_rate",
    "conversions",
    "conversion_rate",
]
COST_KEYS = ["mqls", "program_cost", "cost_per_mql"]


def report_query(start: datetime, end: datetime, **filters) -> ReportQuery:
    first = timezone.localtime(start, site_tz()).date()
    last = timezone.localtime(end - timedelta(microseconds=1), site_tz()).date()
    return ReportQuery(start=first, end=max(last, first) + timedelta(days=1), **filters)


def campaign_figures(*, campaign_id: int, start: datetime, end: datetime) -> dict:
    q = report_query(start, end, campaign=campaign_id)
    email_rows, _ = email_by_campaign(q)
    cost_rows, _ = cost_per_mql(q)
    email = next((r for r in email_rows if r["campaign_id"] == campaign_id), {})
    cost = next((r for r in cost_rows if r["campaign_id"] == campaign_id), {})
    figures = {k: email.get(k, 0 if not k.endswith("rate") else None) for k in EMAIL_KEYS}
    figures.update({k: cost.get(k) for k in COST_KEYS})
    figures["mqls"] = figures["mqls"] or 0
    # JSON snapshots: money as a float rounded to cents.
    for k in ("program_cost", "cost_per_mql"):
        if figures[k] is not None:
            figures[k] = float(figures[k])
    return figures
