"""Building and maintaining the daily rollups (see reports.models for the design)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, timedelta
from itertools import islice

from django.db import transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate

from crm.models import Activity, ActivityKind, Campaign, Contact, LifecycleTransition
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


# Per-email first-event facts: the rollup field, the test on a batch's Activity object and
# the same test as a filter (mirrors email_fact_aggregates; METRICS.md lines 19–31).
FACTS = {
    "bounced": (lambda a: a.kind == K.EMAIL_BOUNCED, Q(kind=K.EMAIL_BOUNCED)),
    "hard_bounced": (
        lambda a: a.kind == K.EMAIL_BOUNCED and (a.details or {}).get("bounce_type") == "hard",
        Q(kind=K.EMAIL_BOUNCED, details__bounce_type="hard"),
    ),
    "unique_opens": (
        lambda a: (a.kind == K.EMAIL_OPENED and not a.is_machine) or a.kind == K.EMAIL_CLICKED,
        OPEN_Q,
    ),
    "machine_opens": (
        lambda a: a.kind == K.EMAIL_OPENED and a.is_machine,
        Q(kind=K.EMAIL_OPENED, is_machine=True),
    ),
    "unique_clicks": (lambda a: a.kind == K.EMAIL_CLICKED, Q(kind=K.EMAIL_CLICKED)),
    "unsubscribed": (lambda a: a.kind == K.EMAIL_UNSUBSCRIBED, Q(kind=K.EMAIL_UNSUBSCRIBED)),
    "complaints": (lambda a: a.kind == K.EMAIL_COMPLAINED, Q(kind=K.EMAIL_COMPLAINED)),
}
EmailKey = tuple[int, str, int]  # contact, message_id, campaign (0 = none): one email


def rollups_apply_activities(*, activities) -> None:
    """Bring the email rollup up to date with a batch of new activities (once per batch).

    Incremental, never a recomputation: only an email's *first* event of a kind counts
    (METRICS.md lines 19–31), so for the emails the batch touches one query reads each
    fact's earliest time *before* the batch. A fact with none before is a new first (+1 on
    its day); an out-of-order batch event earlier than the old first moves it (−1 on the
    old day, +1 on the new). Conversions follow the first click: for emails whose first
    click moved or whose contact did a goal action in the batch (7-day window), the
    before/after conversion is compared. Sends and social reactions are plain counts.
    The day × campaign × source rows get the net deltas (see :func:`_add_counts`).
    """
    activities = list(activities)
    deltas: dict[tuple[date, int, str], Counter] = {}
    by_contact: dict[tuple[date, int, int], Counter] = {}  # keyed by contact until sources

    def add(day: date, campaign_id: int, contact_id: int, name: str, n: int) -> None:
        by_contact.setdefault((day, campaign_id, contact_id), Counter())[name] += n

    for a in activities:
        if a.kind in COUNTED_KINDS:
            add(
                _local_day(a.occurred_at),
                a.campaign_id or 0,
                a.contact_id,
                COUNTED_KINDS[a.kind],
                1,
            )
    _apply_first_events(activities, add)
    sources = (
        dict(
            Contact.objects.filter(pk__in={c for _, _, c in by_contact}).values_list("pk", "source")
        )
        if by_contact
        else {}
    )
    for (day, campaign_id, contact_id), counts in by_contact.items():
        key = (day, campaign_id, sources.get(contact_id, ""))
        deltas.setdefault(key, Counter()).update(counts)  # update() keeps negative counts
    _add_counts(
        {
            key: Counter({f: n for f, n in counts.items() if n})
            for key, counts in deltas.items()
            if any(counts.values())
        }
    )


def _apply_first_events(activities: list, add) -> None:
    """Deltas of the first-event facts and conversions the batch changes (see caller)."""
    batch_first: dict[EmailKey, dict[str, object]] = {}
    for a in activities:
        if a.kind in FIRST_EVENT_KINDS:
            facts = batch_first.setdefault(
                (a.contact_id, a.message_id or "", a.campaign_id or 0), {}
            )
            for name, (test, _) in FACTS.items():
                if test(a) and (name not in facts or a.occurred_at < facts[name]):
                    facts[name] = a.occurred_at
    goal_of = dict(Campaign.objects.exclude(goal_action="").values_list("pk", "goal_action"))
    goals = [a for a in activities if a.kind in set(goal_of.values())]
    converting: set[EmailKey] = set()  # emails whose conversion may change
    converting.update(k for k, facts in batch_first.items() if "unique_clicks" in facts)
    if goals:
        goal_kinds = {g.kind for g in goals}
        converting.update(
            Activity.objects.filter(
                contact_id__in={g.contact_id for g in goals},
                kind=K.EMAIL_CLICKED,
                campaign_id__in=[c for c, kind in goal_of.items() if kind in goal_kinds],
                occurred_at__gte=min(g.occurred_at for g in goals) - CONVERSION_WINDOW,
                occurred_at__lte=max(g.occurred_at for g in goals),
            )
            .order_by()
            .values_list("contact_id", "message_id", "campaign_id")
            .distinct()
        )
    converting = {k for k in converting if k[2] in goal_of}
    keys = set(batch_first) | converting
    if not keys:
        return
    batch_ids = [a.pk for a in activities]
    before: dict[EmailKey, dict] = {}
    # Each fact's earliest time per email, without the batch: one grouped query. Emails with
    # a message id are found through the partial activity_message index, the others through
    # their contact; no kind filter (the aggregates filter), which would tempt the planner
    # into AND-ing the large activity_kind_time bitmap.
    with_id = {k[1] for k in keys if k[1]}
    without_id = {k[0] for k in keys if not k[1]}
    for row in (
        Activity.objects.filter(
            (Q(message_id__in=with_id) & ~Q(message_id=""))
            | Q(message_id="", contact_id__in=without_id)
        )
        .exclude(pk__in=batch_ids)
        .annotate(camp0=Coalesce("campaign_id", Value(0)))
        .values("contact_id", "message_id", "camp0")
        .annotate(**{name: Min("occurred_at", filter=q) for name, (_, q) in FACTS.items()})
        .order_by()
    ):
        key = (row["contact_id"], row["message_id"], row["camp0"])
        if key in keys:
            before[key] = row
    for key, facts in batch_first.items():
        old = before.get(key, {})
        for name, first in facts.items():
            was = old.get(name)
            if was is None or first < was:
                if was is not None:
                    add(_local_day(was), key[2], key[0], name, -1)
                add(_local_day(first), key[2], key[0], name, 1)
    if converting:
        _apply_conversions(converting, before, batch_first, goal_of, set(batch_ids), add)


def _apply_conversions(keys, before, batch_first, goal_of, batch_ids, add) -> None:
    """A first click converts if its contact did the campaign's goal action within the
    window after it (METRICS.md "conversion rate"); compare before and after the batch."""
    clicks = {}
    for key in keys:
        was = before.get(key, {}).get("unique_clicks")
        new = batch_first.get(key, {}).get("unique_clicks")
        now_first = min(t for t in (was, new) if t is not None) if (was or new) else None
        if now_first is not None:
            clicks[key] = (was, now_first)
    if not clicks:
        return
    times = [t for pair in clicks.values() for t in pair if t is not None]
    found: dict[tuple[int, str], list[tuple]] = {}
    for contact_id, kind, occurred_at, pk in Activity.objects.filter(
        contact_id__in={k[0] for k in clicks},
        kind__in={goal_of[k[2]] for k in clicks},
        occurred_at__gte=min(times),
        occurred_at__lte=max(times) + CONVERSION_WINDOW,
    ).values_list("contact_id", "kind", "occurred_at", "id"):
        found.setdefault((contact_id, kind), []).append((occurred_at, pk))

    def converted(key, click_at, *, with_batch: bool) -> bool:
        return any(
            click_at <= t <= click_at + CONVERSION_WINDOW and (with_batch or pk not in batch_ids)
            for t, pk in found.get((key[0], goal_of[key[2]]), ())
        )

    for key, (was, now_first) in clicks.items():
        if was is not None and converted(key, was, with_batch=False):
            add(_local_day(was), key[2], key[0], "conversions", -1)
        if converted(key, now_first, with_batch=True):
            add(_local_day(now_first), key[2], key[0], "conversions", 1)


def _add_counts(deltas: dict[tuple[date, int, str], Counter]) -> None:
    """Add (signed) counts to their day × campaign × source rows: 4–5 queries per batch.

    The rows are inserted if missing, locked in key order (concurrent batches add to the
    same rows without losing counts or deadlocking), then incremented in one UPDATE.
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
    rows = (
        EmailDaily.objects.select_for_update()
        .filter(
            day__in={d for d, _, _ in deltas},
            campaign_id__in={c for _, c, _ in deltas},
            source__in={s for _, _, s in deltas},
            step_id=0,
        )
        .order_by("pk")
        .values_list("pk", "day", "campaign_id", "source")
    )
    touched = [(pk, deltas[(d, c, s)]) for pk, d, c, s in rows if (d, c, s) in deltas]
    for chunk in batched(touched, 500):
        # One UPDATE per chunk: each field adds its delta through a CASE with one branch
        # per distinct delta value (not one per row, which is what makes bulk_update slow).
        by_field: dict[str, dict[int, list[int]]] = {}
        for pk, counts in chunk:
            for name, n in counts.items():
                by_field.setdefault(name, {}).setdefault(n, []).append(pk)
        EmailDaily.objects.filter(pk__in=[pk for pk, _ in chunk]).update(
            **{
                name: Case(
                    *[When(pk__in=pks, then=F(name) + n) for n, pks in sorted(groups.items())],
                    default=F(name),
                )
                for name, groups in by_field.items()
            }
        )
    if any(n < 0 for counts in deltas.values() for n in counts.values()):
        # A moved first event can empty a row; a rebuild would not have it (reconcile agrees).
        EmailDaily.objects.filter(
            pk__in=[pk for pk, _ in touched], **dict.fromkeys(EMAIL_COUNT_FIELDS, 0)
        ).delete()


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
