"""Funnel drop-offs from day rows (``DropDaily``): unique contacts recycled or disqualified
from each stage in a period (METRICS.md funnel "drop-offs") as a sum of day rows.

A contact's move from stage A into ``recycled`` (``disqualified``) is its first such move
within a period exactly when its previous one (``TransitionFact.prev_pair_at``) is before
the period start, and periods are whole site days, so counting those moves per day,
from-stage, to-stage and the previous move's day answers any period. The stage-changed
upkeep (``reports.lifecycle_facts``) hands the changed contacts' drop facts before and
after each refresh to :func:`drops_apply` (signed deltas; appended moves only add); a
rebuild recounts from the facts; :func:`drops_reconcile` compares with a recount.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date

from django.db import transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from crm.models import Stage

from .fact_writes import counts_upsert
from .models import DropDaily, TransitionFact
from .query import site_tz
from .rollups import snapshot_diff

log = logging.getLogger(__name__)

DROP_STAGES = [str(Stage.RECYCLED), str(Stage.DISQUALIFIED)]
NO_PREV = date(1, 1, 1)  # ``prev_day`` of a contact's first move between two stages
KEY = ["day", "from_stage", "to_stage", "prev_day"]


def _local(dt) -> date:
    return dt.astimezone(site_tz()).date()


def _key(at, from_stage, to_stage, prev_pair_at) -> tuple:
    return (
        _local(at),
        from_stage,
        to_stage,
        NO_PREV if prev_pair_at is None else _local(prev_pair_at),
    )


def drops_of(rows) -> Counter:
    """Day-row keys of the drop moves among fact rows (``FACT_FIELDS`` tuples)."""
    out = Counter()
    for row in rows:
        if row[2] in DROP_STAGES:
            out[_key(row[3], row[9], row[2], row[10])] += 1
    return out


def drops_stored(contact_ids) -> Counter:
    """:func:`drops_of` the stored facts of these contacts (their contact index)."""
    return Counter(
        _key(at, from_stage, to_stage, prev)
        for at, from_stage, to_stage, prev in TransitionFact.objects.filter(
            contact_id__in=contact_ids, to_stage__in=DROP_STAGES
        ).values_list("at", "from_stage", "to_stage", "prev_pair_at")
    )


def drops_apply(before: Counter, after: Counter) -> None:
    """Move the day rows by the difference (one upsert; nothing when none changed)."""
    rows = {}
    for key in set(before) | set(after):
        delta = after.get(key, 0) - before.get(key, 0)
        if delta:
            rows[key] = Counter(moves=delta)
    counts_upsert(DropDaily, key=KEY, rows=rows, fields=["moves"])


def _recount() -> dict:
    """The day rows from the facts (grouped in the database)."""
    rows = (
        TransitionFact.objects.filter(to_stage__in=DROP_STAGES)
        .annotate(
            day=TruncDate("at", tzinfo=site_tz()),
            prev=TruncDate("prev_pair_at", tzinfo=site_tz()),
        )
        .values("day", "from_stage", "to_stage", "prev")
        .annotate(n=Count("transition_id"))
        .values_list("day", "from_stage", "to_stage", "prev", "n")
        .order_by()
    )
    return {(d, f, t, NO_PREV if p is None else p): n for d, f, t, p, n in rows}


def _stored() -> dict:
    return {
        tuple(r[:4]): r[4] for r in DropDaily.objects.exclude(moves=0).values_list(*KEY, "moves")
    }


def drops_rebuild() -> None:
    """Recount every day row from the facts (rebuilds, migrations, demo seeding)."""
    fresh = _recount()
    with transaction.atomic():
        DropDaily.objects.all().delete()
        DropDaily.objects.bulk_create(
            [DropDaily(**dict(zip(KEY, k, strict=True)), moves=n) for k, n in fresh.items()],
            batch_size=5000,
        )


def drops_reconcile() -> dict:
    """Compare the day rows with a recount from the facts; repair and report differences."""
    have, want = _stored(), _recount()
    diff = snapshot_diff(have, want, "facts")
    if diff:
        log.warning("Funnel drop-off day rows differ from the transition facts: %s", diff)
        drops_rebuild()
    return diff


def drop_counts(start: date, end: date) -> dict[str, dict]:
    """Per from-stage: unique contacts recycled / disqualified in ``[start, end)`` days."""
    rows = (
        DropDaily.objects.filter(day__gte=start, day__lt=end, prev_day__lt=start)
        .values("from_stage", "to_stage")
        .annotate(n=Sum("moves"))
        .values_list("from_stage", "to_stage", "n")
        .order_by()
    )
    out: dict[str, dict] = {}
    for from_stage, to_stage, n in rows:
        if n:
            out.setdefault(from_stage, {"recycled": 0, "disqualified": 0})[to_stage] = n
    return out
