"""Building and maintaining the daily rollups (see reports.models for the design)."""

from __future__ import annotations

import logging
from collections import Counter
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

from crm.models import Activity, ActivityKind, Campaign, Contact, LifecycleTransition
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
# Events whose email's *first* event matters: these rows are recomputed from raw data.
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
    """Bring the email rollup up to date with a batch of new activities (once per batch).

    First-event kinds (opens, clicks, bounces, unsubscribes, complaints) recompute the
    rows they can change from raw data: the batch's own day × campaign rows, and the rows
    of later events of the same contacts (an out-of-order event can change which event of
    an email is first). Everything else is a count added to its day × campaign × source
    row — unless that row was just recomputed (which already counted it): sends, social
    reactions, and conversions of earlier first clicks that a goal action in the batch
    converts for the first time (METRICS.md "conversion rate", 7-day window).
    """
    relevant = [a for a in activities if a.kind in FIRST_EVENT_KINDS]
    affected: set[tuple[date, int]] = {
        (_local_day(a.occurred_at), a.campaign_id or 0) for a in relevant
    }
    day_expr = TruncDate("occurred_at", tzinfo=site_tz())
    if relevant:
        for row in (
            Activity.objects.filter(
                contact_id__in={a.contact_id for a in relevant},
                kind__in=FIRST_EVENT_KINDS,
                occurred_at__gte=min(a.occurred_at for a in relevant),
            )
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

    deltas: dict[tuple[date, int, str], Counter] = {}
    counted = [
        a
        for a in activities
        if a.kind in COUNTED_KINDS
        and (_local_day(a.occurred_at), a.campaign_id or 0) not in affected
    ]
    if counted:
        sources = dict(
            Contact.objects.filter(pk__in={a.contact_id for a in counted}).values_list(
                "pk", "source"
            )
        )
        for a in counted:
            key = (_local_day(a.occurred_at), a.campaign_id or 0, sources.get(a.contact_id, ""))
            deltas.setdefault(key, Counter())[COUNTED_KINDS[a.kind]] += 1
    for key in _new_conversions(activities, day_expr):
        if key[:2] not in affected:
            deltas.setdefault(key, Counter())["conversions"] += 1
    _add_counts(deltas)


def _new_conversions(activities, day_expr) -> list[tuple[date, int, str]]:
    """Row keys of first clicks that the batch's goal actions convert for the first time."""
    goal_kinds = set(
        Campaign.objects.exclude(goal_action="").values_list("goal_action", flat=True).distinct()
    )
    goals = [a for a in activities if a.kind in goal_kinds]
    if not goals:
        return []
    batch_ids = [a.pk for a in goals]
    window_end = ExpressionWrapper(
        OuterRef("occurred_at") + CONVERSION_WINDOW, output_field=DateTimeField()
    )
    goal_in_window = Activity.objects.filter(
        contact_id=OuterRef("contact_id"),
        kind=OuterRef("campaign__goal_action"),
        occurred_at__gte=OuterRef("occurred_at"),
        occurred_at__lte=window_end,
    )
    return list(
        Activity.objects.filter(
            contact_id__in={a.contact_id for a in goals},
            kind=K.EMAIL_CLICKED,
            occurred_at__gte=min(a.occurred_at for a in goals) - CONVERSION_WINDOW,
            occurred_at__lte=max(a.occurred_at for a in goals),
        )
        .annotate(camp0=Coalesce("campaign_id", Value(0)))
        .filter(_first(Q(kind=K.EMAIL_CLICKED)))
        .filter(Exists(goal_in_window.filter(pk__in=batch_ids)))
        .exclude(Exists(goal_in_window.exclude(pk__in=batch_ids)))
        .annotate(day=day_expr, source0=F("contact__source"))
        .values_list("day", "camp0", "source0")
    )


def _add_counts(deltas: dict[tuple[date, int, str], Counter]) -> None:
    """Add counts to their day × campaign × source rows: 4 queries whatever the batch size.

    The rows are inserted if missing, locked in key order (concurrent batches add to the
    same rows without losing counts or deadlocking), then written back with the sums.
    """
    if not deltas:
        return
    campaign_ids = {c for _, c, _ in deltas if c}
    channels = (
        dict(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", "channel"))
        if campaign_ids
        else {}
    )
    EmailDaily.objects.bulk_create(
        [
            EmailDaily(day=d, campaign_id=c, source=s, step_id=0, channel=channels.get(c, ""))
            for d, c, s in deltas
        ],
        ignore_conflicts=True,
    )
    rows = list(
        EmailDaily.objects.select_for_update()
        .filter(
            day__in={d for d, _, _ in deltas},
            campaign_id__in={c for _, c, _ in deltas},
            source__in={s for _, _, s in deltas},
            step_id=0,
        )
        .order_by("pk")
    )
    fields: set[str] = set()
    changed = []
    for row in rows:
        counts = deltas.get((row.day, row.campaign_id, row.source))
        if counts:
            for name, n in counts.items():
                setattr(row, name, getattr(row, name) + n)
            fields.update(counts)
            changed.append(row)
    EmailDaily.objects.bulk_update(changed, sorted(fields))


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
