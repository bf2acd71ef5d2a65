"""Helpers to build report datasets by hand."""

from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings

from crm.models import Activity, ActivityKind, LifecycleTransition
from reports.credit_facts import sales_cycle_apply_transitions
from reports.csat_facts import csat_apply_activities
from reports.holdout_facts import holdout_apply_transitions
from reports.lifecycle_facts import (
    lifecycle_facts_apply_activities,
    lifecycle_facts_apply_transitions,
)
from reports.stage_facts import stage_facts_apply_transitions

UTC = ZoneInfo("UTC")


def at(s: str, tz=UTC) -> datetime:
    """'2025-03-02 10:00' → aware datetime (UTC unless told)."""
    fmt = "%Y-%m-%d %H:%M" if " " in s else "%Y-%m-%d"
    return datetime.strptime(s, fmt).replace(tzinfo=tz)


def act(contact, kind, when, campaign=None, message_id="", **kw) -> Activity:
    """An activity, with the lifecycle facts upkeep the ingestion handler would run."""
    a = Activity.objects.create(
        contact=contact,
        kind=kind,
        occurred_at=at(when) if isinstance(when, str) else when,
        campaign=campaign,
        message_id=message_id,
        **kw,
    )
    lifecycle_facts_apply_activities(activities=[a])
    csat_apply_activities([a])  # reports.csat_facts' handler
    return a


def move(contact, from_stage, to_stage, when) -> LifecycleTransition:
    """A stage change, with the lifecycle facts upkeep the stage-changed handler would run."""
    t = LifecycleTransition.objects.create(
        contact=contact,
        from_stage=from_stage,
        to_stage=to_stage,
        at=at(when) if isinstance(when, str) else when,
    )
    lifecycle_facts_apply_transitions(transitions=[t])
    stage_facts_apply_transitions(transitions=[t])
    holdout_apply_transitions(transitions=[t])
    sales_cycle_apply_transitions([t])
    return t


def email_flags(kind, flag: bool, hour: int) -> dict:
    """Activity fields of a random email event: ``flag`` makes an open a machine's, and a
    click a machine's (even ``hour``) or one on the unsubscribe link (odd): neither is a
    click (METRICS.md "unique clicks")."""
    if kind == ActivityKind.EMAIL_OPENED:
        return {"is_machine": flag}
    if kind != ActivityKind.EMAIL_CLICKED:
        return {}
    if flag and hour % 2:
        return {"url": f"{settings.SITE_URL}/u/token"}
    return {"url": "https://x.example/offer", "is_machine": flag}
