"""Pure step logic used by the sender: waits, send windows, branch conditions."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta

from django.utils import timezone

from crm.models import Activity, ActivityKind, SegmentMembership

from ..models import EmailSend, Enrollment, Program, Step


def wait_until(step: Step, now: datetime) -> datetime:
    """When a wait step ends: after N hours/days, or at the next weekday/hour (site time)."""
    cfg = step.config or {}
    if "weekday" in cfg:
        local = timezone.localtime(now)
        hour = int(cfg.get("hour", 9))
        days_ahead = (int(cfg["weekday"]) - local.weekday()) % 7
        candidate = (local + timedelta(days=days_ahead)).replace(
            hour=hour, minute=0, second=0, microsecond=0
        )
        if candidate <= local:
            candidate += timedelta(days=7)
        return candidate
    hours = float(cfg.get("hours", 0) or 0) + 24 * float(cfg.get("days", 0) or 0)
    return now + timedelta(hours=hours)


def contact_zone(program: Program, tz_name: str):
    if program.use_contact_timezone and tz_name:
        try:
            return zoneinfo.ZoneInfo(tz_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.get_current_timezone()


def _in_window(program: Program, local: datetime) -> bool:
    days = program.send_days or list(range(7))
    return local.weekday() in days and program.send_hour_start <= local.hour < program.send_hour_end


def next_window_opening(program: Program, tz_name: str, now: datetime) -> datetime | None:
    """``None`` when ``now`` is inside the send window, else the next time it opens."""
    local = now.astimezone(contact_zone(program, tz_name))
    if _in_window(program, local):
        return None
    candidate = local.replace(minute=0, second=0, microsecond=0)
    for _ in range(8 * 24):
        candidate += timedelta(hours=1)
        if _in_window(program, candidate):
            return candidate
    return now + timedelta(days=1)  # an empty window: check again tomorrow


def branch_holds(enrollment: Enrollment, step: Step) -> bool:
    """Evaluate a branch condition for one enrollment (a query at most)."""
    cond = (step.config or {}).get("condition") or {}
    kind = cond.get("type")
    contact = enrollment.contact
    if kind in ("opened", "clicked"):
        last = (
            EmailSend.objects.filter(enrollment=enrollment, status=EmailSend.Status.SENT)
            .order_by("-sent_at", "-id")
            .values_list("message_id", flat=True)
            .first()
        )
        if not last:
            return False
        kinds = [ActivityKind.EMAIL_CLICKED]
        if kind == "opened":  # a click implies an open (METRICS.md, unique opens)
            kinds.append(ActivityKind.EMAIL_OPENED)
        return (
            Activity.objects.filter(message_id=last, kind__in=kinds, contact_id=contact.pk)
            .exclude(is_machine=True)
            .exists()
        )
    if kind == "score_above":
        return contact.scorecard.score > int(cond.get("value", 0))
    if kind == "in_segment":
        return SegmentMembership.objects.filter(
            segment_id=cond.get("segment"), contact_id=contact.pk
        ).exists()
    if kind == "activity_since":
        return Activity.objects.filter(
            contact_id=contact.pk, kind=cond.get("kind"), occurred_at__gte=enrollment.entered_at
        ).exists()
    return False
