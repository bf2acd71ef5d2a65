"""Program builder writes: status changes, step order, triggers."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from ..models import Program, Step, Trigger


def program_set_status(*, program: Program, status: str) -> Program:
    """Pause keeps every enrollment where it is; resuming picks up overdue steps."""
    Program.objects.filter(pk=program.pk).update(status=status)
    program.status = status
    return program


@transaction.atomic
def step_move(*, step: Step, up: bool) -> None:
    """Swap a step with its neighbour (positions renumbered 1..n so swaps stay simple)."""
    steps = list(
        Step.objects.select_for_update()
        .filter(program_id=step.program_id)
        .order_by("position", "id")
    )
    ids = [s.pk for s in steps]
    i = ids.index(step.pk)
    j = i - 1 if up else i + 1
    if 0 <= j < len(ids):
        ids[i], ids[j] = ids[j], ids[i]
    for position, pk in enumerate(ids, start=1):
        Step.objects.filter(pk=pk).update(position=position)


@transaction.atomic
def step_delete(*, step: Step) -> None:
    """Delete a step; enrollments standing on it move on to the following step."""
    from ..models import Enrollment

    following = (
        Step.objects.filter(program_id=step.program_id, position__gte=step.position)
        .exclude(pk=step.pk)
        .order_by("position", "id")
        .first()
    )
    Enrollment.objects.filter(current_step=step).update(current_step=following)
    step.delete()


def step_append(*, program: Program, **fields) -> Step:
    position = (program.steps.aggregate(m=Max("position"))["m"] or 0) + 1
    return Step.objects.create(program=program, position=position, **fields)


def trigger_create(*, trigger: Trigger) -> Trigger:
    """A segment trigger starts from now: members who joined before are not back-filled.

    Its cursor starts at the last join visible now (a join still uncommitted at this moment
    may count as before or after, as it was being written while the rule was created).
    """
    if trigger.kind == Trigger.Kind.SEGMENT_JOINED and trigger.segment_id:
        from crm.models import SegmentChange

        last = (
            SegmentChange.objects.filter(
                segment_id=trigger.segment_id, kind=SegmentChange.Kind.JOINED
            )
            .in_log_order()
            .values_list("xid", "pk")
            .last()
        )
        trigger.last_change_xid, trigger.last_change_id = last or (0, 0)
    trigger.save()
    return trigger
