"""Month-end scores of new leads, frozen per closed month (the leads report's score profile).

METRICS.md "lead score profile of new leads": for the contacts created in a month, their
score as it stood at the end of that month; "Scores over time": a score at a moment is
the sum of the contact's ledger entries before it, and entries are only ever appended.

Once a month has ended, a new lead's month-end score can only change through an entry
dated before that end that is written late. Every ledger writer but one dates its
entries "now" (rescore, decay, expiry, fit); the exceptions are dated in the past by
what causes them, and both reach reports in the same transaction, after scoring's
handler (settings: handler order):

* an activity recorded with a past time (``LedgerEntry.Reason.ACTIVITY`` at
  ``occurred_at``) — :func:`lead_scores_apply_activities`;
* a back-dated move to ``recycled`` (``RECYCLE_RESET`` at the transition's time), and a
  contact created with a past ``created_at`` into a frozen month —
  :func:`lead_scores_apply_transitions`.

So a month is frozen (:func:`lead_scores_freeze`, from the daily reconciliation task and
the rebuild) one day after it ends — a rescore that started before the month end has
committed by then — into one ``LeadScoreFact`` per new lead and the value counts
``LeadScoreDaily``; the upkeep recomputes the few contacts a late entry can move and
shifts their count from the old score to the new one. Months not frozen (the current
one) are read from the ledger by the report. :func:`lead_scores_reconcile` recomputes
every frozen month from raw data and repairs and reports any difference (e.g. a freeze
that raced a late entry's transaction).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, datetime, timedelta

from django.db import transaction
from django.db.models import Min, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from crm.models import Contact

from .fact_writes import counts_upsert, facts_insert
from .models import LeadScoreDaily, LeadScoreFact, LeadScoreMonth
from .query import day_start, site_tz

log = logging.getLogger(__name__)

FREEZE_AFTER = timedelta(days=1)  # a month is frozen this long after it ends
CHUNK = 2000


def month_first(d: date) -> date:
    return date(d.year, d.month, 1)


def month_next(first: date) -> date:
    return date(first.year + (first.month == 12), first.month % 12 + 1, 1)


def _local(dt: datetime) -> date:
    return dt.astimezone(site_tz()).date()


def _ledger():
    try:
        from scoring.models import LedgerEntry
    except ImportError:  # pragma: no cover - scoring not installed
        return None
    return LedgerEntry


def month_scores_raw(first: date) -> dict[int, tuple[date, int]]:
    """contact → (creation day, month-end score) of the new leads created in the month
    starting ``first``, from the contacts and the ledger (one query)."""
    start, end = day_start(first), day_start(month_next(first))
    leads = Contact.objects.filter(
        created_at__gte=start, created_at__lt=end, created_suppressed=False
    )
    ledger = _ledger()
    if ledger is None:  # pragma: no cover
        return {pk: (_local(c), 0) for pk, c in leads.values_list("pk", "created_at")}
    total = (
        ledger.objects.filter(contact_id=OuterRef("pk"), at__lt=end)
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("points"))
        .values("s")
    )
    return {
        pk: (_local(created), score)
        for pk, created, score in leads.annotate(month_score=Coalesce(Subquery(total), 0))
        .order_by()
        .values_list("pk", "created_at", "month_score")
    }


def _counts(scores) -> dict[tuple, Counter]:
    rows: dict[tuple, Counter] = {}
    for day, score in scores:
        rows.setdefault((day, score), Counter())["leads"] += 1
    return rows


def lead_scores_freeze(*, now: datetime | None = None) -> list[date]:
    """Freeze every month that ended at least :data:`FREEZE_AFTER` ago and is not frozen
    yet (from the first new lead's month): its facts and value counts from raw data, one
    transaction per month. Returns the months frozen."""
    now = now or timezone.now()
    first_created = Contact.objects.filter(created_suppressed=False).aggregate(m=Min("created_at"))[
        "m"
    ]
    if first_created is None:
        return []
    frozen = set(LeadScoreMonth.objects.values_list("month", flat=True))
    done = []
    first = month_first(_local(first_created))
    while day_start(month_next(first)) + FREEZE_AFTER <= now:
        if first not in frozen:
            with transaction.atomic():
                _freeze_month(first, now=now)
            done.append(first)
        first = month_next(first)
    return done


def _freeze_month(first: date, *, now: datetime) -> None:
    scores = month_scores_raw(first)
    nxt = month_next(first)
    LeadScoreFact.objects.filter(day__gte=first, day__lt=nxt).delete()
    LeadScoreDaily.objects.filter(day__gte=first, day__lt=nxt).delete()
    facts_insert(
        LeadScoreFact,
        [(pk, day, score) for pk, (day, score) in scores.items()],
        fields=("contact", "day", "score"),
    )
    LeadScoreDaily.objects.bulk_create(
        [
            LeadScoreDaily(day=day, score=score, leads=c["leads"])
            for (day, score), c in _counts(scores.values()).items()
        ],
        batch_size=5000,
    )
    LeadScoreMonth.objects.update_or_create(month=first, defaults={"frozen_at": now})


def lead_scores_refresh(*, contact_ids) -> None:
    """Recompute the month-end scores of these contacts where their month is frozen and
    move their counts (old score −1, new score +1): two reads and the writes, only for
    contacts with a fact row (or created into a frozen month)."""
    ids = set(contact_ids)
    if not ids:
        return
    for chunk in [sorted(ids)[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]:
        _refresh(chunk)


def _refresh(ids: list[int]) -> None:
    old = {
        pk: (day, score)
        for pk, day, score in LeadScoreFact.objects.filter(contact_id__in=ids).values_list(
            "contact_id", "day", "score"
        )
    }
    created = {
        pk: (_local(c), suppressed)
        for pk, c, suppressed in Contact.objects.filter(pk__in=ids).values_list(
            "pk", "created_at", "created_suppressed"
        )
    }
    missing = {pk for pk, (_, suppressed) in created.items() if not suppressed} - set(old)
    frozen_months = set()
    if missing:  # contacts created into a frozen month (a back-dated creation)
        frozen_months = set(
            LeadScoreMonth.objects.filter(
                month__in={month_first(created[pk][0]) for pk in missing}
            ).values_list("month", flat=True)
        )
    wanted = set(old) | {pk for pk in missing if month_first(created[pk][0]) in frozen_months}
    new = {pk: (created[pk][0], 0) for pk in wanted if pk in created}
    ledger = _ledger()
    if new and ledger is not None:
        ends = {pk: day_start(month_next(month_first(day))) for pk, (day, _) in new.items()}
        for pk, points, at in ledger.objects.filter(
            contact_id__in=list(new), at__lt=max(ends.values())
        ).values_list("contact_id", "points", "at"):
            if at < ends[pk]:
                day, score = new[pk]
                new[pk] = (day, score + points)
    changed = {pk for pk in wanted if old.get(pk) != new.get(pk)}
    if not changed:
        return
    rows: dict[tuple, Counter] = {}
    for pk in changed:
        if pk in old:
            rows.setdefault(old[pk], Counter())["leads"] -= 1
        if pk in new:
            rows.setdefault(new[pk], Counter())["leads"] += 1
    counts_upsert(LeadScoreDaily, key=["day", "score"], rows=rows, fields=["leads"])
    LeadScoreFact.objects.filter(contact_id__in=changed).delete()
    facts_insert(
        LeadScoreFact,
        [(pk, *new[pk]) for pk in sorted(changed) if pk in new],
        fields=("contact", "day", "score"),
    )


def _current_month_start(now: datetime | None = None) -> datetime:
    """No frozen month ends after this instant (frozen months have ended)."""
    return day_start(month_first(_local(now or timezone.now())))


def lead_scores_apply_activities(*, activities) -> None:
    """Activities recorded: the contacts of those dated before the current month (their
    activity entries are dated then). No query when the batch is all this month's."""
    cutoff = _current_month_start()
    lead_scores_refresh(contact_ids={a.contact_id for a in activities if a.occurred_at < cutoff})


def lead_scores_apply_transitions(*, transitions, created: dict[int, datetime]) -> None:
    """Stage changed: contacts with a change dated before the current month (a back-dated
    recycle resets score at its time) or created (``created``: id → ``created_at``)
    before it. No query when everything is this month's."""
    cutoff = _current_month_start()
    ids = {t.contact_id for t in transitions if t.at < cutoff}
    ids |= {pk for pk, created_at in created.items() if created_at < cutoff}
    lead_scores_refresh(contact_ids=ids)


def lead_scores_rebuild(*, now: datetime | None = None) -> None:
    """Drop every frozen month and freeze again from raw data (rebuilds, migrations)."""
    with transaction.atomic():
        LeadScoreFact.objects.all().delete()
        LeadScoreDaily.objects.all().delete()
        LeadScoreMonth.objects.all().delete()
    lead_scores_freeze(now=now)


def lead_scores_snapshot() -> tuple[list, list]:
    return (
        sorted(LeadScoreFact.objects.values_list("contact_id", "day", "score")),
        sorted(LeadScoreDaily.objects.exclude(leads=0).values_list("day", "score", "leads")),
    )


def lead_scores_reconcile(*, months=None) -> dict:
    """Recompute frozen months (all, or these first days) from raw data; repair and report
    every contact whose stored month-end score differs (``{contact: {facts, raw}}``)."""
    qs = LeadScoreMonth.objects.order_by("month")
    if months is not None:
        qs = qs.filter(month__in=list(months))
    diff: dict[str, dict] = {}
    for first, frozen_at in qs.values_list("month", "frozen_at"):
        nxt = month_next(first)
        before = {
            pk: (day, score)
            for pk, day, score in LeadScoreFact.objects.filter(
                day__gte=first, day__lt=nxt
            ).values_list("contact_id", "day", "score")
        }
        counts_before = {
            (day, score): n
            for day, score, n in LeadScoreDaily.objects.filter(day__gte=first, day__lt=nxt)
            .exclude(leads=0)
            .values_list("day", "score", "leads")
        }
        raw = month_scores_raw(first)
        counts_raw = {k: c["leads"] for k, c in _counts(raw.values()).items()}
        bad = {pk for pk in set(before) | set(raw) if before.get(pk) != raw.get(pk)}
        for pk in bad:
            diff[str(pk)] = {"facts": before.get(pk), "raw": raw.get(pk)}
        if bad or counts_before != counts_raw:
            if counts_before != counts_raw and not bad:
                diff[f"counts {first:%Y-%m}"] = {"facts": counts_before, "raw": counts_raw}
            with transaction.atomic():
                _freeze_month(first, now=frozen_at)
    if diff:
        log.warning("Lead score facts reconciliation found differences: %s", diff)
    return diff
