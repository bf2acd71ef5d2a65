"""Automation rules (program triggers) in the register, and what changed on an item.

An automation rule starts with its program, or when it is added to a running one (the
register's first sync after it, ``triggers``). Its entrants are the program's
enrollments that entered through that kind of trigger (``Enrollment.source``): a program
with two triggers of the same kind shares that count between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone


@dataclass(frozen=True)
class Edit:
    at: datetime
    text: str


def triggers(*, now: datetime) -> Iterator[dict]:
    from nurture.models import Program, Trigger

    from .models import ReviewItem
    from .snapshots import _program_start

    triggers = Trigger.objects.select_related("program__campaign").exclude(
        program__status=Program.Status.ARCHIVED
    )
    for t in triggers.order_by("pk"):
        yield {
            "type": ReviewItem.Type.AUTOMATION,
            "object_id": t.pk,
            "name": f"{t.program.name}: {t.get_kind_display().lower()}",
            "owner_id": t.program.campaign.owner_id,
            # A rule added to a running program starts when it appears (the first sync
            # after it was made: a trigger has no time of its own), not with its program.
            "started_at": max(_program_start(t.program) or now, now),
        }


def entrants(trigger_id: int | None, *, start: datetime, end: datetime) -> int:
    from nurture.models import Enrollment, Trigger

    trigger = Trigger.objects.filter(pk=trigger_id).first()
    if trigger is None:
        return 0
    return (
        Enrollment.objects.filter(
            program_id=trigger.program_id,
            source=trigger.kind,
            entered_at__gte=start,
            entered_at__lt=end,
        )
        .values("contact_id")
        .distinct()
        .count()
    )


def changes(item, *, start: datetime, end: datetime) -> list[Edit]:
    """Edits to the item between ``start`` and ``end``, so a reviewer sees why a figure moved."""
    from .models import ReviewItem

    edits: list[Edit] = []
    if item.type in (ReviewItem.Type.SCORING,):
        from scoring.models import RuleVersion

        for v in RuleVersion.objects.filter(at__gte=start, at__lt=end).select_related("rule", "by"):
            fields = ", ".join(v.changed) if v.changed else "created"
            edits.append(
                Edit(v.at, f"Rule “{v.rule.name}” v{v.number} ({fields}) by {v.by or 'system'}")
            )
    if item.type in (ReviewItem.Type.PROGRAM, ReviewItem.Type.AUTOMATION):
        from nurture.models import EmailTemplate, Program, Trigger

        program_id = item.object_id
        if item.type == ReviewItem.Type.AUTOMATION:
            program_id = (
                Trigger.objects.filter(pk=item.object_id)
                .values_list("program_id", flat=True)
                .first()
            )
        program = Program.objects.filter(pk=program_id).first()
        if program is not None:
            if start <= program.updated_at < end:
                edits.append(Edit(program.updated_at, "Program settings changed"))
            steps = program.steps.filter(created_at__gte=start, created_at__lt=end)
            edits.extend(
                Edit(st.created_at, f"Step {st.position} added ({st.get_kind_display().lower()})")
                for st in steps
            )
            templates = EmailTemplate.objects.filter(
                steps__program=program, updated_at__gte=start, updated_at__lt=end
            ).distinct()
            edits.extend(Edit(t.updated_at, f"Email template “{t.name}” edited") for t in templates)
    if item.type == ReviewItem.Type.CONTENT:
        from .models import ContentAsset

        asset = ContentAsset.objects.filter(pk=item.object_id).first()
        if asset and start <= asset.created_at < end:
            edits.append(Edit(asset.created_at, "Asset published"))
    return sorted(edits, key=lambda e: e.at or timezone.now(), reverse=True)
