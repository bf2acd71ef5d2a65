"""Writes on segments: save (versioned), full and incremental membership refresh, static lists.

Membership is stored (:class:`~crm.models.SegmentMembership`) so that other segments,
nurture triggers and reports read it cheaply; every join and leave is recorded as a
:class:`~crm.models.SegmentChange` with its time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import islice

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from crm.models import Contact, Segment, SegmentChange, SegmentMembership, SegmentVersion

from .definition import (
    DefinitionError,
    Dependencies,
    _compile,
    compile_definition,
    condition_providers,
    definition_dependencies,
    segment_refs,
    validate_definition,
)

log = logging.getLogger(__name__)
CHUNK = 2000  # ids per statement: well under every backend's parameter limit


def batched(items: Iterable, size: int):
    """``itertools.batched`` (Python 3.12) for 3.11."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class SegmentInUse(ValueError):
    """The segment is named by another segment's definition and cannot be deleted."""


def segment_queryset(segment: Segment, *, now: datetime | None = None):
    """The contacts a segment holds *now*: its definition (dynamic) or its stored list (static).

    One query; use :func:`segment_members` for the stored membership of a dynamic segment.
    """
    if segment.kind == Segment.Kind.STATIC:
        return segment_members(segment)
    return Contact.objects.filter(compile_definition(segment.definition, now=now))


def segment_members(segment: Segment):
    """The stored members of a segment (what nurture and reports read)."""
    return Contact.objects.filter(
        Exists(SegmentMembership.objects.filter(segment=segment, contact=OuterRef("pk")))
    )


@transaction.atomic
def segment_save(
    *,
    segment: Segment | None,
    name: str,
    kind: str,
    definition: dict | None,
    by=None,
    description: str | None = None,
    refresh: bool = True,
) -> Segment:
    """Create or update a segment; store the definition as a new version; refresh members.

    Raises :class:`DefinitionError` (naming the bad part) for an invalid dynamic definition.
    """
    if kind not in Segment.Kind.values:
        raise DefinitionError([("kind", f'"{str(kind)[:40]}" is not dynamic or static.')])
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise DefinitionError([("name", "must be 1 to 200 characters.")])
    definition = definition if definition is not None else {}
    if kind == Segment.Kind.DYNAMIC:
        validate_definition(definition, segment_id=segment.pk if segment else None)
    if segment is None:
        segment = Segment(owner=by, version=1)
    else:
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        segment.version += 1
    segment.name, segment.kind, segment.definition = name, kind, definition
    if description is not None:
        segment.description = description
    segment.save()
    SegmentVersion.objects.create(
        segment=segment, version=segment.version, definition=definition, created_by=by
    )
    if refresh and kind == Segment.Kind.DYNAMIC:
        segment_refresh(segment=segment)
    return segment


@transaction.atomic
def segment_delete(*, segment: Segment) -> None:
    users = [
        s.name
        for s in Segment.objects.exclude(pk=segment.pk).only("name", "definition")
        if segment.pk in segment_refs(s.definition)
    ]
    if users:
        raise SegmentInUse(f"Segment is used by: {', '.join(sorted(users))}.")
    segment.delete()


def dynamic_segments_in_order(segments: Iterable[Segment] | None = None) -> list[Segment]:
    """Dynamic segments, each after every segment it reads through in_segment (Kahn)."""
    if segments is None:
        segments = Segment.objects.filter(kind=Segment.Kind.DYNAMIC).only(
            "pk", "kind", "definition", "name"
        )
    by_id = {s.pk: s for s in segments}
    deps = {pk: segment_refs(s.definition) & set(by_id) for pk, s in by_id.items()}
    ordered: list[Segment] = []
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


def _dependents(segment_id: int, segments: list[Segment]) -> set[int]:
    found, frontier = set(), {segment_id}
    while frontier:
        frontier = {
            s.pk for s in segments if s.pk not in found and segment_refs(s.definition) & frontier
        }
        found |= frontier
    return found


def _record(segment_id: int, *, joins: Iterable[int], leaves: Iterable[int], at) -> None:
    _record_many({segment_id: (joins, leaves)}, at=at)


def _record_many(changes: dict[int, tuple[Iterable[int], Iterable[int]]], *, at) -> None:
    """Write joins and leaves of several segments: one insert each for memberships and the
    change log (per CHUNK rows), one delete per segment with leaves."""
    joins = [(s, c) for s, (j, _) in changes.items() for c in j]
    leaves = {s: list(lv) for s, (_, lv) in changes.items() if lv}
    for chunk in batched(joins, CHUNK):
        SegmentMembership.objects.bulk_create(
            [SegmentMembership(segment_id=s, contact_id=c, joined_at=at) for s, c in chunk],
            ignore_conflicts=True,  # a concurrent batch may have added the same member
        )
    for segment_id, contact_ids in leaves.items():
        for chunk in batched(contact_ids, CHUNK):
            SegmentMembership.objects.filter(segment_id=segment_id, contact_id__in=chunk).delete()
    log_rows = [
        SegmentChange(segment_id=s, contact_id=c, kind=SegmentChange.Kind.JOINED, at=at)
        for s, c in joins
    ] + [
        SegmentChange(segment_id=s, contact_id=c, kind=SegmentChange.Kind.LEFT, at=at)
        for s, contact_ids in leaves.items()
        for c in contact_ids
    ]
    SegmentChange.objects.bulk_create(log_rows, batch_size=CHUNK)


def _refresh_one(segment: Segment, *, now: datetime, at: datetime) -> tuple[int, int]:
    """Full refresh: the set difference between the definition and the stored members."""
    with transaction.atomic():
        # Serialises full refreshes of one segment (two workers running the beat job).
        Segment.objects.select_for_update().filter(pk=segment.pk).values("pk").first()
        q = _compile(segment.definition, now, condition_providers())
        stored = SegmentMembership.objects.filter(segment_id=segment.pk, contact=OuterRef("pk"))
        joins = list(Contact.objects.filter(q).exclude(Exists(stored)).values_list("pk", flat=True))
        matching = Contact.objects.filter(q, pk=OuterRef("contact_id"))
        leaves = list(
            SegmentMembership.objects.filter(segment_id=segment.pk)
            .exclude(Exists(matching))
            .values_list("contact_id", flat=True)
        )
        _record(segment.pk, joins=joins, leaves=leaves, at=at)
        Segment.objects.filter(pk=segment.pk).update(refreshed_at=at)
    return len(joins), len(leaves)


def segment_refresh(
    *, segment: Segment, at: datetime | None = None, cascade: bool = True
) -> tuple[int, int]:
    """Recompute a dynamic segment's members, then (``cascade``) the segments that read it.

    Returns ``(joined, left)`` of this segment. Static segments are left as they are.
    """
    if segment.kind != Segment.Kind.DYNAMIC:
        return 0, 0
    now = timezone.now()
    at = at or now
    result = _refresh_one(segment, now=now, at=at)
    if cascade:
        ordered = dynamic_segments_in_order()
        dependents = _dependents(segment.pk, ordered)
        for other in ordered:
            if other.pk in dependents:
                _refresh_one(other, now=now, at=at)
    return result


def segments_refresh_all(*, at: datetime | None = None) -> dict[int, tuple[int, int]]:
    """Refresh every dynamic segment in dependency order (the periodic job).

    Relative conditions ("within the last N days") drift with time; this catches contacts
    that age out without any new event.
    """
    now = timezone.now()
    at = at or now
    results = {}
    for segment in dynamic_segments_in_order():
        try:
            results[segment.pk] = _refresh_one(segment, now=now, at=at)
        except (DefinitionError, KeyError, LookupError, ImportError):
            log.exception("segment %s has a definition that no longer compiles", segment.pk)
    return results


def segments_refresh_for_contacts(
    *, contact_ids: Iterable[int], at: datetime | None = None
) -> None:
    """Re-evaluate every dynamic segment for just these contacts (profile/stage changes).

    One query per segment, restricted to ``pk__in=contact_ids``, diffed against the stored
    membership of those contacts (one query for all segments); writes only on a change.
    """
    ids = set(contact_ids)
    if ids:
        _refresh_subsets(lambda deps: ids, at=at)


def segments_refresh_for_activities(
    *,
    activities: Iterable,
    created_contact_ids: Iterable[int] = (),
    at: datetime | None = None,
) -> None:
    """Re-evaluate dynamic segments after an activity batch, only where it can matter.

    A segment is re-evaluated for a contact only if the batch gave that contact an activity
    one of its behaviour conditions could count (kind, campaign, URL, form, content type,
    time window: :func:`~.definition.activity_may_count`), if the contact was just created, if
    the segment has an extension condition (unknown inputs), or if a segment it reads
    changed for that contact in this pass. Profile fields an ingest changes (suppression)
    arrive as their own ContactsChanged event; relative-time drift is the periodic job's.
    """
    activities = list(activities)
    created = set(created_contact_ids)
    everyone = {a.contact_id for a in activities} | created
    now = timezone.now()  # not after the evaluation's own "now" (relative windows)
    by_kind: dict[str, list] = {}
    for a in activities:
        by_kind.setdefault(a.kind, []).append(a)

    def ids_for(deps: Dependencies) -> set[int]:
        if deps.opaque:
            return everyone
        return created | {
            a.contact_id
            for kind in deps.kinds
            for a in by_kind.get(kind, ())
            if deps.may_count(a, now)
        }

    if everyone:
        _refresh_subsets(ids_for, at=at)


def _refresh_subsets(ids_for: Callable[[Dependencies], set[int]], *, at) -> None:
    """Evaluate each dynamic segment for the contacts ``ids_for(its dependencies)`` names.

    Segments run in dependency order; a segment reading another (in_segment) is also
    re-evaluated for the contacts whose membership of that one just changed. Queries: the
    segment list, one read of the stored memberships of every affected (segment, contact),
    one per segment with contacts to evaluate, and writes only where something changed
    (gathered across segments; flushed early only before a segment that reads them).
    """
    segments = dynamic_segments_in_order()
    if not segments:
        return
    deps = {s.pk: definition_dependencies(s.definition) for s in segments}
    base = {s.pk: ids_for(deps[s.pk]) for s in segments}
    reach: dict[int, set[int]] = {}  # upper bound incl. cascades, for the one stored read
    for s in segments:
        reach[s.pk] = set(base[s.pk]).union(*(reach.get(r, ()) for r in deps[s.pk].refs))
    affected = [s for s in segments if reach[s.pk]]
    if not affected:
        return
    now = timezone.now()
    at = at or now
    providers = condition_providers()
    stored: dict[int, set[int]] = {}
    for chunk in batched(sorted(set().union(*(reach[s.pk] for s in affected))), CHUNK):
        for seg_id, contact_id in SegmentMembership.objects.filter(
            segment_id__in=[s.pk for s in affected], contact_id__in=chunk
        ).values_list("segment_id", "contact_id"):
            stored.setdefault(seg_id, set()).add(contact_id)
    changed: dict[int, set[int]] = {}
    pending: dict[int, tuple[set[int], set[int]]] = {}  # writes batched across segments
    for segment in affected:
        if deps[segment.pk].refs & pending.keys():
            _record_many(pending, at=at)  # this segment reads those memberships
            pending = {}
        ids = set(base[segment.pk]).union(*(changed.get(r, ()) for r in deps[segment.pk].refs))
        for chunk in batched(sorted(ids), CHUNK):
            try:
                q = _compile(segment.definition, now, providers, restrict=chunk)
            except (DefinitionError, KeyError, LookupError, ImportError):
                # Never fail an ingest batch for a stale definition; the periodic job logs it.
                break
            now_in = set(Contact.objects.filter(q, pk__in=chunk).values_list("pk", flat=True))
            was_in = stored.get(segment.pk, set()).intersection(chunk)
            if now_in != was_in:
                joins, leaves = pending.setdefault(segment.pk, (set(), set()))
                joins.update(now_in - was_in)
                leaves.update(was_in - now_in)
                changed.setdefault(segment.pk, set()).update(now_in ^ was_in)
    if pending:
        _record_many(pending, at=at)


def _require_static(segment: Segment) -> None:
    if segment.kind != Segment.Kind.STATIC:
        raise ValueError("Members are added by hand only to static segments.")


@transaction.atomic
def segment_members_add(*, segment: Segment, contact_ids: Iterable[int], by=None, at=None) -> int:
    """Add contacts to a static segment; returns how many joined (existing ones are kept)."""
    _require_static(segment)
    at = at or timezone.now()
    ids = {int(c) for c in contact_ids}
    joins: list[int] = []
    for chunk in batched(sorted(ids), CHUNK):
        existing = set(
            SegmentMembership.objects.filter(segment=segment, contact_id__in=chunk).values_list(
                "contact_id", flat=True
            )
        )
        joins += (
            Contact.objects.filter(pk__in=chunk)
            .exclude(pk__in=existing)
            .values_list("pk", flat=True)
        )
    _record(segment.pk, joins=joins, leaves=(), at=at)
    segments_refresh_for_contacts(contact_ids=joins, at=at)  # segments that read this list
    return len(joins)


@transaction.atomic
def segment_members_remove(
    *, segment: Segment, contact_ids: Iterable[int], by=None, at=None
) -> int:
    """Remove contacts from a static segment; returns how many left."""
    _require_static(segment)
    at = at or timezone.now()
    leaves: list[int] = []
    for chunk in batched(sorted({int(c) for c in contact_ids}), CHUNK):
        leaves += SegmentMembership.objects.filter(
            segment=segment, contact_id__in=chunk
        ).values_list("contact_id", flat=True)
    _record(segment.pk, joins=(), leaves=leaves, at=at)
    segments_refresh_for_contacts(contact_ids=leaves, at=at)
    return len(leaves)


def contact_ids_for_emails(emails: Iterable[str]) -> tuple[list[int], list[str]]:
    """Resolve emails (a pasted or uploaded list) to contact ids; also return the unknown."""
    wanted = {Contact.normalise_email(e) for e in emails if e and e.strip()}
    found: dict[str, int] = {}
    for chunk in batched(sorted(wanted), CHUNK):
        found.update(Contact.objects.filter(email__in=chunk).values_list("email", "pk"))
    return sorted(found.values()), sorted(wanted - set(found))


def why_in_segment(segment: Segment, contact: Contact) -> list[tuple[dict, bool]]:
    """Each top-level condition of a dynamic segment and whether the contact meets it.

    One query: every condition becomes a boolean annotation on the contact's row.
    """
    from django.db.models import BooleanField, Case, Value, When

    definition = segment.definition or {}
    parts = definition.get("all") or definition.get("any") or [definition]
    if "not" in definition:
        parts = [definition]
    now = timezone.now()
    providers = condition_providers()
    annotations = {
        f"c{i}": Case(
            When(_compile(part, now, providers), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
        for i, part in enumerate(parts)
    }
    if not annotations:
        return []
    row = Contact.objects.filter(pk=contact.pk).annotate(**annotations).values(*annotations)
    values = row.first() or {}
    return [(part, bool(values.get(f"c{i}"))) for i, part in enumerate(parts)]


__all__ = [
    "SegmentInUse",
    "contact_ids_for_emails",
    "dynamic_segments_in_order",
    "segment_delete",
    "segment_members",
    "segment_members_add",
    "segment_members_remove",
    "segment_queryset",
    "segment_refresh",
    "segment_save",
    "segments_refresh_all",
    "segments_refresh_for_activities",
    "segments_refresh_for_contacts",
    "why_in_segment",
]
