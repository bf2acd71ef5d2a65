"""Building and maintaining the daily rollups (see reports.models for the design)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from django.db import transaction
from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate

from crm.models import Activity, ActivityKind, Campaign, LifecycleTransition
from crm.models.choices import EMAIL_KINDS, SOCIAL_KINDS

from .models import EmailDaily, StageDaily
from .query import day_start, site_tz

log = logging.getLogger(__name__)

K = ActivityKind
# METRICS.md "unique opens": a human open, or a click (a click implies an open).
OPEN_Q = Q(kind=K.EMAIL_OPENED, is_machine=False) | Q(kind=K.EMAIL_CLICKED)
CONVERSION_WINDOW = timedelta(days=7)  # METRICS.md "conversion rate": default window
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
ROLLUP_KINDS = EMAIL_KINDS | SOCIAL_KINDS


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


def _first(cond: Q) -> Q:
    """The outer activity matches ``cond`` and is its email's first such event."""
    return cond & ~Exists(_inner().filter(cond))


def _converted() -> Exists:
    """The contact did the campaign's goal action within the window after this click."""
    window_end = ExpressionWrapper(
        OuterRef("occurred_at") + CONVERSION_WINDOW, output_field=DateTimeField()
    )
    return Exists(
        Activity.objects.filter(
            contact_id=OuterRef("contact_id"),
            kind=OuterRef("campaign__goal_action"),
            occurred_at__gte=OuterRef("occurred_at"),
            occurred_at__lte=window_end,
        )
    )


def email_fact_aggregates() -> dict:
    """Per-email first-event counts (METRICS.md lines 19–31), as aggregate expressions."""
    first_click = _first(Q(kind=K.EMAIL_CLICKED))
    return {
        "sent": Count("id", filter=Q(kind=K.EMAIL_SENT)),
        "bounced": Count("id", filter=_first(Q(kind=K.EMAIL_BOUNCED))),
        "hard_bounced": Count(
            "id", filter=_first(Q(kind=K.EMAIL_BOUNCED, details__bounce_type="hard"))
        ),
        "unique_opens": Count("id", filter=_first(OPEN_Q)),
        "machine_opens": Count("id", filter=_first(Q(kind=K.EMAIL_OPENED, is_machine=True))),
        "unique_clicks": Count("id", filter=first_click),
        "unsubscribed": Count("id", filter=_first(Q(kind=K.EMAIL_UNSUBSCRIBED))),
        "complaints": Count("id", filter=_first(Q(kind=K.EMAIL_COMPLAINED))),
        "conversions": Count("id", filter=first_click & _converted()),
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


def _email_rows(start_day: date, end_day: date, campaign_ids=None) -> list[EmailDaily]:
    rows = (
        email_activities(day_start(start_day), day_start(end_day), campaign_ids=campaign_ids)
        .annotate(
            day=TruncDate("occurred_at", tzinfo=site_tz()),
            channel0=Coalesce("campaign__channel", Value("")),
            source0=F("contact__source"),
        )
        .values("day", "camp0", "channel0", "source0")
        .annotate(**email_fact_aggregates())
        .order_by()
    )
    return [
        EmailDaily(
            day=r["day"],
            campaign_id=r["camp0"],
            channel=r["channel0"],
            source=r["source0"],
            **{f: r[f] for f in EMAIL_COUNT_FIELDS},
        )
        for r in rows
        if any(r[f] for f in EMAIL_COUNT_FIELDS)
    ]


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


def _email_qs(start_day, end_day, campaign_ids=None):
    qs = EmailDaily.objects.filter(day__gte=start_day, day__lt=end_day)
    return qs if campaign_ids is None else qs.filter(campaign_id__in=campaign_ids)


def _replace_email(start_day: date, end_day: date, campaign_ids=None) -> None:
    _email_qs(start_day, end_day, campaign_ids).delete()
    EmailDaily.objects.bulk_create(
        _email_rows(start_day, end_day, campaign_ids),
        update_conflicts=True,
        unique_fields=["day", "campaign_id", "source", "step_id"],
        update_fields=["channel", *EMAIL_COUNT_FIELDS],
    )


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


def _local_day(dt) -> date:
    return dt.astimezone(site_tz()).date()


def rollups_apply_activities(*, activities) -> None:
    """Recompute the email rollup rows a batch of activities can change (idempotent).

    Affected: the batch's own day × campaign rows; later events of the same contacts
    (an out-of-order event can change which event of an email is first); and clicks in
    the 7 days before a goal action of the same contacts (their conversion may change).
    """
    relevant = [a for a in activities if a.kind in ROLLUP_KINDS]
    goal_kinds = set(
        Campaign.objects.exclude(goal_action="").values_list("goal_action", flat=True).distinct()
    )
    goals = [a for a in activities if a.kind in goal_kinds]
    if not relevant and not goals:
        return
    tz = site_tz()
    affected: set[tuple[date, int]] = {
        (_local_day(a.occurred_at), a.campaign_id or 0) for a in relevant
    }
    day_expr = TruncDate("occurred_at", tzinfo=tz)
    cond = Q(pk__in=[])
    if relevant:
        cond |= Q(
            contact_id__in={a.contact_id for a in relevant},
            kind__in=EMAIL_KINDS,
            occurred_at__gte=min(a.occurred_at for a in relevant),
        )
    if goals:
        cond |= Q(
            contact_id__in={a.contact_id for a in goals},
            kind=K.EMAIL_CLICKED,
            occurred_at__gte=min(a.occurred_at for a in goals) - CONVERSION_WINDOW,
            occurred_at__lte=max(a.occurred_at for a in goals),
        )
    for row in (
        Activity.objects.filter(cond)
        .annotate(day=day_expr, camp0=Coalesce("campaign_id", Value(0)))
        .values_list("day", "camp0")
        .distinct()
    ):
        affected.add(row)
    by_day: dict[date, set[int]] = {}
    for day, campaign_id in affected:
        by_day.setdefault(day, set()).add(campaign_id)
    for day, campaign_ids in sorted(by_day.items()):
        _replace_email(day, day + timedelta(days=1), sorted(campaign_ids))


def rollups_apply_transitions(*, transitions) -> None:
    """Recompute the stage rollup for the days of a group of transitions (idempotent)."""
    days = sorted({_local_day(t.at) for t in transitions})
    for day in days:
        _replace_stage(day, day + timedelta(days=1))


def _snapshot(model, start_day, end_day, key_fields, value_fields) -> dict:
    return {
        tuple(r[k] for k in key_fields): tuple(r[v] for v in value_fields)
        for r in model.objects.filter(day__gte=start_day, day__lt=end_day).values(
            *key_fields, *value_fields
        )
    }


def rollups_reconcile(*, day: date) -> dict:
    """Rebuild ``day`` from raw data and return (and log) what differed from the rollup."""
    end = day + timedelta(days=1)
    email_key = ["day", "campaign_id", "source", "step_id"]
    stage_key = ["day", "from_stage", "to_stage", "source", "campaign_id"]
    before_email = _snapshot(EmailDaily, day, end, email_key, EMAIL_COUNT_FIELDS)
    before_stage = _snapshot(StageDaily, day, end, stage_key, ["entries"])
    rollups_rebuild(start_day=day, end_day=end)
    after_email = _snapshot(EmailDaily, day, end, email_key, EMAIL_COUNT_FIELDS)
    after_stage = _snapshot(StageDaily, day, end, stage_key, ["entries"])
    diff = {
        "email": {
            str(k): {"rollup": before_email.get(k), "raw": after_email.get(k)}
            for k in set(before_email) | set(after_email)
            if before_email.get(k) != after_email.get(k)
        },
        "stage": {
            str(k): {"rollup": before_stage.get(k), "raw": after_stage.get(k)}
            for k in set(before_stage) | set(after_stage)
            if before_stage.get(k) != after_stage.get(k)
        },
    }
    if diff["email"] or diff["stage"]:
        log.warning("Rollup reconciliation for %s found differences: %s", day, diff)
    return diff
