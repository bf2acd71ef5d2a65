"""Program builder writes: status changes, step order, triggers."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from ..models import Program, ProgramChange, Step, Trigger

EXIT_ARCHIVED = "archived"


class ProgramArchived(ValueError):
    """An archived program's status is final."""


def program_change_note(*, program: Program, by, summary: str) -> None:
    """Record an edit of ``program`` (its register history, models.ProgramChange)."""
    user = by if by is not None and by.is_authenticated else None
    ProgramChange.objects.create(program=program, by=user, summary=summary[:300])


def step_label(step: Step) -> str:
    return f"step {step.position} ({step.get_kind_display().lower()})"


def trigger_label(trigger: Trigger) -> str:
    segment = f" “{trigger.segment.name}”" if trigger.segment_id else ""
    return f"{trigger.get_kind_display().lower()}{segment}"


@transaction.atomic
def program_set_status(*, program: Program, status: str, by=None) -> Program:
    """Pause keeps every enrollment where it is; resuming picks up overdue steps.
    Archiving ends the live enrollments (exit reason "archived"): an archived program sends
    nothing again, so none may count as "in the program" or wait to fire all at once — and
    it stays archived (its review-register item is retired with it)."""
    from .enrollment import enrollments_exit

    if program.status == Program.Status.ARCHIVED and status != Program.Status.ARCHIVED:
        raise ProgramArchived("An archived program stays archived; copy it to run it again.")
    before = Program.objects.filter(pk=program.pk).values_list("status", flat=True).first()
    Program.objects.filter(pk=program.pk).update(status=status)
    if status == Program.Status.ARCHIVED:
        enrollments_exit(queryset=program.enrollments.all(), reason=EXIT_ARCHIVED)
    program.status = status
    if before != status:
        labels = dict(Program.Status.choices)
        program_change_note(
            program=program,
            by=by,
            summary=f"Status {labels.get(before, before).lower()} → {labels[status].lower()}",
        )
    return program


@transaction.atomic
def step_move(*, step: Step, up: bool, by=None) -> None:
    """Swap a step with its neighbour (positions renumbered 1..n so swaps stay simple)."""
    steps = list(
        Step.objects.select_for_update()
        .filter(program_id=step.program_id)
        .order_by("position", "id")
    )
    ids = [s.pk for s in steps]
    i = ids.index(step.pk)
    j = i - 1 if up else i + 1
    moved = 0 <= j < len(ids)
    if moved:
        ids[i], ids[j] = ids[j], ids[i]
    for position, pk in enumerate(ids, start=1):
        Step.objects.filter(pk=pk).update(position=position)
    if moved:
        program_change_note(
            program=step.program,
            by=by,
            summary=f"{step_label(steps[i]).capitalize()} moved {'up' if up else 'down'}",
        )


@transaction.atomic
def step_delete(*, step: Step, by=None) -> None:
    """Delete a step; what pointed at it points at the step that followed it.

    Enrollments standing on it move on to that step — those waiting on a deleted wait
    step become due for it at the time their wait ends. A branch side that led to it leads
    to that step; when it was the last step, to a new "end" step (the side ends, as it
    did), never to an id the sender cannot find.
    """
    from ..models import Enrollment

    siblings = Step.objects.select_for_update().filter(program_id=step.program_id)
    steps = list(siblings.order_by("position", "id"))
    later = [s for s in steps if s.pk != step.pk and (s.position, s.pk) > (step.position, step.pk)]
    following = later[0] if later else None
    branches = [
        s
        for s in steps
        if s.kind == Step.Kind.BRANCH
        and step.pk in ((s.config or {}).get("yes_step"), (s.config or {}).get("no_step"))
    ]
    if branches and following is None:
        following = step_append(program=step.program, kind=Step.Kind.END)
    for branch in branches:
        branch.config = {
            **branch.config,
            **{
                key: following.pk
                for key in ("yes_step", "no_step")
                if branch.config.get(key) == step.pk
            },
        }
        branch.save(update_fields=["config"])
    Enrollment.objects.filter(current_step=step, state=Enrollment.State.WAITING).update(
        current_step=following, state=Enrollment.State.ACTIVE
    )
    Enrollment.objects.filter(current_step=step).update(current_step=following)
    label = step_label(step)
    step.delete()
    program_change_note(program=step.program, by=by, summary=f"{label.capitalize()} deleted")


def step_append(*, program: Program, **fields) -> Step:
    position = (program.steps.aggregate(m=Max("position"))["m"] or 0) + 1
    return Step.objects.create(program=program, position=position, **fields)


@transaction.atomic
def step_create(*, step: Step, by=None) -> Step:
    """Append ``step`` (unsaved, its program set) as the program's last step."""
    step.position = (step.program.steps.aggregate(m=Max("position"))["m"] or 0) + 1
    step.save()
    program_change_note(
        program=step.program, by=by, summary=f"{step_label(step).capitalize()} added"
    )
    return step


def step_edited(*, step: Step, fields: list[str], by=None) -> None:
    """Note a saved edit of ``step`` (the names of the fields that changed)."""
    if fields:
        program_change_note(
            program=step.program,
            by=by,
            summary=f"{step_label(step).capitalize()} edited: {', '.join(fields)}",
        )


def program_edited(*, program: Program, fields: list[str], by=None) -> None:
    """Note a saved edit of the program's settings (the names of the fields changed)."""
    if fields:
        program_change_note(
            program=program, by=by, summary=f"Settings changed: {', '.join(fields)}"
        )


@transaction.atomic
def trigger_delete(*, trigger: Trigger, by=None) -> None:
    summary = f"Entry rule removed: {trigger_label(trigger)}"
    program = trigger.program
    trigger.delete()
    program_change_note(program=program, by=by, summary=summary)


@transaction.atomic
def trigger_create(*, trigger: Trigger, by=None) -> Trigger:
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
    summary = f"Entry rule added: {trigger_label(trigger)}"
    program_change_note(program=trigger.program, by=by, summary=summary)
    return trigger
