"""Trends of a register item (METRICS.md, "Trends and review").

Short-term: the metric for the current period (since the last review, or since the item
started) against the previous period of equal length, as an absolute and a relative
change, with the changes made to the item in between. Long-term: the metric per calendar
quarter (site time zone) over the last eight quarters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from .changes import changes
from .models import ReviewItem
from .snapshots import METRIC_KEYS, snapshot

MIN_DAYS_OF_DATA = 30


@dataclass
class Change:
    metric: str
    current: float | None
    previous: float | None

    @property
    def absolute(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous

    @property
    def relative(self) -> float | None:
        """Relative change; ``None`` when the previous figure is zero or missing."""
        if self.absolute is None or not self.previous:
            return None
        return self.absolute / abs(self.previous)


def short_term(item: ReviewItem, *, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    start = item.last_reviewed_at or item.started_at
    if start >= now:
        start = now - timedelta(days=MIN_DAYS_OF_DATA)
    length = now - start
    current = snapshot(item, start=start, end=now)
    previous = snapshot(item, start=start - length, end=start)
    return {
        "start": start,
        "end": now,
        "too_little_data": length < timedelta(days=MIN_DAYS_OF_DATA),
        "changes": [
            Change(key, current.get(key), previous.get(key))
            for key in METRIC_KEYS[item.type]
            if key in current
        ],
        "edits": changes(item, start=start - length, end=now),
    }


def quarter_start(moment: datetime) -> datetime:
    local = timezone.localtime(moment)
    month = 3 * ((local.month - 1) // 3) + 1
    return local.replace(month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def long_term(item: ReviewItem, *, now: datetime | None = None, quarters: int = 8) -> list[dict]:
    """Per-quarter figures, oldest first; the current quarter is partial (up to now)."""
    now = now or timezone.now()
    starts = [quarter_start(now)]
    for _ in range(quarters - 1):
        starts.insert(0, quarter_start(starts[0] - timedelta(days=1)))
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else now
        local = timezone.localtime(start)
        out.append(
            {
                "label": f"{local.year} Q{(local.month - 1) // 3 + 1}",
                "start": start,
                "end": end,
                "figures": snapshot(item, start=start, end=end),
            }
        )
    return out


DASHBOARD_TREND_METRICS = {
    "new_leads": "New leads",
    "mqls": "MQLs",
    "sqls": "SQLs",
    "mql_acceptance_rate": "MQL acceptance rate",
    "cost_per_mql": "Cost per MQL",
    "click_through_rate": "CTR",
    "unsubscribe_rate": "Unsubscribe rate",
    "won_revenue": "Won revenue",
}


def dashboard_long_term(*, now: datetime | None = None, quarters: int = 8) -> dict:
    """The dashboard metrics per calendar quarter over the last eight quarters (METRICS.md).

    Each quarter is a report period of its own, computed with the reports' definitions
    (``reports.registry.dashboard_totals``); the current quarter runs up to today.
    """
    from ..query import ReportQuery
    from ..registry import dashboard_totals

    now = now or timezone.now()
    starts = [quarter_start(now)]
    for _ in range(quarters - 1):
        starts.insert(0, quarter_start(starts[0] - timedelta(days=1)))
    labels, series = [], {key: [] for key in DASHBOARD_TREND_METRICS}
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        first = start.date()
        last = end.date() if end else timezone.localdate(now) + timedelta(days=1)
        totals = dashboard_totals(ReportQuery(start=first, end=last))
        labels.append(f"{start.year} Q{(start.month - 1) // 3 + 1}")
        for key in DASHBOARD_TREND_METRICS:
            value = totals.get(key)
            series[key].append(None if value is None else float(value))
    return {
        "labels": labels,
        "rows": [
            {"key": key, "label": label, "values": series[key]}
            for key, label in DASHBOARD_TREND_METRICS.items()
        ],
    }
