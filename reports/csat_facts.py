"""CSAT answers per day behind the customers report (METRICS.md line 100).

``CsatDaily`` holds per site day and answer (1–5) how many CSAT answers were recorded, so
the report sums a period's few rows (at most five a day) instead of reading every answer
activity (~22,600 a year at 1M contacts, about one heap page each). Kept by the
activities-recorded handler (+1 per answer of the batch: work proportional to the batch);
erasure clears activity details, so the raw figure loses an erased contact's answers and
:func:`csat_days_recount` recounts their days (reports.privacy); rebuilt with the
cost/revenue facts and reconciled nightly (``credit_facts_reconcile``).

An answer counts as ``details["answer"]`` cast to an integer, as the raw read casts the
text in the database: an integer, or a string of one (spaces around allowed); anything
else is not an answer (the raw read fails on it on PostgreSQL).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.fields.json import KT

from crm.events import handler
from crm.models import Activity, ActivityKind

from .fact_writes import counts_upsert
from .models import CsatDaily
from .query import day_start, site_tz
from .rollups import snapshot_diff

_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


def answer_of(value) -> int | None:
    """The answer an activity's ``details["answer"]`` holds (1–5), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value):
        n = int(value)
    else:
        return None
    return n if 1 <= n <= 5 else None


def _day(dt):
    return dt.astimezone(site_tz()).date()


def csat_apply_activities(activities) -> None:
    """Count the batch's CSAT answers into their days (one upsert; no query without any)."""
    deltas: dict[tuple, Counter] = {}
    for a in activities:
        if a.kind != ActivityKind.CSAT_ANSWER:
            continue
        answer = answer_of((a.details or {}).get("answer"))
        if answer is not None:
            deltas.setdefault((_day(a.occurred_at), answer), Counter())["n"] += 1
    counts_upsert(CsatDaily, key=["day", "answer"], rows=deltas, fields=["n"])


def _recount(qs) -> dict[tuple, int]:
    out: Counter = Counter()
    for at, value in qs.filter(kind=ActivityKind.CSAT_ANSWER).values_list(
        "occurred_at", KT("details__answer")
    ):
        answer = answer_of(value)
        if answer is not None:
            out[(_day(at), answer)] += 1
    return dict(out)


def csat_days_recount(*, contact_id) -> None:
    """Recount from the activities the days of this contact's CSAT answers (erasure)."""
    days = {
        _day(at)
        for at in Activity.objects.filter(
            contact_id=contact_id, kind=ActivityKind.CSAT_ANSWER
        ).values_list("occurred_at", flat=True)
    }
    if not days:
        return
    span = Q()
    for d in days:
        span |= Q(
            occurred_at__gte=day_start(d),
            occurred_at__lt=day_start(d + timedelta(days=1)),
        )
    counts = _recount(Activity.objects.filter(span))
    with transaction.atomic():
        CsatDaily.objects.filter(day__in=days).delete()
        CsatDaily.objects.bulk_create(
            [CsatDaily(day=d, answer=a, n=n) for (d, a), n in counts.items()]
        )


def csat_daily_rebuild() -> None:
    counts = _recount(Activity.objects.all())
    with transaction.atomic():
        CsatDaily.objects.all().delete()
        CsatDaily.objects.bulk_create(
            [CsatDaily(day=d, answer=a, n=n) for (d, a), n in counts.items()], batch_size=5000
        )


def csat_daily_reconcile() -> dict:
    """Compare the day rows with a recount (rebuilding them on a difference)."""
    have = {
        (d, a): n for d, a, n in CsatDaily.objects.exclude(n=0).values_list("day", "answer", "n")
    }
    want = _recount(Activity.objects.all())
    diff = snapshot_diff(have, want, "facts")
    if diff:
        csat_daily_rebuild()
    return diff


def csat_totals(start, end) -> tuple[int, int, int]:
    """Answers, answers 4–5 and the sum of answers in ``[start, end)`` (site days)."""
    rows = (
        CsatDaily.objects.filter(day__gte=start, day__lt=end)
        .values("answer")
        .annotate(n=Sum("n"))
        .values_list("answer", "n")
        .order_by()
    )
    answers = satisfied = total = 0
    for answer, n in rows:
        answers += n
        satisfied += n if answer >= 4 else 0
        total += answer * n
    return answers, satisfied, total


@handler("queued")
def on_activities_recorded(event) -> None:
    """The batch's CSAT answers, counted into their days."""
    csat_apply_activities(event.activities)
