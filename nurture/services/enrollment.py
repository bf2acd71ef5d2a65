"""Entering and leaving programs: enroll, exit, and the entry triggers run by the tick."""

from __future__ import annotations

import calendar
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db import transaction
from django.db.models import Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from crm import events
from crm.models import Contact, SegmentChange, SegmentMembership

from ..models import LIVE_STATES, Enrollment, Program, Step, Trigger

log = logging.getLogger(__name__)
# Exit reasons (Enrollment.exit_reason).
EXIT_GOAL = "goal"
EXIT_MQL = "became_mql"
EXIT_ACCEPTED = "accepted_by_sales"
EXIT_SUPPRESSED = "suppressed"
EXIT_UNSUBSCRIBED_PROGRAM = "unsubscribed_program"
EXIT_MANUAL = "removed"
EXIT_MOVED = "moved"
EXIT_MERGED = "merged"
# Not an exit: the mark of a live enrollment held on a step that failed for it (the sender
# clears it when the enrollment moves on).
HELD_STEP_ERROR = "step_error"
MAX_CATCH_UP_DAYS = 7
SEGMENT_JOINS_PER_RUN = 50_000  # per trigger and tick; the next tick goes on from there


@dataclass(frozen=True)
class EnrollmentsCreated:
    """Enrollments just created in one program at one instant (``entered_at``) for these
    contacts (a concurrent call may have dropped some of them: handlers read the rows)."""

    program_id: int
    contact_ids: frozenset[int]
    entered_at: datetime


def contacts_enroll(
    *,
    program: Program,
    contact_ids: Iterable[int],
    source: str,
    now: datetime | None = None,
    new_round: bool = False,
) -> int:
    """Enroll the eligible contacts; return how many entered (held-out ones included).

    Eligible: not live in the program already, allowed by the re-entry policy, in the
    program's audience segment when it has one, and not opted out of this program.
    ``new_round``: each entry is an event of its own (a lead recycled again, in a new
    recycle round), so the re-entry policy — meant for a trigger firing again on the same
    behaviour — does not hold it back.
    Concurrent calls are safe: the conditional unique constraint drops a second live row.
    """
    now = now or timezone.now()
    ids = set(contact_ids)
    if not ids or program.status == Program.Status.ARCHIVED:
        return 0
    first_step = program.steps.order_by("position", "id").first()
    previous = Enrollment.objects.filter(program=program, contact_id__in=ids)
    blocked = previous.filter(Q(state__in=LIVE_STATES) | Q(exit_reason=EXIT_UNSUBSCRIBED_PROGRAM))
    if new_round:
        pass  # only live rows and program opt-outs hold it back
    elif program.reentry == Program.Reentry.NEVER:
        blocked = previous
    elif program.reentry == Program.Reentry.AFTER_DAYS:
        blocked = previous.filter(
            Q(state__in=LIVE_STATES)
            | Q(exit_reason=EXIT_UNSUBSCRIBED_PROGRAM)
            | Q(entered_at__gt=now - timedelta(days=program.reentry_days))
        )
    ids -= set(blocked.values_list("contact_id", flat=True))
    if program.reentry == Program.Reentry.ALWAYS and program.holdout_percent and ids:
        # Held-out rows are never live, so "each time the trigger fires" would add one on
        # every firing (a page-visit trigger: one a visit). The reports count held-out
        # entrants per site-time-zone day, so one held-out row per contact and day is all
        # they read: later firings that day add nothing.
        held = {cid for cid in ids if program.is_held_out(cid)}
        day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
        ids -= set(
            previous.filter(
                contact_id__in=held,
                state=Enrollment.State.HELD_OUT,
                entered_at__gte=day_start,
                entered_at__lt=day_start + timedelta(days=1),
            ).values_list("contact_id", flat=True)
        )
    if program.audience_id and ids:
        ids &= set(
            SegmentMembership.objects.filter(
                segment_id=program.audience_id, contact_id__in=ids
            ).values_list("contact_id", flat=True)
        )
    # Only contacts that exist (ids may come from an API call).
    ids = set(Contact.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else ids
    rows = []
    for cid in sorted(ids):
        held = program.is_held_out(cid)
        rows.append(
            Enrollment(
                contact_id=cid,
                program=program,
                state=Enrollment.State.HELD_OUT if held else Enrollment.State.ACTIVE,
                current_step=None if held else first_step,
                next_run_at=None if held else now,
                entered_at=now,
                source=source[:20],
            )
        )
    if not rows:
        return 0
    with transaction.atomic():
        Enrollment.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        # Other apps keep figures per enrolled contact (reports' nurtured vs non-nurtured
        # rows): once per batch, inside this transaction.
        events.publish(
            "ENROLLMENTS_CREATED_HANDLERS",
            EnrollmentsCreated(program_id=program.pk, contact_ids=frozenset(ids), entered_at=now),
        )
    return len(rows)


def enrollments_exit(*, queryset, reason: str, now: datetime | None = None) -> int:
    """End live enrollments (set-based); return how many."""
    now = now or timezone.now()
    return queryset.filter(state__in=LIVE_STATES).update(
        state=Enrollment.State.EXITED, exited_at=now, exit_reason=reason, next_run_at=None
    )


def enrollment_remove(*, enrollment: Enrollment) -> None:
    enrollments_exit(queryset=Enrollment.objects.filter(pk=enrollment.pk), reason=EXIT_MANUAL)


def program_enroll_segment(*, program: Program, segment_id: int, source: str = "manual") -> int:
    ids = SegmentMembership.objects.filter(segment_id=segment_id).values_list(
        "contact_id", flat=True
    )
    with transaction.atomic():
        return contacts_enroll(program=program, contact_ids=list(ids), source=source)


def triggers_run(*, now: datetime | None = None) -> int:
    """Segment-join and date triggers of active programs; return contacts enrolled."""
    now = now or timezone.now()
    entered = 0
    triggers = Trigger.objects.filter(
        program__status=Program.Status.ACTIVE,
        kind__in=[Trigger.Kind.SEGMENT_JOINED, Trigger.Kind.DATE],
    ).select_related("program")
    for trigger in triggers:
        try:
            entered += _trigger_run(trigger, now)
        except Exception:
            # One broken entry rule must not stop the others, nor the tick's sending after
            # them: its transaction rolled back (cursor unmoved), and it is tried again at
            # the next tick, logged each time until it is fixed.
            log.exception(
                "entry rule %s of program %s failed; the other rules go on",
                trigger.pk,
                trigger.program_id,
            )
    return entered


def _trigger_run(trigger: Trigger, now: datetime) -> int:
    with transaction.atomic():
        # Lock the trigger so two ticks never process the same cursor range twice.
        locked = Trigger.objects.select_for_update(skip_locked=True).filter(pk=trigger.pk).first()
        if locked is None:
            return 0
        locked.program = trigger.program
        if locked.kind == Trigger.Kind.SEGMENT_JOINED:
            return _run_segment_trigger(locked, now)
        return _run_date_trigger(locked, now)


def _run_segment_trigger(trigger: Trigger, now: datetime) -> int:
    """Enroll the contacts of the segment's joins after the trigger's cursor; move it on.

    The cursor is a position in the change log's ``(xid, id)`` order and only settled
    joins are read (:class:`crm.models.SegmentChange`): a join that commits later always
    sorts after every settled one, so the cursor never passes a join still to come (in id
    order it could: ids are taken at INSERT, rows appear at COMMIT). The cursor moves in
    the transaction that enrolls, under the trigger's row lock, so no join is read twice;
    the program's re-entry rule decides what a contact's later join does. The price is a
    delay: a join waits for every write transaction older than its own to end.
    """
    joins = (
        SegmentChange.objects.filter(segment_id=trigger.segment_id, kind=SegmentChange.Kind.JOINED)
        .settled()
        .after((trigger.last_change_xid, trigger.last_change_id))
        .in_log_order()
    )
    rows = list(joins.values_list("xid", "pk", "contact_id")[:SEGMENT_JOINS_PER_RUN])
    if not rows:
        return 0
    entered = contacts_enroll(
        program=trigger.program,
        contact_ids={cid for _, _, cid in rows},
        source=Trigger.Kind.SEGMENT_JOINED,
        now=now,
    )
    last_xid, last_id, _ = rows[-1]
    Trigger.objects.filter(pk=trigger.pk).update(last_change_xid=last_xid, last_change_id=last_id)
    return entered


def date_trigger_contacts(trigger: Trigger, day: date):
    """Contacts whose ``attributes[date_attribute]`` (ISO date) falls ``offset_days`` from day.

    ``offset_days = -3`` means three days before the date, so the date looked for is three
    days after ``day``. Yearly triggers match on month and day; a 29 February date is
    matched on 28 February in common years (else it would fire only every fourth year).
    """
    target = day - timedelta(days=trigger.offset_days)
    if trigger.yearly:
        day_months = [f"{target:%m-%d}"]
        if (target.month, target.day) == (2, 28) and not calendar.isleap(target.year):
            day_months.append("02-29")
        query = Q()
        for day_month in day_months:
            # "1990-05-17" or a year-less "05-17" (as CRM imports often bring birthdays).
            query |= Q(trigger_date__endswith=f"-{day_month}") | Q(trigger_date=day_month)
    else:
        query = Q(trigger_date__startswith=target.isoformat())
    # The key is an expression, never spelled into a lookup path ("attributes__<key>"):
    # any slug is a valid attribute name, and one named like a lookup ("range", "isnull",
    # "contains") would be read as that lookup, not as the key. Cast to text so that the
    # comparisons are plain text ones (KeyTextTransform keeps the JSON key lookups, whose
    # "exact" compares with the value JSON-decoded: "05-17" is malformed JSON on SQLite).
    value = Cast(KeyTextTransform(trigger.date_attribute, "attributes"), TextField())
    return Contact.objects.alias(trigger_date=value).filter(query)


def _run_date_trigger(trigger: Trigger, now: datetime) -> int:
    today = timezone.localdate(now)
    if not trigger.date_attribute or trigger.last_run_on == today:
        return 0
    start = trigger.last_run_on + timedelta(days=1) if trigger.last_run_on else today
    start = max(start, today - timedelta(days=MAX_CATCH_UP_DAYS))
    entered = 0
    day = start
    while day <= today:
        ids = list(date_trigger_contacts(trigger, day).values_list("pk", flat=True))
        entered += contacts_enroll(
            program=trigger.program, contact_ids=ids, source=Trigger.Kind.DATE, now=now
        )
        day += timedelta(days=1)
    Trigger.objects.filter(pk=trigger.pk).update(last_run_on=today)
    return entered


def first_step(program: Program) -> Step | None:
    return program.steps.order_by("position", "id").first()
