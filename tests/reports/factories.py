"""Helpers to build report datasets by hand."""

from datetime import datetime
from zoneinfo import ZoneInfo

from crm.models import Activity, LifecycleTransition

UTC = ZoneInfo("UTC")


def at(s: str, tz=UTC) -> datetime:
    """'2025-03-02 10:00' → aware datetime (UTC unless told)."""
    fmt = "%Y-%m-%d %H:%M" if " " in s else "%Y-%m-%d"
    return datetime.strptime(s, fmt).replace(tzinfo=tz)


def act(contact, kind, when, campaign=None, message_id="", **kw) -> Activity:
    return Activity.objects.create(
        contact=contact,
        kind=kind,
        occurred_at=at(when) if isinstance(when, str) else when,
        campaign=campaign,
        message_id=message_id,
        **kw,
    )


def move(contact, from_stage, to_stage, when) -> LifecycleTransition:
    return LifecycleTransition.objects.create(
        contact=contact,
        from_stage=from_stage,
        to_stage=to_stage,
        at=at(when) if isinstance(when, str) else when,
    )
