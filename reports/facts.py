"""Report facts beside the campaign rollups of ``reports.rollups``: per nurture step email
counts (``EmailStepDaily``), kept current per activity batch, rebuilt and reconciled.

Why a separate table: the email report's per-step table used to join every email event of
the period to ``nurture.EmailSend`` and test "first event of its email" per row (seconds at
20k contacts). The step rows follow the same per-email first-event rule as ``EmailDaily``
(see reports.models), restricted to emails that belong to an ``EmailSend``, so they sum
over any period exactly like the raw query (property-tested in tests/reports). Per batch
they get the same per-email deltas as the campaign rollup (reports.upkeep), mapped to steps.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from django.db import transaction
from django.db.models import OuterRef, Subquery

from crm.models import Activity

from .models import EmailStepDaily
from .query import day_start
from .rollups import (
    EMAIL_KEY,
    STEP_FIELDS,
    email_activities,
    email_fact_aggregates,
    fact_rows,
    replace_rows,
    snapshot,
    snapshot_diff,
)

log = logging.getLogger(__name__)
__all__ = ["STEP_FIELDS", "facts_apply_activities", "facts_rebuild", "facts_reconcile"]


def _send_model():
    try:
        from nurture.models import EmailSend
    except ImportError:  # pragma: no cover - nurture not installed
        return None
    return EmailSend


def step_activities(start_dt, end_dt, *, campaign_ids=None, contact_q=None):
    """Email-rollup activities of the period whose email is a nurture send, with ``step``."""
    send = _send_model()
    if send is None:  # pragma: no cover
        return Activity.objects.none()
    step = Subquery(send.objects.filter(message_id=OuterRef("message_id")).values("step_id")[:1])
    return (
        email_activities(start_dt, end_dt, campaign_ids=campaign_ids, contact_q=contact_q)
        .exclude(message_id="")
        .annotate(step=step)
        .filter(step__isnull=False)
    )


def step_aggregates() -> dict:
    return {k: v for k, v in email_fact_aggregates().items() if k in STEP_FIELDS}


def _replace_steps(start_day: date, end_day: date) -> None:
    qs = step_activities(day_start(start_day), day_start(end_day))
    rows = fact_rows(EmailStepDaily, qs, fields=STEP_FIELDS, by_step=True)
    replace_rows(EmailStepDaily, rows, start_day, end_day, fields=STEP_FIELDS)


def facts_rebuild(*, start_day: date, end_day: date, chunk_days: int = 7) -> None:
    """Rebuild the step facts for the days ``[start_day, end_day)`` from raw data."""
    day = start_day
    while day < end_day:
        stop = min(end_day, day + timedelta(days=chunk_days))
        with transaction.atomic():
            _replace_steps(day, stop)
        day = stop


def facts_apply_activities(*, activities) -> None:
    """Bring the step facts up to date with a stored batch (see reports.upkeep, which the
    handler calls once for both the campaign rollup and the step facts)."""
    from .upkeep import upkeep_apply_activities

    upkeep_apply_activities(activities=activities, email_rollup=False)


def facts_reconcile(*, day: date) -> dict:
    """Rebuild ``day``'s step facts from raw data and return (and log) what differed."""
    end = day + timedelta(days=1)
    before = snapshot(EmailStepDaily, day, end, EMAIL_KEY, STEP_FIELDS)
    facts_rebuild(start_day=day, end_day=end)
    after = snapshot(EmailStepDaily, day, end, EMAIL_KEY, STEP_FIELDS)
    diff = snapshot_diff(before, after, "facts")
    if diff:
        log.warning("Step facts reconciliation for %s found differences: %s", day, diff)
    return {"email_steps": diff}
