"""Segment membership replayed over a loaded history (the demo data, ``seed_demo``).

A history load stores a year of activities and stage changes at once; one refresh would
then date every segment's joins at the load and leave the segment page's join/leave chart
empty. Here each dynamic segment is evaluated as of every week of the history (local
midnights, in dependency order so ``in_segment`` reads the membership of that week) and
the differences are written as joins and leaves. "As of" a moment, through the one
compiler (:func:`crm.segments.definition._compile`), on a rewritten definition:

* behaviour conditions count only the activities before that moment: "within the last N
  days" becomes the ``between`` of those days, an unbounded one ``between`` the epoch and
  the day before (exact, the moment being a midnight);
* ``stage`` is the stage the contact's history gives at that moment, ``email_status`` is
  ``active`` before its recorded change (through an extension condition, ``as_of``);
* contacts not yet created are no members.

Approximations, said here and in the README: other profile fields (title, company,
owner, score …) and extension conditions read today's values — they have no history; a
change found between two weekly evaluations is dated at the contact's last event in that
week (a person's engagement, a stage change, the email status change or the creation) —
the one that most plausibly caused it — or, with none (a window that ran out, a "did
not" that came true), at the evaluation. The caller's refresh at the end makes the
membership exactly current.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Max, OuterRef, Q, Subquery, Value, When
from django.db.models.lookups import Exact, In
from django.utils import timezone

from crm import bulkload
from crm.models import (
    Activity,
    Contact,
    LifecycleTransition,
    SegmentChange,
    SegmentMembership,
)
from crm.models.activities import engagement_q
from crm.segments import dynamic_segments_in_order
from crm.segments.definition import _compile, condition_providers
from crm.segments.membership import CHUNK, batched

STEP = timedelta(days=7)
AS_OF = "as_of"  # the extension condition of a profile field that has a history
EPOCH = "1970-01-01"


def membership_replay(*, start: datetime, end: datetime, step: timedelta = STEP) -> int:
    """Write every dynamic segment's joins and leaves at each ``step`` (from local midnight
    after ``start``) before ``end``; returns the number of evaluations per segment. The
    stored membership must be empty (new segments)."""
    # Fifty evaluations of every segment: worth giving the planner the loaded rows' stats.
    bulkload.statistics_refresh(Contact, Activity, LifecycleTransition)
    segments = dynamic_segments_in_order()
    day = timezone.localtime(start).date() + timedelta(days=1)
    moments = []
    while (t := _midnight(day)) < end:
        moments.append(t)
        day += step
    for t in moments:
        # A transaction per week: SQLite would otherwise commit (and sync) every write.
        with transaction.atomic():
            events = _Events(t - step, t)
            for segment in segments:
                _segment_replay(segment, t, events)
    return len(moments)


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _segment_replay(segment, t: datetime, events: _Events) -> None:
    q = _compile(as_of(segment.definition, t), t, {**condition_providers(), AS_OF: AsOf(t)})
    now_in = set(Contact.objects.filter(q, created_at__lt=t).values_list("pk", flat=True))
    was_in = set(
        SegmentMembership.objects.filter(segment_id=segment.pk).values_list("contact_id", flat=True)
    )
    joins, leaves = now_in - was_in, was_in - now_in
    if joins or leaves:
        _changes_write(segment.pk, events.when(joins), events.when(leaves))


def as_of(node: Any, t: datetime) -> Any:
    """The definition ``node`` evaluated at ``t`` (a local midnight) as it would have been
    then: behaviour conditions bounded to activities before ``t``, ``stage`` and
    ``email_status`` read from their history (:class:`AsOf`)."""
    if not isinstance(node, dict):
        return node
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        return {key: [as_of(child, t) for child in node[key]]}
    if "not" in node:
        return {"not": as_of(node["not"], t)}
    if "did" in node or "did_not" in node:
        return _behaviour_as_of(node, t)
    if node.get("field") in AsOf.FIELDS:
        return {AS_OF: node}
    return node


def _behaviour_as_of(node: dict, t: datetime) -> dict:
    """``within_last_days`` (and any ``between``) as a ``between`` ending the day before
    ``t``: activities at or after ``t`` had not happened yet."""
    node = dict(node)
    days = node.pop("within_last_days", None)
    first = (t - timedelta(days=days)).date().isoformat() if days else EPOCH
    last = (t - timedelta(days=1)).date().isoformat()
    if node.get("between"):
        lo, hi = node["between"]
        first, last = max(first, lo), min(last, hi)
    node["between"] = [first, last]
    return node


class AsOf:
    """Extension condition ``{"as_of": <profile condition>}``: the condition on the value
    its field had at ``t`` (segment condition provider contract, crm.segments)."""

    FIELDS = ("stage", "email_status")

    def __init__(self, t: datetime):
        self.t = t

    def validate(self, condition: dict) -> None:  # built by as_of() only, never saved
        pass

    def build(self, condition: dict) -> Q:
        node = condition[AS_OF]
        value = self._value(node["field"])
        op, wanted = node["op"], node.get("value")
        if op in ("equals", "not_equals"):
            q = Q(Exact(value, wanted))
        elif op in ("in", "not_in"):
            q = Q(In(value, list(wanted)))
        else:  # is_empty / is_not_empty: neither field is ever empty once the contact exists
            q = Q(Exact(value, ""))
            op = "equals" if op == "is_empty" else "not_equals"
        return ~q if op.startswith("not") else q

    def _value(self, field: str):
        if field == "stage":  # the last stage change at or before t
            return Subquery(
                LifecycleTransition.objects.filter(contact=OuterRef("pk"), at__lte=self.t)
                .order_by("-at", "-pk")
                .values("to_stage")[:1]
            )
        # One email status change is recorded: active until then.
        return Case(
            When(email_status_changed_at__gt=self.t, then=Value("active")),
            default=F("email_status"),
        )


class _Events:
    """Each contact's last event in ``[lo, hi)`` — a person's engagement, a stage change,
    its email status change or its creation — read for the contacts asked about, once."""

    def __init__(self, lo: datetime, hi: datetime):
        self.lo, self.hi = lo, hi
        self.known: dict[int, datetime | None] = {}

    def when(self, contact_ids: set[int]) -> dict[int, datetime]:
        missing = sorted(set(contact_ids) - set(self.known))
        for chunk in batched(missing, CHUNK):
            self.known.update(dict.fromkeys(chunk))
            for rows in self._latest(chunk):
                for contact_id, at in rows:
                    if at is not None and (self.known[contact_id] or at) <= at:
                        self.known[contact_id] = at
        return {c: self.known[c] or self.hi for c in contact_ids}

    def _latest(self, ids: list[int]):
        window = {"gte": self.lo, "lt": self.hi}

        def during(name: str) -> Q:
            return Q(**{f"{name}__{k}": v for k, v in window.items()})

        yield (
            Activity.objects.filter(engagement_q(), during("occurred_at"), contact_id__in=ids)
            .order_by()
            .values("contact_id")
            .annotate(at=Max("occurred_at"))
            .values_list("contact_id", "at")
        )
        yield (
            LifecycleTransition.objects.filter(during("at"), contact_id__in=ids)
            .order_by()
            .values("contact_id")
            .annotate(last=Max("at"))
            .values_list("contact_id", "last")
        )
        yield Contact.objects.filter(during("created_at"), pk__in=ids).values_list(
            "pk", "created_at"
        )
        yield Contact.objects.filter(during("email_status_changed_at"), pk__in=ids).values_list(
            "pk", "email_status_changed_at"
        )


def _changes_write(
    segment_id: int, joins: dict[int, datetime], leaves: dict[int, datetime]
) -> None:
    """Joins and leaves, each at its own time (``membership.record_changes`` writes one
    time for all; the seeder is the only writer here)."""
    SegmentMembership.objects.bulk_create(
        [
            SegmentMembership(segment_id=segment_id, contact_id=c, joined_at=at)
            for c, at in joins.items()
        ],
        batch_size=CHUNK,
    )
    for chunk in batched(sorted(leaves), CHUNK):
        SegmentMembership.objects.filter(segment_id=segment_id, contact_id__in=chunk).delete()
    kind = SegmentChange.Kind
    changes = [(at, c, kind.JOINED) for c, at in joins.items()]
    changes += [(at, c, kind.LEFT) for c, at in leaves.items()]
    SegmentChange.objects.bulk_create(
        [
            SegmentChange(segment_id=segment_id, contact_id=c, kind=k, at=at)
            for at, c, k in sorted(changes)
        ],
        batch_size=CHUNK,
    )
