"""Leads and lifecycle counts (METRICS.md "Leads and lifecycle", lines 34–55)."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import date

from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)

from crm.models import Activity, LifecycleTransition, Stage
from crm.models.choices import ENGAGEMENT_KINDS

from ..models import NewLeadDaily, ReopenedDayFact
from ..query import ReportQuery, day_start, ratio
from .lifecycle import entries, month_of, months, new_leads_qs

ACCEPTANCE_ALERT = 0.5  # METRICS.md line 48: below 50% raises the scoring-review alert
SCORE_BUCKETS = [(None, 0), (0, 20), (20, 40), (40, 60), (60, 80), (80, 100), (100, None)]


def bucket_label(lo, hi) -> str:
    if lo is None:
        return f"< {hi}"
    if hi is None:
        return f"≥ {lo}"
    return f"{lo}–{hi - 1}"


def _unfiltered(q: ReportQuery) -> bool:
    return not (q.has_contact_filters or q.campaign or q.channel)


def new_leads(q: ReportQuery) -> int:
    """METRICS.md line 39: contacts created in the period, not suppressed when created.

    Without filters, the sum of the period's ``NewLeadDaily`` rows (days are whole site
    days, as the period); with any, a count of the contacts.
    """
    if _unfiltered(q):
        agg = NewLeadDaily.objects.filter(day__gte=q.start, day__lt=q.end).aggregate(
            n=Sum("new_leads")
        )
        return agg["n"] or 0
    return new_leads_qs(q).count()


def new_leads_by_month(q: ReportQuery) -> dict:
    """New leads per (clipped) month start of the period; ``NewLeadDaily`` when unfiltered."""
    if _unfiltered(q):
        ms = months(q)
        agg = NewLeadDaily.objects.filter(day__gte=q.start, day__lt=q.end).aggregate(
            **{
                f"m{i}": Sum("new_leads", filter=Q(day__gte=s.date(), day__lt=e.date()))
                for i, (_, s, e) in enumerate(ms)
            }
        )
        return {s: agg[f"m{i}"] or 0 for i, (_, s, _) in enumerate(ms)}
    month = month_of("created_at", q)
    return dict(
        new_leads_qs(q).annotate(m=month).values("m").annotate(n=Count("id")).values_list("m", "n")
    )


def mqls(q: ReportQuery) -> dict:
    """METRICS.md line 42: entries into ``mql`` in the period and unique contacts."""
    agg = entries(q, Stage.MQL).aggregate(
        mql_entries=Count("id"), mqls=Count("contact_id", distinct=True)
    )
    return agg


def sqls(q: ReportQuery) -> int:
    """METRICS.md line 43: unique contacts that entered ``sql`` in the period."""
    return entries(q, Stage.SQL).aggregate(n=Count("contact_id", distinct=True))["n"]


def _decisions(q: ReportQuery):
    return LifecycleTransition.objects.filter(
        from_stage=Stage.MQL,
        to_stage__in=[Stage.SQL, Stage.RECYCLED, Stage.DISQUALIFIED],
        at__gte=q.start_dt,
        at__lt=q.end_dt,
    ).filter(q.contact_q("contact__"))


def acceptance(q: ReportQuery) -> dict:
    """METRICS.md line 44: accepted ÷ decided (accepted + recycled + disqualified).

    Choice: decisions are counted as transitions out of ``mql`` in the period (a contact
    that re-entered ``mql`` and was decided twice counts twice — each MQL is a new one).
    """
    agg = _decisions(q).aggregate(
        decided=Count("id"), accepted=Count("id", filter=Q(to_stage=Stage.SQL))
    )
    rate = ratio(agg["accepted"], agg["decided"])
    return {
        **agg,
        "mql_acceptance_rate": rate,
        "acceptance_alert": rate is not None and rate < ACCEPTANCE_ALERT,
    }


def _stage_at_activity():
    return Subquery(
        LifecycleTransition.objects.filter(
            contact_id=OuterRef("contact_id"), at__lte=OuterRef("occurred_at")
        )
        .order_by("-at", "-id")
        .values("to_stage")[:1]
    )


def reopened_qs(q: ReportQuery):
    """Engagement activities in the period by contacts who were in ``recycled`` at the time.

    METRICS.md line 40. Choices: the stage at the activity's time is the stage of the
    latest transition at or before it; machine opens are not engagement.
    """
    recycled_before_end = LifecycleTransition.objects.filter(
        contact_id=OuterRef("contact_id"), to_stage=Stage.RECYCLED, at__lt=q.end_dt
    )
    return (
        Activity.objects.filter(
            kind__in=ENGAGEMENT_KINDS, occurred_at__gte=q.start_dt, occurred_at__lt=q.end_dt
        )
        .exclude(is_machine=True)
        .filter(Exists(recycled_before_end))
        .filter(q.contact_q("contact__"))
        .annotate(stage_then=_stage_at_activity())
        .filter(stage_then=Stage.RECYCLED)
    )


def reopened_leads(q: ReportQuery) -> int:
    """METRICS.md line 40: once per contact per period."""
    return reopened_counts(q)[1]


def reopened_counts(q: ReportQuery) -> tuple[dict, int]:
    """Re-opened leads per month (keyed by the clipped month start) and over the period.

    Served by ``ReopenedDayFact``: a contact's first re-opening day within a window is the
    row whose ``prev_day`` is before the window, so each window is one filtered count
    (one query for all months and the total) instead of a DISTINCT over the period's
    engagement activities with the stage at each.
    """

    def first_in(start, end) -> Q:
        return Q(day__gte=start, day__lt=end) & (Q(prev_day__isnull=True) | Q(prev_day__lt=start))

    ms = months(q)
    aggs = {
        f"m{i}": Count("id", filter=first_in(s.date(), e.date())) for i, (_, s, e) in enumerate(ms)
    }
    agg = (
        ReopenedDayFact.objects.filter(day__gte=q.start, day__lt=q.end)
        .filter(q.contact_q("contact__"))
        .aggregate(total=Count("id", filter=first_in(q.start, q.end)), **aggs)
    )
    return {s: agg[f"m{i}"] for i, (_, s, _) in enumerate(ms)}, agg["total"]


def reopened_counts_raw(q: ReportQuery) -> tuple[dict, int]:
    """:func:`reopened_counts` from the activities (property-test reference)."""
    pairs = list(
        reopened_qs(q)
        .annotate(m=month_of("occurred_at", q))
        .values_list("m", "contact_id")
        .distinct()
        .order_by()
    )
    per_month = Counter(m for m, _ in pairs)
    return {s: per_month.get(s, 0) for _, s, _ in months(q)}, len({c for _, c in pairs})


def score_profile(q: ReportQuery, new_leads: dict | None = None) -> dict[date, dict]:
    """METRICS.md line 41 and "Scores over time": month-end ledger scores of new leads.

    For each calendar month touching the period, the new leads created in it (clipped to
    the period) and their score as the sum of ledger entries before the end of that
    calendar month. Choices: buckets of 20 points below 0 and from 100 up; the median of
    an even count is the mean of the middle two (``statistics.median``).
    """
    try:
        from scoring.models import LedgerEntry
    except ImportError:  # pragma: no cover
        return {}
    ms = months(q)
    # Only the new leads with ledger entries before their month end are read (one grouped
    # join of the ledger to the period's contacts instead of a ledger sum per new lead);
    # every other new lead of the month stood at 0.
    created = "contact__created_at"
    month_end = Case(
        *[
            When(
                **{f"{created}__gte": s, f"{created}__lt": e},
                then=Value(
                    day_start(date(first.year + (first.month == 12), first.month % 12 + 1, 1))
                ),
            )
            for first, s, e in ms
        ],
        output_field=DateTimeField(),
    )
    month_index = Case(
        *[
            When(**{f"{created}__gte": s, f"{created}__lt": e}, then=Value(i))
            for i, (_, s, e) in enumerate(ms)
        ],
        output_field=IntegerField(),
    )
    rows = (
        LedgerEntry.objects.filter(
            contact__created_at__gte=q.start_dt,
            contact__created_at__lt=q.end_dt,
            contact__created_suppressed=False,
        )
        .filter(q.contact_q("contact__"))
        .alias(month_end=month_end)
        .filter(at__lt=F("month_end"))
        .values("contact_id")
        .annotate(month=month_index, month_score=Sum("points"))
        .values_list("month", "month_score")
        .order_by()
    )
    by_month: dict = {}
    for month, value in rows:
        by_month.setdefault(month, []).append(value)
    new = new_leads if new_leads is not None else new_leads_by_month(q)
    for i, (_, s, _) in enumerate(ms):
        by_month.setdefault(i, []).extend([0] * (new.get(s, 0) - len(by_month.get(i, []))))
    out = {}
    for i, (first, _, _) in enumerate(ms):
        scores = by_month.get(i, [])
        hist = {}
        for lo, hi in SCORE_BUCKETS:
            hist[bucket_label(lo, hi)] = sum(
                1 for v in scores if (lo is None or v >= lo) and (hi is None or v < hi)
            )
        out[first] = {
            "score_histogram": hist,
            "score_median": statistics.median(scores) if scores else None,
        }
    return out


def leads_by_month(q: ReportQuery) -> tuple[list[dict], dict]:
    """The leads report: one row per calendar month touching the period, and totals."""
    new = new_leads_by_month(q)
    tmonth = month_of("at", q)
    mql_rows = {
        r["m"]: r
        for r in entries(q, Stage.MQL)
        .annotate(m=tmonth)
        .values("m")
        .annotate(e=Count("id"), u=Count("contact_id", distinct=True))
    }
    sql_rows = dict(
        entries(q, Stage.SQL)
        .annotate(m=tmonth)
        .values("m")
        .annotate(u=Count("contact_id", distinct=True))
        .values_list("m", "u")
    )
    dec_rows = {
        r["m"]: r
        for r in _decisions(q)
        .annotate(m=tmonth)
        .values("m")
        .annotate(d=Count("id"), a=Count("id", filter=Q(to_stage=Stage.SQL)))
    }
    reo, reo_total = reopened_counts(q)
    profile = score_profile(q, new)
    rows = []
    for first, s, _ in months(q):
        dec = dec_rows.get(s, {"d": 0, "a": 0})
        rate = ratio(dec["a"], dec["d"])
        rows.append(
            {
                "month": first.strftime("%Y-%m"),
                "new_leads": new.get(s, 0),
                "reopened_leads": reo.get(s, 0),
                "mql_entries": mql_rows.get(s, {}).get("e", 0),
                "mqls": mql_rows.get(s, {}).get("u", 0),
                "sqls": sql_rows.get(s, 0),
                "mqls_decided": dec["d"],
                "mqls_accepted": dec["a"],
                "mql_acceptance_rate": rate,
                "acceptance_alert": rate is not None and rate < ACCEPTANCE_ALERT,
                **profile.get(first, {"score_histogram": {}, "score_median": None}),
            }
        )
    acc = acceptance(q)
    totals = {
        "new_leads": sum(r["new_leads"] for r in rows),
        "reopened_leads": reo_total,
        **mqls(q),
        "sqls": sqls(q),
        "mqls_decided": acc["decided"],
        "mqls_accepted": acc["accepted"],
        "mql_acceptance_rate": acc["mql_acceptance_rate"],
        "acceptance_alert": acc["acceptance_alert"],
    }
    return rows, totals
