"""Program holdout lift from day rows (METRICS.md line 51, "A program's holdout group, when
set, gives the causal version").

The funnel's holdout lift counts, per program, the distinct contacts with an enrollment
entered in the period — treated (not held out) and held out apart — and of those the ones
that entered ``opportunity`` before the report end. A contact's part in it is, per
enrollment: its program, group, site-time-zone entry day, the day of the same contact's
previous enrollment in the same program and group (``prev_day``, :data:`NO_PREV` for the
first: the enrollment is its contact's first in the period exactly when ``prev_day`` is
before the period start) and the day of the contact's first ``opportunity`` entry. An
enrollment's program, group and entry time never change (nurture never moves a row into
or out of ``held_out``, and never deletes one), so two summable tables answer any period:

* ``HoldoutDaily``: per entry day, program, group and ``prev_day``: the enrollments and
  those whose contact ever entered ``opportunity``;
* ``HoldoutReachDaily``: the same enrollments by the day of that first entry — the report
  subtracts those first reached at or after its end (none for a period ending today).

Kept by signed deltas from nurture's "enrollments created" event
(:func:`holdout_apply_enrollments`: the batch's contacts' rows of the program before and
after the batch) and from stage changes into ``opportunity``
(:func:`holdout_apply_transitions`: the enrolled contacts whose first entry moved).
:func:`holdout_rebuild` recounts from the enrollments and transitions;
:func:`holdout_reconcile` compares and repairs.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date

from django.db import transaction
from django.db.models import Min, Q

from crm.models import LifecycleTransition, Stage

from .fact_writes import counts_upsert
from .models import HoldoutDaily, HoldoutReachDaily
from .query import site_tz
from .rollups import snapshot_diff

log = logging.getLogger(__name__)

TREATED = "treated"
HELD_OUT = "held_out"
NO_PREV = date(1, 1, 1)  # prev_day of a contact's first enrollment in a program and group
OPP = str(Stage.OPPORTUNITY)
CHUNK = 2000  # contacts per statement (SQLite's bound-parameter limit)


def _enrollment():
    try:
        from nurture.models import Enrollment
    except ImportError:  # pragma: no cover - nurture not installed
        return None
    return Enrollment


def _local(dt):
    return dt.astimezone(site_tz()).date()


def _chunks(items):
    items = sorted(items)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def contributions(rows, reached: dict) -> Counter:
    """``(program, group, day, prev_day, reached day or None)`` → enrollments, from
    enrollment rows ``(id, contact_id, program_id, entered_at, held_out)`` and contact →
    first ``opportunity`` entry time."""
    out: Counter = Counter()
    last: dict[tuple, date] = {}
    for _, cid, program, entered_at, held in sorted(rows, key=lambda r: (r[1], r[2], r[3], r[0])):
        group = HELD_OUT if held else TREATED
        day = _local(entered_at)
        key = (cid, program, group)
        first_opp = reached.get(cid)
        out[(program, group, day, last.get(key, NO_PREV), first_opp and _local(first_opp))] += 1
        last[key] = day
    return out


def _apply(before: Counter, after: Counter) -> None:
    """Move both tables by ``after − before`` (contribution counters)."""
    totals: dict[tuple, Counter] = {}
    reach: dict[tuple, Counter] = {}
    for key in set(before) | set(after):
        n = after.get(key, 0) - before.get(key, 0)
        if not n:
            continue
        program, group, day, prev_day, reached = key
        c = totals.setdefault((day, program, group, prev_day), Counter())
        c["enrolled"] += n
        if reached is not None:
            c["opportunity"] += n
            reach.setdefault((reached, program, group, day, prev_day), Counter())["enrolled"] += n
    counts_upsert(
        HoldoutDaily,
        key=["day", "program_id", "group", "prev_day"],
        rows=totals,
        fields=["enrolled", "opportunity"],
    )
    counts_upsert(
        HoldoutReachDaily,
        key=["reached_day", "program_id", "group", "day", "prev_day"],
        rows=reach,
        fields=["enrolled"],
    )


def _first_opportunity(contact_ids) -> dict:
    return dict(
        LifecycleTransition.objects.filter(contact_id__in=contact_ids, to_stage=OPP)
        .values("contact_id")
        .annotate(at=Min("at"))
        .values_list("contact_id", "at")
        .order_by()
    )


def _rows_of(enrollment, qs) -> list[tuple]:
    held = enrollment.State.HELD_OUT
    return [
        (pk, cid, prog, at, state == held)
        for pk, cid, prog, at, state in qs.values_list(
            "id", "contact_id", "program_id", "entered_at", "state"
        )
    ]


def holdout_apply_enrollments(*, program_id: int, contact_ids, entered_at) -> None:
    """Enrollments were just created in ``program_id`` at ``entered_at`` for (some of)
    ``contact_ids``: move those contacts' rows of the program from without the batch's
    enrollments to with them (2 queries per 2,000 contacts, plus the upserts)."""
    enrollment = _enrollment()
    if enrollment is None:
        return
    for chunk in _chunks(set(contact_ids)):
        rows = _rows_of(
            enrollment, enrollment.objects.filter(program_id=program_id, contact_id__in=chunk)
        )
        # The batch's row of a contact: its newest row at this instant (an earlier call at
        # the same instant could only have left an older one) — as nurtured_facts does.
        batch_row: dict[int, int] = {}
        for pk, cid, _, at, _ in rows:
            if at == entered_at and pk > batch_row.get(cid, 0):
                batch_row[cid] = pk
        if not batch_row:
            continue
        mine = [r for r in rows if r[1] in batch_row]
        reached = _first_opportunity(list(batch_row))
        before = contributions([r for r in mine if r[0] != batch_row[r[1]]], reached)
        _apply(before, contributions(mine, reached))


def holdout_apply_transitions(*, transitions) -> None:
    """Stage changes: the enrolled contacts whose first ``opportunity`` entry moved (one
    query when the batch has entries into ``opportunity``, two more when an enrolled
    contact's first entry moved)."""
    enrollment = _enrollment()
    opp = [t for t in transitions if t.to_stage == OPP]
    if enrollment is None or not opp:
        return
    batch_ids = [t.pk for t in opp]
    for chunk in _chunks({t.contact_id for t in opp}):
        moved = {}
        for cid, first, first_before in (
            LifecycleTransition.objects.filter(contact_id__in=chunk, to_stage=OPP)
            .values("contact_id")
            .annotate(first=Min("at"), before=Min("at", filter=~Q(id__in=batch_ids)))
            .values_list("contact_id", "first", "before")
            .order_by()
        ):
            if first_before is None or _local(first) != _local(first_before):
                moved[cid] = (first_before, first)
        if not moved:
            continue
        rows = _rows_of(enrollment, enrollment.objects.filter(contact_id__in=list(moved)))
        if not rows:
            continue
        before = contributions(rows, {c: m[0] for c, m in moved.items() if m[0] is not None})
        _apply(before, contributions(rows, {c: m[1] for c, m in moved.items()}))


# --- Rebuild and reconciliation -----------------------------------------------------------


def _recount() -> tuple[dict, dict]:
    """Both tables' counts from the enrollments and the first ``opportunity`` entries."""
    enrollment = _enrollment()
    if enrollment is None:
        return {}, {}
    reached = dict(
        LifecycleTransition.objects.filter(to_stage=OPP)
        .values("contact_id")
        .annotate(at=Min("at"))
        .values_list("contact_id", "at")
        .order_by()
    )
    rows = _rows_of(enrollment, enrollment.objects.order_by())
    totals: dict[tuple, Counter] = {}
    reach: dict[tuple, int] = {}
    for (program, group, day, prev_day, r), n in contributions(rows, reached).items():
        c = totals.setdefault((day, program, group, prev_day), Counter())
        c["enrolled"] += n
        if r is not None:
            c["opportunity"] += n
            reach[(r, program, group, day, prev_day)] = (
                reach.get((r, program, group, day, prev_day), 0) + n
            )
    return totals, reach


def _stored() -> tuple[dict, dict]:
    totals = {}
    for day, program, group, prev_day, enrolled, opp in HoldoutDaily.objects.values_list(
        "day", "program_id", "group", "prev_day", "enrolled", "opportunity"
    ):
        c = Counter({k: v for k, v in (("enrolled", enrolled), ("opportunity", opp)) if v})
        if c:
            totals[(day, program, group, prev_day)] = c
    reach = {
        (r, p, g, d, pd): n
        for r, p, g, d, pd, n in HoldoutReachDaily.objects.exclude(enrolled=0).values_list(
            "reached_day", "program_id", "group", "day", "prev_day", "enrolled"
        )
    }
    return totals, reach


def holdout_rebuild() -> None:
    """Recount both tables from the enrollments and transitions."""
    totals, reach = _recount()
    with transaction.atomic():
        HoldoutDaily.objects.all().delete()
        HoldoutDaily.objects.bulk_create(
            [
                HoldoutDaily(
                    day=d,
                    program_id=p,
                    group=g,
                    prev_day=pd,
                    enrolled=c["enrolled"],
                    opportunity=c["opportunity"],
                )
                for (d, p, g, pd), c in totals.items()
            ],
            batch_size=5000,
        )
        HoldoutReachDaily.objects.all().delete()
        HoldoutReachDaily.objects.bulk_create(
            [
                HoldoutReachDaily(
                    reached_day=r, program_id=p, group=g, day=d, prev_day=pd, enrolled=n
                )
                for (r, p, g, d, pd), n in reach.items()
            ],
            batch_size=5000,
        )


def holdout_reconcile() -> dict:
    """Compare both tables with a recount; repair and report differences."""
    stored, fresh = _stored(), _recount()
    diff = {}
    for name, have, want in zip(("holdout", "holdout reach"), stored, fresh, strict=True):
        diff.update({f"{name} {k}": v for k, v in snapshot_diff(have, want, "facts").items()})
    if diff:
        log.warning("Holdout rows differ from the enrollments and transitions: %s", diff)
        holdout_rebuild()
    return diff
