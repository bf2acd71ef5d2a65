"""Rebuilding report tables from raw data when the rules that fill them change (an
upgrade), with the same rebuilds ``seed_demo`` and the nightly check run: the email
rollups (``EmailDaily``, ``EmailStepDaily``; ``StageDaily`` comes along) from the first
to the last day with a stored activity or a row, and the ``ReopenedDayFact`` rows of every
contact ever recycled (or holding rows).

Queued activity batches are applied first, as the nightly check does: a rebuild counts
every stored activity, and a batch still queued would add its activities' counts again
when applied.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Max, Min

from crm.activity_queue import queue_drain
from crm.models import Activity, LifecycleTransition, QueuedBatch, Stage

from .facts import facts_rebuild
from .models import EmailDaily, EmailStepDaily, ReopenedDayFact, StageDaily
from .query import site_tz
from .reopened_facts import reopened_facts_rebuild
from .rollups import rollups_rebuild

TABLES = ("email", "reopened")


class BatchesQueued(Exception):
    """Activity batches stay queued (parked or backing off): rebuilding now would count
    their activities twice."""


def report_tables_rebuild(*, tables=TABLES) -> dict:
    """Rebuild ``tables`` ("email", "reopened") from raw data; returns what was rebuilt."""
    queue_drain(max_seconds=600)
    waiting = QueuedBatch.objects.count()
    if waiting:
        raise BatchesQueued(f"{waiting} activity batches are queued; apply or delete them first")
    done: dict = {}
    if "email" in tables:
        days = _days_with_data()
        if days:
            first, end = min(days), max(days) + timedelta(days=1)
            rollups_rebuild(start_day=first, end_day=end, chunk_days=31)
            facts_rebuild(start_day=first, end_day=end, chunk_days=31)
            done["email"] = f"{first.isoformat()} – {end.isoformat()}"
    if "reopened" in tables:
        ids = set(
            LifecycleTransition.objects.filter(to_stage=Stage.RECYCLED).values_list(
                "contact_id", flat=True
            )
        )
        ids |= set(ReopenedDayFact.objects.values_list("contact_id", flat=True))
        reopened_facts_rebuild(contact_ids=ids)
        done["reopened"] = len(ids)
    return done


def _days_with_data() -> list:
    """The first and last day with a stored activity or a rollup row (a row whose
    activities are gone is replaced by nothing)."""
    span = Activity.objects.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    days = [t.astimezone(site_tz()).date() for t in span.values() if t is not None]
    for model in (EmailDaily, EmailStepDaily, StageDaily):
        days += [d for d in model.objects.aggregate(a=Min("day"), b=Max("day")).values() if d]
    return days
