"""The daily rollups' definitions, rebuild and reconciliation (see reports.models for the
design). Per-batch upkeep (signed deltas, never recomputation) is in reports.upkeep."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from itertools import islice

from django.db import transaction
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate

from crm.models import Activity, ActivityKind, LifecycleTransition
from crm.models.activities import click_q, converting_click_q, open_q
from crm.models.choices import EMAIL_KINDS, SOCIAL_KINDS

from .models import EmailDaily, StageDaily
from .query import day_start, site_tz

log = logging.getLogger(__name__)


def batched(items, size: int):
    """``itertools.batched`` (Python 3.12) for 3.11."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


K = ActivityKind
EMAIL_COUNT_FIELDS = [
    "sent",
    "bounced",
    "hard_bounced",
    "unique_opens",
    "machine_opens",
    "unique_clicks",
    "unsubscribed",
    "complaints",
    "conversions",
    "social_likes",
    "social_shares",
    "social_comments",
    "social_reposts",
]
# EmailStepDaily: the email counts without the social reactions.
STEP_FIELDS = [f for f in EMAIL_COUNT_FIELDS if not f.startswith("social_")]
ROLLUP_KINDS = EMAIL_KINDS | SOCIAL_KINDS
# Counted per event (no "first event of the email" rule), so a batch adds to its rows
# instead of recomputing them from raw data: sends (the nurture sender's hot path) and
# social reactions.
COUNTED_KINDS = {
    K.EMAIL_SENT: "sent",
    K.SOCIAL_LIKE: "social_likes",
    K.SOCIAL_SHARE: "social_shares",
    K.SOCIAL_COMMENT: "social_comments",
    K.SOCIAL_REPOST: "social_reposts",
}


# Events whose email's *first* event matters (the upkeep compares with earlier ones).
FIRST_EVENT_KINDS = {
    K.EMAIL_OPENED,
    K.EMAIL_CLICKED,
    K.EMAIL_BOUNCED,
    K.EMAIL_UNSUBSCRIBED,
    K.EMAIL_COMPLAINED,
}


def _same_email() -> Q:
    """Inner-query condition: the same email as the outer activity (contact + message/campaign)."""
    return Q(contact_id=OuterRef("contact_id"), message_id=OuterRef("message_id")) & Q(
        camp0=OuterRef("camp0")
    )


def _earlier() -> Q:
    return Q(occurred_at__lt=OuterRef("occurred_at")) | Q(
        occurred_at=OuterRef("occurred_at"), id__lt=OuterRef("id")
    )


def _inner():
    return Activity.objects.annotate(camp0=Coalesce("campaign_id", Value(0))).filter(
        _same_email(), _earlier()
    )


def first_event(cond: Q) -> Q:
    """The outer activity matches ``cond`` and is its email's first such event (the outer
    query annotates ``camp0``, as :func:`email_activities` does)."""
    return cond & ~Exists(_inner().filter(cond))


def email_fact_aggregates() -> dict:
    """Per-email first-event counts (METRICS.md lines 19–31), as aggregate expressions.

    Conversions (METRICS.md line 31): an email converts when *any* of its clicks is
    followed by the goal action within the window, not only its first click. Choice: the
    conversion counts once per email, on the day of its first click that converts (the
    click the goal action followed), as every other figure counts on its event's day.

    Unsubscribed (METRICS.md "unsubscribe rate"): an unsubscribe from all email or from
    the email's program only (``crm.models.activities``) — both are "unsubscribed from the
    email"; the email counts once, on the day of its first.
    """
    return {
        "sent": Count("id", filter=Q(kind=K.EMAIL_SENT)),
        "bounced": Count("id", filter=first_event(Q(kind=K.EMAIL_BOUNCED))),
        "hard_bounced": Count(
            "id", filter=first_event(Q(kind=K.EMAIL_BOUNCED, details__bounce_type="hard"))
        ),
        "unique_opens": Count("id", filter=first_event(open_q())),
        "machine_opens": Count("id", filter=first_event(Q(kind=K.EMAIL_OPENED, is_machine=True))),
        "unique_clicks": Count("id", filter=first_event(click_q())),
        "unsubscribed": Count("id", filter=first_event(Q(kind=K.EMAIL_UNSUBSCRIBED))),
        "complaints": Count("id", filter=first_event(Q(kind=K.EMAIL_COMPLAINED))),
        "conversions": Count("id", filter=first_event(converting_click_q())),
        "social_likes": Count("id", filter=Q(kind=K.SOCIAL_LIKE)),
        "social_shares": Count("id", filter=Q(kind=K.SOCIAL_SHARE)),
        "social_comments": Count("id", filter=Q(kind=K.SOCIAL_COMMENT)),
        "social_reposts": Count("id", filter=Q(kind=K.SOCIAL_REPOST)),
    }


def email_activities(start_dt, end_dt, *, campaign_ids=None, contact_q: Q | None = None):
    """Rollup-relevant activities in ``[start_dt, end_dt)`` with the email key annotated."""
    qs = Activity.objects.filter(
        occurred_at__gte=start_dt, occurred_at__lt=end_dt, kind__in=ROLLUP_KINDS
    ).annotate(camp0=Coalesce("campaign_id", Value(0)))
    if campaign_ids is not None:
        qs = qs.filter(camp0__in=campaign_ids)
    if contact_q is not None:
        qs = qs.filter(contact_q)
    return qs


def fact_rows(model, qs, *, fields: list[str], by_step: bool = False) -> list:
    """``model`` rows (``EmailDaily``/``EmailStepDaily``) from rollup activities ``qs``:
    per-email first-event counts by day × campaign × source (× step ``step`` annotation).
    Rows with no count are left out, as the upkeep deletes the rows it empties."""
    group = ["day", "camp0", "channel0", "source0", *(["step"] if by_step else [])]
    rows = (
        qs.annotate(
            day=TruncDate("occurred_at", tzinfo=site_tz()),
            channel0=Coalesce("campaign__channel", Value("")),
            source0=F("contact__source"),
        )
        .values(*group)
        .annotate(**{k: v for k, v in email_fact_aggregates().items() if k in fields})
        .order_by()
    )
    return [
        model(
            day=r["day"],
            campaign_id=r["camp0"],
            channel=r["channel0"],
            source=r["source0"],
            step_id=r["step"] if by_step else 0,
            **{f: r[f] for f in fields},
        )
        for r in rows
        if any(r[f] for f in fields)
    ]


def replace_rows(model, rows: list, start_day: date, end_day: date, *, fields, campaign_ids=None):
    """Replace ``model``'s rows of ``[start_day, end_day)`` (of ``campaign_ids``) by ``rows``."""
    qs = model.objects.filter(day__gte=start_day, day__lt=end_day)
    if campaign_ids is not None:
        qs = qs.filter(campaign_id__in=campaign_ids)
    qs.delete()
    model.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["day", "campaign_id", "source", "step_id"],
        update_fields=["channel", *fields],
    )


def _stage_rows(start_day: date, end_day: date) -> list[StageDaily]:
    rows = (
        LifecycleTransition.objects.filter(at__gte=day_start(start_day), at__lt=day_start(end_day))
        .annotate(
            day=TruncDate("at", tzinfo=site_tz()),
            camp0=Coalesce("contact__acquired_by_id", Value(0), output_field=IntegerField()),
            source0=F("contact__source"),
        )
        .values("day", "from_stage", "to_stage", "source0", "camp0")
        .annotate(entries=Count("id"))
        .order_by()
    )
    return [
        StageDaily(
            day=r["day"],
            from_stage=r["from_stage"],
            to_stage=r["to_stage"],
            source=r["source0"],
            campaign_id=r["camp0"],
            entries=r["entries"],
        )
        for r in rows
    ]


def _replace_email(start_day: date, end_day: date) -> None:
    qs = email_activities(day_start(start_day), day_start(end_day))
    rows = fact_rows(EmailDaily, qs, fields=EMAIL_COUNT_FIELDS)
    replace_rows(EmailDaily, rows, start_day, end_day, fields=EMAIL_COUNT_FIELDS)


def _replace_stage(start_day: date, end_day: date) -> None:
    StageDaily.objects.filter(day__gte=start_day, day__lt=end_day).delete()
    StageDaily.objects.bulk_create(
        _stage_rows(start_day, end_day),
        update_conflicts=True,
        unique_fields=["day", "from_stage", "to_stage", "source", "campaign_id"],
        update_fields=["entries"],
    )


def rollups_rebuild(*, start_day: date, end_day: date, chunk_days: int = 7) -> None:
    """Rebuild both rollups for the days ``[start_day, end_day)`` from raw data."""
    day = start_day
    while day < end_day:
        stop = min(end_day, day + timedelta(days=chunk_days))
        with transaction.atomic():
            _replace_email(day, stop)
            _replace_stage(day, stop)
        day = stop


def rollups_apply_activities(*, activities) -> None:
    """Bring the email rollup up to date with a stored batch (see reports.upkeep, which
    the handler calls once for both the rollup and the step facts)."""
    from .upkeep import upkeep_apply_activities

    upkeep_apply_activities(activities=activities, step_facts=False)


def rollups_apply_transitions(*, transitions) -> None:
    """Add a group of transitions to the stage rollup (see reports.upkeep)."""
    from .upkeep import upkeep_apply_transitions

    upkeep_apply_transitions(transitions=transitions)


def snapshot(model, start_day, end_day, key_fields, value_fields) -> dict:
    return {
        tuple(r[k] for k in key_fields): tuple(r[v] for v in value_fields)
        for r in model.objects.filter(day__gte=start_day, day__lt=end_day).values(
            *key_fields, *value_fields
        )
    }


def snapshot_diff(before: dict, after: dict, label: str) -> dict:
    """What differed between the maintained rows (``label``) and the rebuild (``raw``)."""
    return {
        str(k): {label: before.get(k), "raw": after.get(k)}
        for k in set(before) | set(after)
        if before.get(k) != after.get(k)
    }


EMAIL_KEY = ["day", "campaign_id", "source", "step_id"]
STAGE_KEY = ["day", "from_stage", "to_stage", "source", "campaign_id"]


def rollups_reconcile(*, day: date) -> dict:
    """Rebuild ``day`` from raw data and return (and log) what differed from the rollup."""
    end = day + timedelta(days=1)
    before_email = snapshot(EmailDaily, day, end, EMAIL_KEY, EMAIL_COUNT_FIELDS)
    before_stage = snapshot(StageDaily, day, end, STAGE_KEY, ["entries"])
    rollups_rebuild(start_day=day, end_day=end)
    after_email = snapshot(EmailDaily, day, end, EMAIL_KEY, EMAIL_COUNT_FIELDS)
    after_stage = snapshot(StageDaily, day, end, STAGE_KEY, ["entries"])
    diff = {
        "email": snapshot_diff(before_email, after_email, "rollup"),
        "stage": snapshot_diff(before_stage, after_stage, "rollup"),
    }
    if diff["email"] or diff["stage"]:
        log.warning("Rollup reconciliation for %s found differences: %s", day, diff)
    return diff
