"""Step logic used by the sender — waits, send windows, branch conditions — and the one
check of a step's settings that the step form and the API share."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from crm.models import Activity, ActivityKind, Segment, SegmentMembership
from crm.models.activities import click_q, open_q, persons_q

from ..models import EmailSend, Enrollment, Program, Step

MAX_WAIT_HOURS = 24 * 365
MAX_WAIT_DAYS = 365
CONDITIONS = ("opened", "clicked", "score_above", "in_segment", "activity_since")
# The settings each kind of step has (Step's docstring); anything else is refused, so a
# misspelt key cannot silently change what a step does.
ALLOWED_KEYS = {
    Step.Kind.EMAIL: set(),
    Step.Kind.END: set(),
    Step.Kind.WAIT: {"hours", "days", "weekday", "hour"},
    Step.Kind.BRANCH: {"condition", "yes_step", "no_step"},
    Step.Kind.NOTIFY_OWNER: {"message"},
    Step.Kind.MOVE_TO_PROGRAM: {"program"},
}


def _whole(value, low: int, high: int) -> bool:
    # JSON true/false are ints to Python; a setting that takes a number refuses them.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def step_config_check(*, kind: str, config, template=None, program=None) -> dict:
    """Check a step's kind, settings and template; return the settings to store.

    ``program``: the step's program — a branch may send contacts only to its own steps.

    Raises ``ValidationError`` with messages keyed by setting (``days``, ``condition``,
    ``value`` …, ``template``). The step form and the API both call this, so what the
    sender reads (``wait_until``, ``branch_holds``, moves) was checked the same way
    whichever door it came in by.
    """
    if kind not in ALLOWED_KEYS:
        raise ValidationError({"kind": "Not a kind of step."})
    if not isinstance(config, dict):
        raise ValidationError({"config": "The settings are a JSON object."})
    errors: dict[str, str] = {}
    unknown = sorted(set(config) - ALLOWED_KEYS[kind])
    if unknown:
        errors["config"] = f"Not a setting of this kind of step: {', '.join(unknown)}."
    if kind == Step.Kind.EMAIL and template is None:
        errors["template"] = "An email step needs a template."
    clean: dict = {}
    if kind == Step.Kind.WAIT:
        clean = _wait_check(config, errors)
    elif kind == Step.Kind.BRANCH:
        clean = _branch_check(config, errors, program)
    elif kind == Step.Kind.NOTIFY_OWNER:
        message = config.get("message", "")
        if not isinstance(message, str) or len(message) > 200:
            errors["message"] = "A text of at most 200 characters."
        clean = {"message": message}
    elif kind == Step.Kind.MOVE_TO_PROGRAM:
        target = config.get("program")
        if not _whole(target, 1, 2**63 - 1) or not Program.objects.filter(pk=target).exists():
            errors["program"] = "Choose the program to move to."
        clean = {"program": target}
    if errors:
        raise ValidationError(errors)
    return clean


def _wait_check(config: dict, errors: dict) -> dict:
    if "weekday" in config or "hour" in config:
        if "hours" in config or "days" in config:
            errors["days"] = "Wait either hours/days or until a weekday and hour, not both."
        if not _whole(config.get("weekday"), 0, 6):
            errors["weekday"] = "A weekday from 0 (Monday) to 6."
        if not _whole(config.get("hour", 9), 0, 23):
            errors["hour"] = "An hour from 0 to 23."
        return {"weekday": config.get("weekday"), "hour": config.get("hour", 9)}
    hours, days = config.get("hours", 0), config.get("days", 0)
    if not _whole(hours, 0, MAX_WAIT_HOURS):
        errors["hours"] = f"A whole number of hours from 0 to {MAX_WAIT_HOURS}."
    if not _whole(days, 0, MAX_WAIT_DAYS):
        errors["days"] = f"A whole number of days from 0 to {MAX_WAIT_DAYS}."
    if not errors and not (hours or days):
        errors["days"] = "Give the wait in hours or days."
    return {k: v for k, v in (("hours", hours), ("days", days)) if v}


def _branch_check(config: dict, errors: dict, program=None) -> dict:
    cond = config.get("condition")
    kind = cond.get("type") if isinstance(cond, dict) else None
    if kind not in CONDITIONS:
        errors["condition"] = "Choose the condition to branch on."
        return {}
    clean_cond: dict = {"type": kind}
    if kind == "score_above":
        if not _whole(cond.get("value"), -(10**9), 10**9):
            errors["value"] = "Give the score as a whole number."
        clean_cond["value"] = cond.get("value")
    elif kind == "in_segment":
        segment = cond.get("segment")
        if not _whole(segment, 1, 2**63 - 1) or not Segment.objects.filter(pk=segment).exists():
            errors["value"] = "Give the id of a segment."
        clean_cond["segment"] = segment
    elif kind == "activity_since":
        if cond.get("kind") not in ActivityKind.values:
            errors["value"] = "Give an activity kind, e.g. form_submitted."
        clean_cond["kind"] = cond.get("kind")
    clean = {"condition": clean_cond}
    own = set(program.steps.values_list("pk", flat=True)) if program is not None else None
    for key in ("yes_step", "no_step"):
        target = config.get(key)
        if target is not None and not _whole(target, 1, 2**63 - 1):
            errors[key] = "A step id, or empty for the next step."
        elif target is not None and own is not None and target not in own:
            errors[key] = "Not a step of this program."
        clean[key] = target
    return clean


def wait_until(step: Step, now: datetime) -> datetime:
    """When a wait step ends: after N hours/days, or at the next weekday/hour (site time).

    Days are calendar days in the site's time zone (a wait of a day from 09:00 ends at
    09:00 the next day, across a daylight-saving change too); hours are elapsed hours."""
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
    days = float(cfg.get("days", 0) or 0)
    whole_days = int(days)
    hours = float(cfg.get("hours", 0) or 0) + 24 * (days - whole_days)
    # Aware arithmetic on the local time keeps the wall clock; then back to an instant.
    local = timezone.localtime(now) + timedelta(days=whole_days)
    return local.astimezone(UTC) + timedelta(hours=hours)


def contact_zone(program: Program, tz_name: str):
    if program.use_contact_timezone and tz_name:
        try:
            return zoneinfo.ZoneInfo(tz_name)
        # Not a zone: an unknown name, or a folder of the database ("US", "America"),
        # which ZoneInfo reports as an OSError. The site's zone then.
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
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
        # METRICS.md "unique opens"/"unique clicks": a click implies an open; a machine's
        # click or one on the unsubscribe link is no click (crm.models.activities)
        cond = open_q() if kind == "opened" else click_q()
        return Activity.objects.filter(cond, message_id=last, contact_id=contact.pk).exists()
    if kind == "score_above":
        return contact.scorecard.score > int(cond.get("value", 0))
    if kind == "in_segment":
        return SegmentMembership.objects.filter(
            segment_id=cond.get("segment"), contact_id=contact.pk
        ).exists()
    if kind == "activity_since":
        since = Q(contact_id=contact.pk, occurred_at__gte=enrollment.entered_at)
        return Activity.objects.filter(persons_q(cond.get("kind")), since).exists()
    return False
