"""Nurtured vs non-nurtured opportunity rate from day rows (METRICS.md line 51).

The funnel compares, among the new leads of the period, the opportunity rate of contacts
enrolled in ≥1 nurture program (not held out) with that of contacts never enrolled. A
contact's part in it is three facts: its creation day (frozen), its nurture group and the
day of its first entry into ``opportunity``. Groups only grow (enrollments are never
deleted and never move into or out of ``held_out``): none → ``held_out`` (only held-out
enrollments) → ``nurtured``. So two summable tables answer any period without reading
the contacts or the enrollments:

* ``NurturedDaily``: per creation day and group, the enrolled new leads and those that
  ever entered ``opportunity``;
* ``NurturedReachDaily``: the same leads by the day of that first entry — the report
  subtracts those first reached at or after its end (none for a period ending today).

Two events move them, each reading the other fact as it is stored at that moment (so
the deltas chain whatever order the handlers run in): nurture's "enrollments created"
(:func:`nurtured_apply_enrollments`: the batch's contacts' group before and after, their
first opportunity entry from ``TransitionFact``) and the funnel cohort upkeep's changed
first entries (:func:`nurtured_apply_firsts`: the contacts' current group). A rebuild
recounts both from the enrollments and the facts; :func:`nurtured_reconcile` compares.
"""

from __future__ import annotations

import logging
from collections import Counter

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import TruncDate

from crm.models import Contact, Stage

from .fact_writes import counts_upsert
from .models import NurturedDaily, NurturedReachDaily, TransitionFact
from .query import site_tz
from .rollups import snapshot_diff

log = logging.getLogger(__name__)

NURTURED = "nurtured"
HELD_OUT = "held_out"
OPP = str(Stage.OPPORTUNITY)
CHUNK = 2000  # contacts per statement (SQLite's bound-parameter limit)


def _enrollment():
    """nurture's Enrollment model, or None when nurture is not installed."""
    try:
        from nurture.models import Enrollment
    except ImportError:  # pragma: no cover
        return None
    return Enrollment


def _local(dt):
    return dt.astimezone(site_tz()).date()


def _chunks(items):
    items = sorted(items)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _group(held_flags) -> str | None:
    """The group of a contact with enrollments whose held-out flags are ``held_flags``."""
    flags = list(held_flags)
    if not flags:
        return None
    return HELD_OUT if all(flags) else NURTURED


def groups_of(contact_ids) -> dict[int, str]:
    """contact → current group, for the contacts with ≥1 enrollment (one grouped read of
    their enrollments per 2,000, on the enrollment's contact index)."""
    enrollment = _enrollment()
    if enrollment is None:
        return {}
    held = Q(state=enrollment.State.HELD_OUT)
    out = {}
    for chunk in _chunks(contact_ids):
        for cid, treated in (
            enrollment.objects.filter(contact_id__in=chunk)
            .values("contact_id")
            .annotate(treated=Count("id", filter=~held))
            .values_list("contact_id", "treated")
            .order_by()
        ):
            out[cid] = NURTURED if treated else HELD_OUT
    return out


def _apply(changes) -> None:
    """Move the counts of ``(group, created day, reached day or None)`` contributions:
    ``changes`` is an iterable of (old, new) pairs (None = no contribution)."""
    totals: dict[tuple, Counter] = {}
    reach: dict[tuple, Counter] = {}
    for old, new in changes:
        if old == new:
            continue
        for part, sign in ((old, -1), (new, 1)):
            if part is None:
                continue
            group, day, reached = part
            c = totals.setdefault((day, group), Counter())
            c["leads"] += sign
            if reached is not None:
                c["opportunity"] += sign
                reach.setdefault((reached, group, day), Counter())["leads"] += sign
    counts_upsert(NurturedDaily, key=["day", "group"], rows=totals, fields=["leads", "opportunity"])
    counts_upsert(
        NurturedReachDaily, key=["reached_day", "group", "day"], rows=reach, fields=["leads"]
    )


def nurtured_apply_firsts(before: dict, after: dict) -> None:
    """Called by ``cohort_apply`` with the new leads' first entries before and after a
    refresh (``(contact, stage) → (created day, first-entry day)``): move the enrolled
    ones whose first ``opportunity`` entry changed (one enrollment read when any did)."""
    moved = {
        key[0]
        for key in set(before) | set(after)
        if key[1] == OPP and before.get(key) != after.get(key)
    }
    if not moved:
        return
    groups = groups_of(moved)
    # A lead that entered opportunity for the first time (or lost its only entry) has no
    # first entry on one side: its creation day comes from the other side.
    _apply(_lead_changes(groups, before, after, moved))


def _lead_changes(groups, before, after, moved):
    """Turn "no first entry" sides into the lead-only contribution ``(group, day, None)``:
    the lead is counted in ``leads`` whether or not it reached opportunity."""
    out = []
    for cid in moved:
        group = groups.get(cid)
        if group is None:
            continue
        old, new = before.get((cid, OPP)), after.get((cid, OPP))
        day = (old or new)[0]
        out.append(((group, day, old[1] if old else None), (group, day, new[1] if new else None)))
    return out


def nurtured_apply_enrollments(*, program_id: int, contact_ids, entered_at) -> None:
    """Enrollments were just created in ``program_id`` at ``entered_at`` for (some of)
    ``contact_ids``: move those contacts' contributions from their group without the
    batch's rows to their group with them (3 queries per 2,000 contacts: enrollments,
    contacts, first opportunity entries)."""
    enrollment = _enrollment()
    if enrollment is None:
        return
    held_state = enrollment.State.HELD_OUT
    for chunk in _chunks(set(contact_ids)):
        rows = list(
            enrollment.objects.filter(contact_id__in=chunk).values_list(
                "id", "contact_id", "program_id", "entered_at", "state"
            )
        )
        # The batch's row of a contact: its newest row of this program at this instant (an
        # earlier call at the same instant could only have left an older one).
        batch_row = {}
        for pk, cid, prog, at, _ in rows:
            if prog == program_id and at == entered_at and pk > batch_row.get(cid, 0):
                batch_row[cid] = pk
        if not batch_row:
            continue
        flags_before: dict[int, list] = {}
        flags_after: dict[int, list] = {}
        for pk, cid, _, _, state in rows:
            if cid not in batch_row:
                continue
            flags_after.setdefault(cid, []).append(state == held_state)
            if pk != batch_row[cid]:
                flags_before.setdefault(cid, []).append(state == held_state)
        moved = {
            cid
            for cid in batch_row
            if _group(flags_before.get(cid, ())) != _group(flags_after[cid])
        }
        if not moved:
            continue
        created = {
            pk: _local(at)
            for pk, at in Contact.objects.filter(
                pk__in=moved, created_suppressed=False
            ).values_list("pk", "created_at")
        }
        reached = {
            cid: _local(at)
            for cid, at in TransitionFact.objects.filter(
                contact_id__in=list(created), to_stage=OPP, prev_same_at__isnull=True
            ).values_list("contact_id", "at")
        }
        changes = []
        for cid, day in created.items():
            old, new = _group(flags_before.get(cid, ())), _group(flags_after[cid])
            r = reached.get(cid)
            changes.append(((old, day, r) if old else None, (new, day, r) if new else None))
        _apply(changes)


# --- Rebuild and reconciliation -----------------------------------------------------------


def _recount() -> tuple[dict, dict]:
    """Both tables' counts from the enrollments, contacts and first-entry facts (one
    grouped query over the enrolled new leads)."""
    enrollment = _enrollment()
    if enrollment is None:
        return {}, {}
    enrolled = enrollment.objects.filter(contact_id=OuterRef("pk"))
    first_opp = TransitionFact.objects.filter(
        contact_id=OuterRef("pk"), to_stage=OPP, prev_same_at__isnull=True
    ).values("at")[:1]
    rows = (
        Contact.objects.filter(Exists(enrolled), created_suppressed=False)
        .annotate(
            treated=Exists(enrolled.exclude(state=enrollment.State.HELD_OUT)),
            day=TruncDate("created_at", tzinfo=site_tz()),
            reached_day=TruncDate(Subquery(first_opp), tzinfo=site_tz()),
        )
        .values("day", "treated", "reached_day")
        .annotate(n=Count("pk"))
        .values_list("day", "treated", "reached_day", "n")
        .order_by()
    )
    totals: dict = {}
    reach: dict = {}
    for day, treated, reached, n in rows:
        group = NURTURED if treated else HELD_OUT
        c = totals.setdefault((day, group), Counter())
        c["leads"] += n
        if reached is not None:
            c["opportunity"] += n
            reach[(reached, group, day)] = reach.get((reached, group, day), 0) + n
    return totals, reach


def _stored() -> tuple[dict, dict]:
    totals = {}
    for day, group, leads, opp in NurturedDaily.objects.values_list(
        "day", "group", "leads", "opportunity"
    ):
        c = Counter({k: v for k, v in (("leads", leads), ("opportunity", opp)) if v})
        if c:
            totals[(day, group)] = c
    reach = {
        (r, g, d): n
        for r, g, d, n in NurturedReachDaily.objects.exclude(leads=0).values_list(
            "reached_day", "group", "day", "leads"
        )
    }
    return totals, reach


def nurtured_rebuild() -> None:
    """Recount both tables (after the transition facts are current)."""
    totals, reach = _recount()
    with transaction.atomic():
        NurturedDaily.objects.all().delete()
        NurturedDaily.objects.bulk_create(
            [
                NurturedDaily(day=d, group=g, leads=c["leads"], opportunity=c["opportunity"])
                for (d, g), c in totals.items()
            ],
            batch_size=5000,
        )
        NurturedReachDaily.objects.all().delete()
        NurturedReachDaily.objects.bulk_create(
            [
                NurturedReachDaily(reached_day=r, group=g, day=d, leads=n)
                for (r, g, d), n in reach.items()
            ],
            batch_size=5000,
        )


def nurtured_reconcile() -> dict:
    """Compare both tables with a recount; repair and report differences."""
    stored, fresh = _stored(), _recount()
    diff = {}
    for name, have, want in zip(("nurtured", "nurtured reach"), stored, fresh, strict=True):
        diff.update({f"{name} {k}": v for k, v in snapshot_diff(have, want, "facts").items()})
    if diff:
        log.warning("Nurtured cohort rows differ from the enrollments and facts: %s", diff)
        nurtured_rebuild()
    return diff
