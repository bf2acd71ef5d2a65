"""Reading the register: next due dates, overdue flags and the scoring alert."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Prefetch
from django.utils import timezone

from .models import Review, ReviewItem

ACCEPTANCE_ALERT_BELOW = 0.5
ACCEPTANCE_WINDOW_DAYS = 90
# A review made in answer to the alert quiets it this long, while the 90-day rate recovers.
ALERT_SNOOZE_DAYS = 30


@dataclass
class RegisterRow:
    item: ReviewItem
    next_due: datetime
    overdue: bool
    last_review: Review | None
    alert: str = ""

    @property
    def days_overdue(self) -> int:
        return max(0, (timezone.now() - self.next_due).days)


def mql_acceptance_rate(*, start: datetime, end: datetime) -> float | None:
    """MQL acceptance rate over the site-time-zone days [start, end) touch (METRICS.md).

    Delegates to the leads report so the register and the reports never disagree.
    """
    from ..metrics.leads import acceptance
    from .program_metrics import report_query

    return acceptance(report_query(start, end))["mql_acceptance_rate"]


def scoring_alert(now: datetime | None = None) -> str:
    """The alert that makes the scoring rule set due at once, or "" when acceptance is fine."""
    now = now or timezone.now()
    rate = mql_acceptance_rate(start=now - timedelta(days=ACCEPTANCE_WINDOW_DAYS), end=now)
    if rate is not None and rate < ACCEPTANCE_ALERT_BELOW:
        return (
            f"MQL acceptance rate is {rate:.0%} over the last {ACCEPTANCE_WINDOW_DAYS} days "
            f"(below {ACCEPTANCE_ALERT_BELOW:.0%}): review the scoring rules now."
        )
    return ""


def register_rows(
    *, now: datetime | None = None, item_type: str | None = None
) -> list[RegisterRow]:
    """Every active item with its next due date, in two queries plus the scoring alert."""
    now = now or timezone.now()
    items = ReviewItem.objects.filter(active=True).select_related("owner")
    if item_type:
        items = items.filter(type=item_type)
    items = items.prefetch_related(
        Prefetch(
            "reviews", queryset=Review.objects.select_related("reviewer").order_by("reviewed_at")
        )
    )
    alert = scoring_alert(now)
    rows = []
    for item in items:
        reviews = list(item.reviews.all())
        next_due = item.next_due()
        row_alert = ""
        if item.type == ReviewItem.Type.SCORING and alert:
            # Due at once, unless it was reviewed recently (in answer to this alert).
            last = reviews[-1].reviewed_at if reviews else None
            if last is None or last < now - timedelta(days=ALERT_SNOOZE_DAYS):
                next_due = min(next_due, now)
                row_alert = alert
        rows.append(
            RegisterRow(
                item=item,
                next_due=next_due,
                overdue=next_due <= now,
                last_review=reviews[-1] if reviews else None,
                alert=row_alert,
            )
        )
    return rows


def overdue_rows(*, now: datetime | None = None) -> list[RegisterRow]:
    return [row for row in register_rows(now=now) if row.overdue]
