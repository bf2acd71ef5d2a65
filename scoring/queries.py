"""Reads: a contact's score breakdown, timeline entries, MQL summaries, scoring health."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncMonth
from django.utils import timezone

from crm.filters import day_start
from crm.models import Contact, LifecycleTransition, Stage

from .models import LedgerEntry, Rule

ADVANCED = [Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER]
REJECTED = [Stage.RECYCLED, Stage.DISQUALIFIED]
SCORE_BUCKETS = [(None, 0, "below 0"), (0, 25, "0–24"), (25, 50, "25–49"), (50, 75, "50–74"),
                 (75, 100, "75–99"), (100, None, "100+")]  # fmt: skip


def score_breakdown(*, contact_id: int) -> dict[str, Any]:
    """Points per rule, split into fit and engagement (one query)."""
    rows = (
        LedgerEntry.objects.filter(contact_id=contact_id)
        .order_by()
        .values("rule_id", "rule__name", "rule__kind")
        .annotate(points=Sum("points"), entries=Count("id"))
        .order_by("-points")
    )
    fit, engagement = [], []
    for r in rows:
        if not r["points"]:
            continue
        item = {
            "rule": r["rule_id"],
            "name": r["rule__name"] or "(deleted rule)",
            "kind": r["rule__kind"] or "",
            "points": r["points"],
            "entries": r["entries"],
        }
        (fit if r["rule__kind"] == Rule.Kind.FIT else engagement).append(item)
    fit_total = sum(i["points"] for i in fit)
    engagement_total = sum(i["points"] for i in engagement)
    return {
        "score": fit_total + engagement_total,
        "fit": fit_total,
        "engagement": engagement_total,
        "rules": fit + engagement,
    }


def ledger_entries(*, contact_id: int, before: datetime | None, limit: int):
    qs = LedgerEntry.objects.filter(contact_id=contact_id).select_related("rule")
    if before is not None:
        qs = qs.filter(at__lte=before)  # the timeline's contract: at or before the cursor
    return list(qs.order_by("-at", "-id")[:limit])


def why_qualified(*, contact_ids: list[int], top: int = 3) -> dict[int, list[str]]:
    """The rules that gave each contact the most points (one query for the page)."""
    rows = (
        LedgerEntry.objects.filter(contact_id__in=contact_ids, rule__isnull=False)
        .order_by()
        .values_list("contact_id", "rule__name")
        .annotate(points=Sum("points"))
        .filter(points__gt=0)
    )
    best: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for contact_id, name, points in rows:
        best[contact_id].append((points, name))
    return {
        cid: [f"{name} {points:+d}" for points, name in sorted(items, reverse=True)[:top]]
        for cid, items in best.items()
    }


def month_start(now: datetime, back: int = 0) -> datetime:
    """The first instant of the site-time-zone month ``back`` months before ``now``'s
    (METRICS.md: periods are in the site time zone)."""
    local = timezone.localdate(now)
    year, month = divmod(local.year * 12 + local.month - 1 - back, 12)
    return day_start(date(year, month + 1, 1))


def acceptance_by_month(*, months: int = 12, now=None) -> list[dict[str, Any]]:
    """METRICS.md "MQL acceptance rate": accepted ÷ decided (accepted + recycled +
    disqualified), per site-time-zone calendar month of the decision: this month and the
    ``months - 1`` before it, each whole (a partial first month would show a false rate)."""
    now = now or timezone.now()
    rows = (
        _decisions(month_start(now, months - 1), now)
        .annotate(month=TruncMonth("at"))
        .values("month")
        .annotate(
            accepted=Count("id", filter=Q(to_stage=Stage.SQL)),
            decided=Count("id"),
        )
        .order_by("month")
    )
    return [
        {**r, "rate": round(r["accepted"] / r["decided"], 3) if r["decided"] else None}
        for r in rows
    ]


def _decisions(start, end):
    return LifecycleTransition.objects.in_period(start, end).filter(
        from_stage=Stage.MQL, to_stage__in=[Stage.SQL, *REJECTED]
    )


def review_alert(*, now=None) -> dict[str, Any]:
    """Raised when more than half of the MQLs decided in the last 90 days were rejected
    (METRICS.md "MQL acceptance rate": below 50% raises the scoring-review alert)."""
    now = now or timezone.now()
    agg = _decisions(now - timedelta(days=90), now).aggregate(
        decided=Count("id"), rejected=Count("id", filter=Q(to_stage__in=REJECTED))
    )
    decided, rejected = agg["decided"], agg["rejected"]
    return {
        "decided": decided,
        "rejected": rejected,
        "rate": round((decided - rejected) / decided, 3) if decided else None,
        "alert": bool(decided) and rejected * 2 > decided,
    }


def points_per_rule(*, days: int = 90, now=None) -> list[dict[str, Any]]:
    """Points each rule gave in the window, to how many contacts, and how many of those
    contacts later reached sql or beyond (which actions move leads forward).

    "Later": a move to sql or beyond at or after one of the rule's entries for the
    contact — a customer of last year who browses the docs did not advance because of it.
    """
    now = now or timezone.now()
    advanced = LifecycleTransition.objects.filter(
        contact_id=OuterRef("contact_id"), to_stage__in=ADVANCED, at__gte=OuterRef("at")
    )
    rows = (
        LedgerEntry.objects.filter(
            at__gte=now - timedelta(days=days),
            at__lt=now,
            reason=LedgerEntry.Reason.ACTIVITY,
            rule__isnull=False,
        )
        .order_by()
        .values("rule_id", "rule__name")
        .annotate(
            points=Sum("points"),
            contacts=Count("contact_id", distinct=True),
            advanced=Count("contact_id", distinct=True, filter=Q(Exists(advanced))),
        )
        .order_by("-points")
    )
    return [
        {**r, "advance_rate": round(r["advanced"] / r["contacts"], 3) if r["contacts"] else None}
        for r in rows
    ]


def new_lead_scores(*, start: datetime, end: datetime) -> dict[str, Any]:
    """METRICS.md "lead score profile of new leads": the contacts created in [start, end)
    (not those suppressed when created, as "new leads"), by their score as it stood at
    ``end`` (the ledger up to that moment): the histogram over ``SCORE_BUCKETS``, the
    median (of an even count the mean of the middle two, as the leads report's) and the
    count. One grouped read: how many new leads have each score."""
    at_end = (
        LedgerEntry.objects.filter(contact_id=OuterRef("pk"), at__lt=end)
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("points"))
        .values("s")
    )
    counts = Counter(
        dict(
            Contact.objects.created_in(start, end)
            .exclude(created_suppressed=True)
            .order_by()
            .annotate(s=Coalesce(Subquery(at_end), Value(0)))
            .values_list("s")
            .annotate(n=Count("id"))
        )
    )
    total = sum(counts.values())
    buckets = [
        {
            "label": label,
            "contacts": sum(
                n
                for score, n in counts.items()
                if (lo is None or score >= lo) and (hi is None or score < hi)
            ),
            "total": total,
        }
        for lo, hi, label in SCORE_BUCKETS
    ]
    return {"buckets": buckets, "median": median_of_counts(counts), "total": total}


def median_of_counts(counts: Counter) -> float | int | None:
    """``statistics.median`` of the multiset ``counts`` (value → how many), without
    expanding it: the middle value, or the mean of the middle two; None if empty. (The
    leads report's score profile uses it too.)"""
    n = sum(counts.values())
    if not n:
        return None
    wanted = [(n - 1) // 2, n // 2]
    found = []
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        while wanted and wanted[0] < seen:
            found.append(value)
            wanted.pop(0)
    return found[0] if n % 2 else (found[0] + found[1]) / 2
