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
from .params import EVERYONE, SYMBOLIC_NOW, InIds, InIdsOrLeavingMembers, bind, int_array

CHUNK = 2000  # ids per statement: well under every backend's parameter limit
# Evaluation statements chain segments with UNION ALL: SQLite allows 500 compound terms
# (two per branch); the id bound keeps one statement's work (and lock time) modest.
MAX_BRANCHES, STATEMENT_IDS = 100, 20_000
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
    RETURNING segment_id AS s, contact_id AS c
), departed AS (
    DELETE FROM crm_segmentmembership m USING leaves
    WHERE m.segment_id = leaves.s AND m.contact_id = leaves.c
    RETURNING m.segment_id AS s, m.contact_id AS c
)
INSERT INTO crm_segmentchange (segment_id, contact_id, kind, at)
SELECT s, c, %(joined)s, %(at)s FROM joined
UNION ALL
SELECT s, c, %(left)s, %(at)s FROM departed
"""


def record_changes(changes: dict[int, tuple[Iterable[int], Iterable[int]]], *, at) -> None:
    """Write joins and leaves of several segments: memberships added and removed, and every
    change logged with its time. One statement on PostgreSQL; elsewhere one insert each for
    memberships and the change log (per CHUNK rows) and one delete per segment with leaves.

    Only what was written is logged: a join a concurrent pass made first (the insert finds
    the member) or a leave it made first (the delete finds none) is not a second change.
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
                    "join_segments": int_array(s for s, _ in joins),
                    "join_contacts": int_array(c for _, c in joins),
                    "leave_segments": int_array(s for s, _ in leaves),
                    "leave_contacts": int_array(c for _, c in leaves),
                    "at": at,
                    "joined": SegmentChange.Kind.JOINED.value,
                    "left": SegmentChange.Kind.LEFT.value,
                },
            )
        return
    # One writer at a time here (SQLite locks the database for the transaction): what is
    # stored now is what the writes below change.
    present = _present(joins + leaves)
    joins = [pair for pair in joins if pair not in present]
    leaves = [pair for pair in leaves if pair in present]
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


def _present(pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which (segment, contact) pairs are stored members."""
    by_segment: dict[int, list[int]] = {}
    for s, c in pairs:
        by_segment.setdefault(s, []).append(c)
    found: set[tuple[int, int]] = set()
    for segment_id, contact_ids in by_segment.items():
        for chunk in batched(sorted(set(contact_ids)), CHUNK):
            found.update(
                SegmentMembership.objects.filter(
                    segment_id=segment_id, contact_id__in=chunk
                ).values_list("segment_id", "contact_id")
            )
    return found


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
    """A statement for one segment over the bound contacts: ``(contact, segment, 1)`` for
    each that matches the definition now, ``(contact, segment, 0)`` for each stored member.
    Statements of segments evaluated together are chained with ``UNION ALL``.

    Contacts bound as *leavers* (the event can only make them leave) are looked at only if
    they are members; the others either way.

    Compiled once per plan and vendor; a plan with an extension condition (inputs unknown
    here, its SQL may change between runs) is compiled each time."""
    vendor = connection.vendor
    if vendor in plan.sql and not plan.deps.opaque:
        return plan.sql[vendor]
    try:
        q = _compile(plan.definition, SYMBOLIC_NOW, condition_providers(), restrict=EVERYONE)
    except COMPILE_ERRORS:
        plan.sql[vendor] = None  # never fail an ingest batch; the periodic job logs it
        return None
    segment = Value(plan.pk)
    matching = Contact.objects.filter(InIdsOrLeavingMembers("pk", plan.pk), q).order_by()
    stored = SegmentMembership.objects.filter(
        InIds("contact_id", EVERYONE), segment_id=plan.pk
    ).order_by()
    both = matching.values_list("pk", segment, Value(1)).union(
        stored.values_list("contact_id", segment, Value(0)), all=True
    )
    plan.sql[vendor] = both.query.get_compiler(connection=connection).as_sql()
    return plan.sql[vendor]


@dataclass
class Candidates:
    """Contacts to evaluate one segment for: ``either`` way, or only if they are members
    (``leavers``: the event can only make them leave)."""

    either: set[int] = field(default_factory=set)
    leavers: set[int] = field(default_factory=set)


def evaluate(
    work: list[tuple[tuple[str, list], Candidates]], now: datetime
) -> dict[int, tuple[set[int], set[int]]]:
    """Run ``(evaluation SQL, candidates)`` pairs and return ``{segment: (matching now,
    stored members)}`` among those looked at. The pairs are chained into as few statements
    as the limits allow (one for an ingest batch): one round trip instead of one per
    segment.
    """
    branches = []
    for sql, who in work:
        for chunk in batched(sorted(who.either | who.leavers), CHUNK):
            either = [c for c in chunk if c in who.either]
            leavers = [c for c in chunk if c not in who.either]
            ids = {"contacts": either, "leavers": leavers, "everyone": chunk}
            branches.append((sql, ids))
    result: dict[int, tuple[set[int], set[int]]] = {}
    while branches:
        statement, params, size = [], [], 0
        while branches and len(statement) < MAX_BRANCHES and size < STATEMENT_IDS:
            (sql, branch_params), ids = branches.pop()
            statement.append(sql)
            params += bind(branch_params, connection=connection, now=now, ids=ids)
            size += len(ids["everyone"])
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(statement), params)
            rows = cursor.fetchall()
        for contact, segment, matches in rows:
            now_in, was_in = result.setdefault(segment, (set(), set()))
            (now_in if matches else was_in).add(contact)
    return result


# --- The incremental refresh ---------------------------------------------------------------


def _levels(plans: list[Plan]) -> list[list[Plan]]:
    """Plans (in dependency order) grouped so that none reads another of its group."""
    level: dict[int, int] = {}
    for plan in plans:
        level[plan.pk] = 1 + max((level[r] for r in plan.deps.refs if r in level), default=-1)
    groups: list[list[Plan]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for plan in plans:
        groups[level[plan.pk]].append(plan)
    return groups


def refresh_subsets(candidates_for: Callable[[Plan], Candidates], *, at: datetime | None) -> None:
    """Evaluate each dynamic segment for the contacts ``candidates_for(its plan)`` names.

    Segments run in dependency order; a segment reading another (in_segment) is also
    re-evaluated for the contacts whose membership of that one just changed. Queries: the
    segment list, one statement per dependency level (every segment of the level with
    contacts to evaluate, matches and stored members together), and writes only where
    something changed (gathered across segments; flushed early only before a level that
    reads them).
    """
    plans = plans_in_order()
    now = timezone.now()
    at = at or now
    changed: dict[int, set[int]] = {}
    pending: dict[int, tuple[set[int], set[int]]] = {}  # writes batched across segments
    for group in _levels(plans):
        work, reads = [], set()
        for plan in group:
            refs = plan.deps.refs
            who = candidates_for(plan)
            if refs & changed.keys():  # a segment it reads changed: either way for those
                who.either = who.either.union(*(changed.get(r, ()) for r in refs))
            if (who.either or who.leavers) and (sql := _evaluation_sql(plan)) is not None:
                work.append((sql, who))
                reads |= refs
        if not work:
            continue
        if reads & pending.keys():
            record_changes(pending, at=at)  # this level reads those memberships
            pending = {}
        for segment, (now_in, was_in) in evaluate(work, now).items():
            if now_in != was_in:
                joins, leaves = pending.setdefault(segment, (set(), set()))
                joins.update(now_in - was_in)
                leaves.update(was_in - now_in)
                changed.setdefault(segment, set()).update(now_in ^ was_in)
    if pending:
        record_changes(pending, at=at)


def segments_refresh_for_contacts(
    *, contact_ids: Iterable[int], at: datetime | None = None
) -> None:
    """Re-evaluate every dynamic segment for just these contacts (profile/stage changes).

    One statement per dependency level (every segment, restricted to these contacts, with
    their stored membership of it); writes only on a change.
    """
    ids = set(contact_ids)
    if ids:
        refresh_subsets(lambda plan: Candidates(either=set(ids)), at=at)


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
    changed for that contact in this pass, or if the segment reads the score (the batch's
    scoring runs before this handler, ``ACTIVITIES_RECORDED_HANDLERS``). Profile fields an
    ingest changes (suppression) arrive as their own ContactsChanged event; relative-time
    drift is the periodic job's. A rescore's score changes are the periodic refresh's.
    """
    created = set(created_contact_ids)
    by_kind: dict[str, list[tuple[int, Any]]] = {}  # kind -> (contact id, activity)
    for a in activities:
        by_kind.setdefault(a.kind, []).append((a.contact_id, a))
    everyone = {c for pairs in by_kind.values() for c, _ in pairs} | created
    if not everyone:
        return
    now = timezone.now()  # not after the evaluation's own "now" (relative windows)

    def candidates_for(plan: Plan) -> Candidates:
        if plan.deps.opaque or "score" in plan.deps.fields:
            # A score condition: the batch may have moved any of its contacts' scores
            # (the scoring handler runs first, so the score read is the new one).
            return Candidates(either=set(everyone))
        either, leavers = set(created), set()
        for node, sign in zip(plan.deps.behaviour, plan.deps.polarity, strict=True):
            pairs = by_kind.get(node.get("did") or node.get("did_not"))
            if pairs:
                may_count, found = activity_matcher(node, now), leavers if sign < 0 else either
                found.update([c for c, a in pairs if c not in found and may_count(a)])
        return Candidates(either=either, leavers=leavers - either)

    refresh_subsets(candidates_for, at=at)
