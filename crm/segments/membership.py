"""Stored membership: dependency order, join/leave writes, and the incremental refresh.

The incremental refresh runs inside every ingest batch, profile change and stage change,
so its fixed costs matter more than its queries: each dynamic segment's *plan* — its
dependencies (:func:`~.dependencies.definition_dependencies`) and its evaluation SQL,
compiled once with placeholders (:mod:`.params`) — is cached per process, keyed by segment
id and checked against the stored version and definition on every run (one small query),
so an edit anywhere is seen at once and a batch that cannot change a segment costs no
compilation at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from django.db import connection
from django.db.models import Value
from django.utils import timezone

from crm.models import Contact, Segment, SegmentChange, SegmentMembership

from .definition import DefinitionError, _compile, condition_providers, segment_refs
from .dependencies import Dependencies, activity_matcher, definition_dependencies
from .params import CONTACTS, SYMBOLIC_NOW, InIds, bind

CHUNK = 2000  # ids per statement: well under every backend's parameter limit
COMPILE_ERRORS = (DefinitionError, KeyError, LookupError, ImportError)


def batched(items: Iterable, size: int):
    """``itertools.batched`` (Python 3.12) for 3.11."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# --- Order and writes ----------------------------------------------------------------------


def dynamic_segments_in_order(segments: Iterable | None = None) -> list:
    """Dynamic segments, each after every segment it reads through in_segment (Kahn).

    ``segments``: objects with ``pk`` and ``definition`` (segments or plans)."""
    if segments is None:
        segments = Segment.objects.filter(kind=Segment.Kind.DYNAMIC).only(
            "pk", "kind", "definition", "name"
        )
    by_id = {s.pk: s for s in segments}
    deps = {pk: segment_refs(s.definition) & set(by_id) for pk, s in by_id.items()}
    ordered: list = []
    ready = sorted(pk for pk, d in deps.items() if not d)
    done: set[int] = set()
    while ready:
        pk = ready.pop(0)
        done.add(pk)
        ordered.append(by_id[pk])
        for other, d in deps.items():
            if other not in done and other not in ready and d <= done:
                ready.append(other)
        ready.sort()
    # A cycle cannot be saved; if one was written around the service, still refresh it.
    ordered.extend(by_id[pk] for pk in sorted(set(by_id) - done))
    return ordered


# PostgreSQL: all joins and leaves of a pass in one statement (data-modifying CTEs), the
# pairs as four arrays — no model instances, no per-row parameters.
_RECORD_SQL = """
WITH joins AS (
    SELECT * FROM unnest(%(join_segments)s::bigint[], %(join_contacts)s::bigint[]) AS j(s, c)
), leaves AS (
    SELECT * FROM unnest(%(leave_segments)s::bigint[], %(leave_contacts)s::bigint[]) AS l(s, c)
), joined AS (
    INSERT INTO crm_segmentmembership (segment_id, contact_id, joined_at)
    SELECT s, c, %(at)s FROM joins
    ON CONFLICT (segment_id, contact_id) DO NOTHING  -- a concurrent batch added it already
), departed AS (
    DELETE FROM crm_segmentmembership m USING leaves
    WHERE m.segment_id = leaves.s AND m.contact_id = leaves.c
)
INSERT INTO crm_segmentchange (segment_id, contact_id, kind, at)
SELECT s, c, %(joined)s, %(at)s FROM joins
UNION ALL
SELECT s, c, %(left)s, %(at)s FROM leaves
"""


def record_changes(changes: dict[int, tuple[Iterable[int], Iterable[int]]], *, at) -> None:
    """Write joins and leaves of several segments: memberships added and removed, and every
    change logged with its time. One statement on PostgreSQL; elsewhere one insert each for
    memberships and the change log (per CHUNK rows) and one delete per segment with leaves.
    """
    joins = [(s, c) for s, (j, _) in changes.items() for c in j]
    leaves = [(s, c) for s, (_, lv) in changes.items() for c in lv]
    if not joins and not leaves:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _RECORD_SQL,
                {
                    "join_segments": [s for s, _ in joins],
                    "join_contacts": [c for _, c in joins],
                    "leave_segments": [s for s, _ in leaves],
                    "leave_contacts": [c for _, c in leaves],
                    "at": at,
                    "joined": SegmentChange.Kind.JOINED.value,
                    "left": SegmentChange.Kind.LEFT.value,
                },
            )
        return
    for chunk in batched(joins, CHUNK):
        SegmentMembership.objects.bulk_create(
            [SegmentMembership(segment_id=s, contact_id=c, joined_at=at) for s, c in chunk],
            ignore_conflicts=True,  # a concurrent batch may have added the same member
        )
    by_segment: dict[int, list[int]] = {}
    for s, c in leaves:
        by_segment.setdefault(s, []).append(c)
    for segment_id, contact_ids in by_segment.items():
        for chunk in batched(contact_ids, CHUNK):
            SegmentMembership.objects.filter(segment_id=segment_id, contact_id__in=chunk).delete()
    SegmentChange.objects.bulk_create(
        [
            SegmentChange(segment_id=s, contact_id=c, kind=SegmentChange.Kind.JOINED, at=at)
            for s, c in joins
        ]
        + [
            SegmentChange(segment_id=s, contact_id=c, kind=SegmentChange.Kind.LEFT, at=at)
            for s, c in leaves
        ],
        batch_size=CHUNK,
    )


# --- Plans ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Plan:
    """What the incremental refresh needs of one dynamic segment version."""

    pk: int
    version: int
    definition: Any
    deps: Dependencies
    # vendor -> (sql, params with markers); None: the definition no longer compiles
    sql: dict[str, tuple[str, list] | None] = field(default_factory=dict)


_PLANS: dict[int, Plan] = {}  # segment id -> plan of its current version (this process)


def plans_in_order() -> list[Plan]:
    """The dynamic segments' plans in dependency order (one query: ids, versions, JSON)."""
    rows = (
        Segment.objects.filter(kind=Segment.Kind.DYNAMIC)
        .order_by("pk")
        .values_list("pk", "version", "definition")
    )
    plans = []
    for pk, version, definition in rows:
        plan = _PLANS.get(pk)
        # The definition is compared too: a write around segment_save keeps the version.
        if plan is None or plan.version != version or plan.definition != definition:
            plan = Plan(pk, version, definition, definition_dependencies(definition))
            _PLANS[pk] = plan
        plans.append(plan)
    if len(_PLANS) > len(plans):  # deleted (or now static) segments
        for pk in set(_PLANS) - {p.pk for p in plans}:
            _PLANS.pop(pk, None)
    return dynamic_segments_in_order(plans)


def _evaluation_sql(plan: Plan) -> tuple[str, list] | None:
    """One statement for one segment over the bound contact ids: ``(contact, 1)`` for each
    that matches the definition now, ``(contact, 0)`` for each stored member.

    Compiled once per plan and vendor; a plan with an extension condition (inputs unknown
    here, its SQL may change between runs) is compiled each time."""
    vendor = connection.vendor
    if vendor in plan.sql and not plan.deps.opaque:
        return plan.sql[vendor]
    try:
        q = _compile(plan.definition, SYMBOLIC_NOW, condition_providers(), restrict=CONTACTS)
    except COMPILE_ERRORS:
        plan.sql[vendor] = None  # never fail an ingest batch; the periodic job logs it
        return None
    matching = Contact.objects.filter(InIds("pk"), q).order_by().values_list("pk", Value(1))
    stored = (
        SegmentMembership.objects.filter(InIds("contact_id"), segment_id=plan.pk)
        .order_by()
        .values_list("contact_id", Value(0))
    )
    compiled = matching.union(stored, all=True).query.get_compiler(connection=connection)
    plan.sql[vendor] = compiled.as_sql()
    return plan.sql[vendor]


def _evaluate(sql_params: tuple[str, list], ids: list[int], now: datetime):
    """(matching now, stored) among ``ids`` for one segment."""
    sql, params = sql_params
    with connection.cursor() as cursor:
        cursor.execute(sql, bind(params, connection=connection, now=now, ids={"contacts": ids}))
        rows = cursor.fetchall()
    now_in = {c for c, matches in rows if matches}
    return now_in, {c for c, matches in rows if not matches}


# --- The incremental refresh ---------------------------------------------------------------


def refresh_subsets(ids_for: Callable[[Plan], set[int]], *, at: datetime | None) -> None:
    """Evaluate each dynamic segment for the contacts ``ids_for(its plan)`` names.

    Segments run in dependency order; a segment reading another (in_segment) is also
    re-evaluated for the contacts whose membership of that one just changed. Queries: the
    segment list, one per segment with contacts to evaluate (matches and stored members
    together), and writes only where something changed (gathered across segments; flushed
    early only before a segment that reads them).
    """
    plans = plans_in_order()
    now = timezone.now()
    at = at or now
    changed: dict[int, set[int]] = {}
    pending: dict[int, tuple[set[int], set[int]]] = {}  # writes batched across segments
    for plan in plans:
        refs = plan.deps.refs
        ids = ids_for(plan)
        if refs & changed.keys():
            ids = ids.union(*(changed.get(r, ()) for r in refs))
        if not ids:
            continue
        sql = _evaluation_sql(plan)
        if sql is None:
            continue
        if refs & pending.keys():
            record_changes(pending, at=at)  # this segment reads those memberships
            pending = {}
        for chunk in batched(sorted(ids), CHUNK):
            now_in, was_in = _evaluate(sql, chunk, now)
            if now_in != was_in:
                joins, leaves = pending.setdefault(plan.pk, (set(), set()))
                joins.update(now_in - was_in)
                leaves.update(was_in - now_in)
                changed.setdefault(plan.pk, set()).update(now_in ^ was_in)
    if pending:
        record_changes(pending, at=at)


def segments_refresh_for_contacts(
    *, contact_ids: Iterable[int], at: datetime | None = None
) -> None:
    """Re-evaluate every dynamic segment for just these contacts (profile/stage changes).

    One query per segment, restricted to these contacts and reading their stored
    membership of it; writes only on a change.
    """
    ids = set(contact_ids)
    if ids:
        refresh_subsets(lambda plan: ids, at=at)


def segments_refresh_for_activities(
    *,
    activities: Iterable,
    created_contact_ids: Iterable[int] = (),
    at: datetime | None = None,
) -> None:
    """Re-evaluate dynamic segments after an activity batch, only where it can matter.

    A segment is re-evaluated for a contact only if the batch gave that contact an activity
    one of its behaviour conditions could count (kind, campaign, URL, form, content type,
    time window: :func:`~.dependencies.activity_may_count`), if the contact was just created, if
    the segment has an extension condition (unknown inputs), or if a segment it reads
    changed for that contact in this pass. Profile fields an ingest changes (suppression)
    arrive as their own ContactsChanged event; relative-time drift is the periodic job's.
    """
    activities = list(activities)
    created = set(created_contact_ids)
    everyone = {a.contact_id for a in activities} | created
    if not everyone:
        return
    now = timezone.now()  # not after the evaluation's own "now" (relative windows)
    by_kind: dict[str, list] = {}
    for a in activities:
        by_kind.setdefault(a.kind, []).append(a)

    def ids_for(plan: Plan) -> set[int]:
        if plan.deps.opaque:
            return everyone
        ids = set(created)
        for node in plan.deps.behaviour:
            batch = by_kind.get(node.get("did") or node.get("did_not"))
            if batch:
                may_count = activity_matcher(node, now)
                ids.update(
                    [a.contact_id for a in batch if a.contact_id not in ids and may_count(a)]
                )
        return ids

    refresh_subsets(ids_for, at=at)
