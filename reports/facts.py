"""Report facts beside the campaign rollups of ``reports.rollups``: per nurture step email
counts (``EmailStepDaily``), kept current per activity batch, rebuilt and reconciled.

Why a separate table: the email report's per-step table used to join every email event of
the period to ``nurture.EmailSend`` and test "first event of its email" per row (seconds at
20k contacts). The step rows follow the same per-email first-event rule as ``EmailDaily``
(see reports.models), restricted to emails that belong to an ``EmailSend``, so they sum
over any period exactly like the raw query (property-tested in tests/reports).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, timedelta

from django.db import transaction
from django.db.models import F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, TruncDate

from crm.models import Activity, ActivityKind, Campaign, Contact

from .models import EmailStepDaily
from .query import day_start, site_tz
from .rollups import (
    CONVERSION_WINDOW,
    EMAIL_COUNT_FIELDS,
    FIRST_EVENT_KINDS,
    email_activities,
    email_fact_aggregates,
)

log = logging.getLogger(__name__)
K = ActivityKind
STEP_FIELDS = [f for f in EMAIL_COUNT_FIELDS if not f.startswith("social_")]
STEP_KEY = ["day", "campaign_id", "source", "step_id"]


def _send_model():
    try:
        from nurture.models import EmailSend
    except ImportError:  # pragma: no cover - nurture not installed
        return None
    return EmailSend


def step_activities(start_dt, end_dt, *, campaign_ids=None, contact_q=None):
    """Email-rollup activities of the period whose email is a nurture send, with ``step``."""
    send = _send_model()
    if send is None:  # pragma: no cover
        return Activity.objects.none()
    step = Subquery(send.objects.filter(message_id=OuterRef("message_id")).values("step_id")[:1])
    return (
        email_activities(start_dt, end_dt, campaign_ids=campaign_ids, contact_q=contact_q)
        .exclude(message_id="")
        .annotate(step=step)
        .filter(step__isnull=False)
    )


def step_aggregates() -> dict:
    return {k: v for k, v in email_fact_aggregates().items() if k in STEP_FIELDS}


def _step_rows(start_day: date, end_day: date, campaign_ids=None) -> list[EmailStepDaily]:
    rows = (
        step_activities(day_start(start_day), day_start(end_day), campaign_ids=campaign_ids)
        .annotate(
            day=TruncDate("occurred_at", tzinfo=site_tz()),
            channel0=Coalesce("campaign__channel", Value("")),
            source0=F("contact__source"),
        )
        .values("day", "camp0", "channel0", "source0", "step")
        .annotate(**step_aggregates())
        .order_by()
    )
    return [
        EmailStepDaily(
            day=r["day"],
            campaign_id=r["camp0"],
            channel=r["channel0"],
            source=r["source0"],
            step_id=r["step"],
            **{f: r[f] for f in STEP_FIELDS},
        )
        for r in rows
        if any(r[f] for f in STEP_FIELDS)
    ]


def _replace_steps(start_day: date, end_day: date, campaign_ids=None) -> None:
    qs = EmailStepDaily.objects.filter(day__gte=start_day, day__lt=end_day)
    if campaign_ids is not None:
        qs = qs.filter(campaign_id__in=campaign_ids)
    qs.delete()
    EmailStepDaily.objects.bulk_create(
        _step_rows(start_day, end_day, campaign_ids),
        update_conflicts=True,
        unique_fields=STEP_KEY,
        update_fields=["channel", *STEP_FIELDS],
    )


def facts_rebuild(*, start_day: date, end_day: date, chunk_days: int = 7) -> None:
    """Rebuild the step facts for the days ``[start_day, end_day)`` from raw data."""
    day = start_day
    while day < end_day:
        stop = min(end_day, day + timedelta(days=chunk_days))
        with transaction.atomic():
            _replace_steps(day, stop)
        day = stop


def _local_day(dt) -> date:
    return dt.astimezone(site_tz()).date()


def facts_apply_activities(*, activities) -> None:
    """Bring the step facts up to date with a batch (set-based, once per batch).

    Like the campaign rollup: first-event kinds recompute their day × campaign step rows
    (and those of later events of the same contacts, which an out-of-order event can
    demote); goal actions recompute the rows of the clicks they may convert (7-day
    window); sends of rows not recomputed are added as counts (the sender's hot path).
    """
    emails = [a for a in activities if a.message_id]
    relevant = [a for a in emails if a.kind in FIRST_EVENT_KINDS]
    affected: set[tuple[date, int]] = {
        (_local_day(a.occurred_at), a.campaign_id or 0) for a in relevant
    }
    day_expr = TruncDate("occurred_at", tzinfo=site_tz())
    probes = []
    if relevant:
        probes.append(
            Activity.objects.filter(
                contact_id__in={a.contact_id for a in relevant},
                kind__in=FIRST_EVENT_KINDS,
                occurred_at__gte=min(a.occurred_at for a in relevant),
            )
        )
    goal_kinds = set(
        Campaign.objects.exclude(goal_action="").values_list("goal_action", flat=True).distinct()
    )
    goals = [a for a in activities if a.kind in goal_kinds]
    if goals:
        probes.append(
            Activity.objects.filter(
                contact_id__in={a.contact_id for a in goals},
                kind=K.EMAIL_CLICKED,
                occurred_at__gte=min(a.occurred_at for a in goals) - CONVERSION_WINDOW,
                occurred_at__lte=max(a.occurred_at for a in goals),
            )
        )
    for probe in probes:
        affected.update(
            probe.exclude(message_id="")
            .annotate(day=day_expr, camp0=Coalesce("campaign_id", Value(0)))
            .values_list("day", "camp0")
            .distinct()
        )
    by_day: dict[date, set[int]] = {}
    for day, campaign_id in affected:
        by_day.setdefault(day, set()).add(campaign_id)
    for day, campaign_ids in sorted(by_day.items()):
        _replace_steps(day, day + timedelta(days=1), sorted(campaign_ids))

    sends = [
        a
        for a in emails
        if a.kind == K.EMAIL_SENT
        and (_local_day(a.occurred_at), a.campaign_id or 0) not in affected
    ]
    send_model = _send_model()
    if not sends or send_model is None:
        return
    steps = dict(
        send_model.objects.filter(
            message_id__in={a.message_id for a in sends}, step__isnull=False
        ).values_list("message_id", "step_id")
    )
    sends = [a for a in sends if a.message_id in steps]
    if not sends:
        return
    sources = dict(
        Contact.objects.filter(pk__in={a.contact_id for a in sends}).values_list("pk", "source")
    )
    deltas: Counter = Counter(
        (
            _local_day(a.occurred_at),
            a.campaign_id or 0,
            sources.get(a.contact_id, ""),
            steps[a.message_id],
        )
        for a in sends
    )
    _add_sends(deltas)


def _add_sends(deltas: Counter) -> None:
    """Add sends to their rows: insert missing rows, lock in key order, write back sums."""
    campaign_ids = {c for _, c, _, _ in deltas if c}
    channels = dict(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", "channel"))
    EmailStepDaily.objects.bulk_create(
        [
            EmailStepDaily(day=d, campaign_id=c, source=s, step_id=st, channel=channels.get(c, ""))
            for d, c, s, st in deltas
        ],
        ignore_conflicts=True,
    )
    rows = list(
        EmailStepDaily.objects.select_for_update()
        .filter(
            day__in={k[0] for k in deltas},
            campaign_id__in={k[1] for k in deltas},
            source__in={k[2] for k in deltas},
            step_id__in={k[3] for k in deltas},
        )
        .order_by("pk")
    )
    changed = []
    for row in rows:
        n = deltas.get((row.day, row.campaign_id, row.source, row.step_id))
        if n:
            row.sent += n
            changed.append(row)
    EmailStepDaily.objects.bulk_update(changed, ["sent"])


def facts_reconcile(*, day: date) -> dict:
    """Rebuild ``day``'s step facts from raw data and return (and log) what differed."""
    end = day + timedelta(days=1)

    def snap():
        return {
            tuple(r[k] for k in STEP_KEY): tuple(r[f] for f in STEP_FIELDS)
            for r in EmailStepDaily.objects.filter(day__gte=day, day__lt=end).values(
                *STEP_KEY, *STEP_FIELDS
            )
        }

    before = snap()
    facts_rebuild(start_day=day, end_day=end)
    after = snap()
    diff = {
        str(k): {"facts": before.get(k), "raw": after.get(k)}
        for k in set(before) | set(after)
        if before.get(k) != after.get(k)
    }
    if diff:
        log.warning("Step facts reconciliation for %s found differences: %s", day, diff)
    return {"email_steps": diff}
