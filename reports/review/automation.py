"""Automation rules (program triggers) in the register.

An automation rule starts with its program, or when it is added to a running one (the
register's first sync after it, ``triggers``). Its entrants are the program's
enrollments that entered through that kind of trigger (``Enrollment.source``): a program
with two triggers of the same kind shares that count between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime


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
