"""Writes on segments: save (versioned), full and incremental membership refresh, static lists.

Membership is stored (:class:`~crm.models.SegmentMembership`) so that other segments,
nurture triggers and reports read it cheaply; every join and leave is recorded as a
:class:`~crm.models.SegmentChange` with its time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from crm.models import Contact, Segment, SegmentMembership, SegmentVersion

from .definition import (
    DefinitionError,
    _compile,
    compile_definition,
    condition_providers,
    segment_refs,
    validate_definition,
)
from .membership import (
    CHUNK,
    batched,
    dynamic_segments_in_order,
    record_changes,
    segments_refresh_for_activities,
    segments_refresh_for_contacts,
)

log = logging.getLogger(__name__)


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
    return Contact.objects.in_segment(segment.pk)


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


def _dependents(segment_id: int, segments: list[Segment]) -> set[int]:
    found, frontier = set(), {segment_id}
    while frontier:
        frontier = {
            s.pk for s in segments if s.pk not in found and segment_refs(s.definition) & frontier
        }
        found |= frontier
    return found


def _record(segment_id: int, *, joins: Iterable[int], leaves: Iterable[int], at) -> None:
    record_changes({segment_id: (joins, leaves)}, at=at)


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


def segments_refresh_reading(field: str, *, at: datetime | None = None) -> int:
    """Refresh the dynamic segments whose definition reads ``field`` (and those reading
    them), e.g. every segment on the score after a rescore moved scores across the board;
    returns how many were refreshed."""
    from .dependencies import definition_dependencies

    now = timezone.now()
    at = at or now
    ordered = dynamic_segments_in_order()
    reading = {s.pk for s in ordered if field in definition_dependencies(s.definition).fields}
    for segment_id in list(reading):
        reading |= _dependents(segment_id, ordered)
    if reading:
        with transaction.atomic():
            for segment in ordered:
                if segment.pk in reading:
                    _refresh_one(segment, now=now, at=at)
    return len(reading)


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
