"""Leads and lifecycle counts (METRICS.md "Leads and lifecycle", lines 34–55)."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime

from django.db.models import (
    Case,
    Count,
    DateField,
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
from django.db.models.functions import Coalesce
from django.utils import timezone

from crm.models import Activity, ContactScore, LifecycleTransition, Stage
from scoring.queries import median_of_counts

from ..models import (
    LeadScoreDaily,
    LeadScoreMonth,
    NewLeadDaily,
    ReopenedDayFact,
    StageEntryDaily,
)
from ..query import ReportQuery, day_start, ratio
from ..stage_facts import entry_counts, first_in
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
    """METRICS.md line 42: entries into ``mql`` in the period and unique contacts.

    Without filters, from ``StageEntryDaily`` (reports.stage_facts); with any, the
    transitions."""
    if _unfiltered(q):
        got = entry_counts(q, [Stage.MQL]).get(Stage.MQL, {"entries": 0, "contacts": 0})
        return {"mql_entries": got["entries"], "mqls": got["contacts"]}
    agg = entries(q, Stage.MQL).aggregate(
        mql_entries=Count("id"), mqls=Count("contact_id", distinct=True)
    )
    return agg


def sqls(q: ReportQuery) -> int:
    """METRICS.md line 43: unique contacts that entered ``sql`` in the period (day rows
    without filters, as :func:`mqls`)."""
    if _unfiltered(q):
        return entry_counts(q, [Stage.SQL]).get(Stage.SQL, {"contacts": 0})["contacts"]
    return entries(q, Stage.SQL).aggregate(n=Count("contact_id", distinct=True))["n"]


DECISIONS = [Stage.SQL, Stage.RECYCLED, Stage.DISQUALIFIED]  # out of mql: decided


def _decisions(q: ReportQuery):
    return LifecycleTransition.objects.filter(
        from_stage=Stage.MQL,
        to_stage__in=DECISIONS,
        at__gte=q.start_dt,
        at__lt=q.end_dt,
    ).filter(q.contact_q("contact__"))


def acceptance(q: ReportQuery) -> dict:
    """METRICS.md line 44: accepted ÷ decided (accepted + recycled + disqualified).

    Choice: decisions are counted as transitions out of ``mql`` in the period (a contact
    that re-entered ``mql`` and was decided twice counts twice — each MQL is a new one).
    Without filters, the sums of the period's ``StageEntryDaily`` rows out of ``mql``.
    """
    if _unfiltered(q):
        agg = StageEntryDaily.objects.filter(
            from_stage=Stage.MQL, to_stage__in=DECISIONS, day__gte=q.start, day__lt=q.end
        ).aggregate(
            decided=Coalesce(Sum("entries"), 0),
            accepted=Coalesce(Sum("entries", filter=Q(to_stage=Stage.SQL)), 0),
        )
    else:
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
    """The contact's stage just before the activity: its latest transition strictly
    before the activity's time (ties by id)."""
    return Subquery(
        LifecycleTransition.objects.filter(
            contact_id=OuterRef("contact_id"), at__lt=OuterRef("occurred_at")
        )
        .order_by("-at", "-id")
        .values("to_stage")[:1]
    )


def reopened_qs(q: ReportQuery):
    """Engagement activities in the period by contacts who were in ``recycled`` at the time.

    METRICS.md line 40. Choices: the stage at the activity is the stage of the latest
    transition strictly *before* the activity's time. A change dated at the activity's own
    instant is its consequence (scoring dates the MQL an engaging activity causes at that
    activity), so it does not hide the re-opening; and an activity at the very instant of
    a recycle is not "after" it. ``crm.reopenings`` marks re-openings at ingestion by the
    same rule. Machine activities and clicks on the unsubscribe link are not engagement
    (``crm.models.activities.engagement_q``).
    """
    recycled_before_end = LifecycleTransition.objects.filter(
        contact_id=OuterRef("contact_id"), to_stage=Stage.RECYCLED, at__lt=q.end_dt
    )
    return (
        Activity.objects.filter(occurred_at__gte=q.start_dt, occurred_at__lt=q.end_dt)
        .engagements()
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


def _by_month_created(field: str, values: list, ends: list, output_field) -> Case:
    """``values[i]`` for a ``field`` in the period's month ``i`` (clipped ends ``ends``),
    as a balanced CASE on ``field < end`` (about log2(months) comparisons).

    It only serves rows whose ``field`` lies in the period (the caller filters on it): the
    score profile evaluates it in the ledger join's filter, once per ledger entry of the
    period's contacts (~400k at 100k contacts), where a flat CASE of ``start <= field <
    end`` branches took on average 13 comparisons per entry at 13 months.
    """

    def pick(lo: int, hi: int):
        if lo == hi:
            return Value(values[lo], output_field=output_field)
        mid = (lo + hi) // 2
        return Case(
            When(**{f"{field}__lt": ends[mid]}, then=pick(lo, mid)),
            default=pick(mid + 1, hi),
            output_field=output_field,
        )

    return pick(0, len(values) - 1)


def score_profile(q: ReportQuery, new_leads: dict | None = None) -> dict[date, dict]:
    """METRICS.md line 41 and "Scores over time": month-end ledger scores of new leads.

    For each calendar month touching the period, the new leads created in it (clipped to
    the period) and their score as the sum of ledger entries before the end of that
    calendar month. Choices: buckets of 20 points below 0 and from 100 up; the median of
    an even count is the mean of the middle two (``statistics.median``).

    Without filters, a frozen month (``reports.score_facts``: every month one day after
    it ends) is read from ``LeadScoreDaily`` — value counts per creation day and score,
    one grouped read for all of them — and only the months not frozen yet (the current
    one) from the ledger; with any filter, every month from the ledger.
    """
    ms = months(q)
    if not ms:
        return {}
    if not _unfiltered(q):
        return _profile_out(ms, _scores_raw(q, ms, set(range(len(ms))), new_leads))
    frozen = set(
        LeadScoreMonth.objects.filter(month__in=[first for first, _, _ in ms]).values_list(
            "month", flat=True
        )
    )
    live = {i for i, (first, _, _) in enumerate(ms) if first not in frozen}
    counts = _scores_live(q, ms, live) if live else {}
    if frozen:
        month_index = _by_month_created(
            "day", list(range(len(ms))), [e.date() for _, _, e in ms], IntegerField()
        )
        rows = (
            LeadScoreDaily.objects.filter(day__gte=q.start, day__lt=q.end)
            .values("score", m=month_index)
            .annotate(n=Sum("leads"))
            .values_list("m", "score", "n")
            .order_by()
        )
        for i, score, n in rows:
            if i not in live:
                counts.setdefault(i, Counter())[score] += n
    return _profile_out(ms, counts)


def score_profile_raw(q: ReportQuery, new_leads: dict | None = None) -> dict[date, dict]:
    """:func:`score_profile` from the ledger alone (property-test reference)."""
    ms = months(q)
    if not ms:
        return {}
    return _profile_out(ms, _scores_raw(q, ms, set(range(len(ms))), new_leads))


def _scores_raw(q: ReportQuery, ms: list, only: set[int], new_leads) -> dict[int, Counter]:
    """Month index → Counter of month-end scores of the new leads of the months ``only``,
    from the ledger (months of ``months(q)``)."""
    try:
        from scoring.models import LedgerEntry
    except ImportError:  # pragma: no cover
        return {}
    # Only the new leads with ledger entries before their month end are read (one grouped
    # join of the ledger to the months' contacts instead of a ledger sum per new lead);
    # every other new lead of the month stood at 0.
    created = "contact__created_at"
    month_end = _by_month_created(
        created,
        [
            day_start(date(first.year + (first.month == 12), first.month % 12 + 1, 1))
            for first, _, _ in ms
        ],
        [e for _, _, e in ms],
        DateTimeField(),
    )
    month_index = _by_month_created(
        created, list(range(len(ms))), [e for _, _, e in ms], IntegerField()
    )
    rows = (
        LedgerEntry.objects.filter(
            contact__created_at__gte=min(ms[i][1] for i in only),
            contact__created_at__lt=max(ms[i][2] for i in only),
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
    counts: dict[int, Counter] = {i: Counter() for i in only}
    for month, value in rows:
        if month in only:
            counts[month][value] += 1
    new = new_leads if new_leads is not None else new_leads_by_month(q)
    for i in only:
        fill = new.get(ms[i][1], 0) - sum(counts[i].values())
        if fill > 0:
            counts[i][0] += fill
    return counts


def _scores_live(q: ReportQuery, ms: list, only: set[int]) -> dict[int, Counter]:
    """Month-end score counts of the months ``only`` that are not frozen: the current
    month from the stored scores, ended months still waiting for their freeze from the
    ledger."""
    now = timezone.now()
    current = {i for i in only if _month_end(ms[i][0]) > now}
    counts = _scores_current(q, ms, current) if current else {}
    if only - current:
        counts.update(_scores_ledger(q, ms, only - current))
    return counts


def _month_end(first: date) -> datetime:
    """The first instant after the calendar month that starts on ``first``."""
    return day_start(date(first.year + (first.month == 12), first.month % 12 + 1, 1))


def _scores_current(q: ReportQuery, ms: list, only: set[int]) -> dict[int, Counter]:
    """Month index → Counter of month-end scores of the new leads of the months ``only``
    that have not ended yet (the current month), as one grouped read of those months' new
    leads and their cached score (``crm.ContactScore``).

    Why the stored score is the month-end score here: the cached score is the sum of all
    the contact's ledger entries (``scoring.engine`` keeps it so in the same transaction as
    every entry it appends), none of which is dated after the moment it was written —
    activities in the future are refused and decay, expiry and rescore entries are dated at
    their run. So the sum of the entries before the month end is the stored score. Reading
    it costs one index range of the month's new leads; summing the ledger per lead cost one
    index probe per lead (a second at 1M contacts for the current month's ~60k leads).

    Unfiltered, the range is read from ContactScore's copies of ``created_at`` and
    ``created_suppressed`` (index-only, ``contactscore_new_leads``); a report filtered on
    the contact (owner, source, campaign, segment …) joins its new leads to their scores.
    """
    ends = [e for _, _, e in ms]
    if q.contact_q():
        leads, score = new_leads_qs(q), "scorecard__score"
    else:
        leads = ContactScore.objects.filter(
            created_at__gte=q.start_dt, created_at__lt=q.end_dt, created_suppressed=False
        )
        score = "score"
    rows = (
        leads.filter(
            created_at__gte=min(ms[i][1] for i in only),
            created_at__lt=max(ms[i][2] for i in only),
        )
        .annotate(m=_by_month_created("created_at", list(range(len(ms))), ends, IntegerField()))
        .values("m", score)
        .annotate(n=Count("pk"))
        .values_list("m", score, "n")
        .order_by()
    )
    counts: dict[int, Counter] = {i: Counter() for i in only}
    for i, score, n in rows:
        if i in only:
            counts[i][score] += n
    return counts


def _scores_ledger(q: ReportQuery, ms: list, only: set[int]) -> dict[int, Counter]:
    """Month index → Counter of month-end scores of the new leads of the ended months
    ``only`` that are not frozen yet (the freeze runs a day after a month ends): one
    grouped read of those months' new leads, each with its ledger sum before its month
    end through the (contact, at) index — work in proportion to those leads, where a join
    let the planner hash the whole ledger (a sequential scan of every entry)."""
    try:
        from scoring.models import LedgerEntry
    except ImportError:  # pragma: no cover
        return {}
    ends = [e for _, _, e in ms]
    month_end = _by_month_created(
        "created_at",
        [day_start(date(f.year + (f.month == 12), f.month % 12 + 1, 1)) for f, _, _ in ms],
        ends,
        DateTimeField(),
    )
    total = (
        LedgerEntry.objects.filter(contact_id=OuterRef("pk"), at__lt=OuterRef("month_end"))
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("points"))
        .values("s")
    )
    rows = (
        new_leads_qs(q)
        .filter(
            created_at__gte=min(ms[i][1] for i in only),
            created_at__lt=max(ms[i][2] for i in only),
        )
        .alias(month_end=month_end)
        .annotate(
            m=_by_month_created("created_at", list(range(len(ms))), ends, IntegerField()),
            s=Coalesce(Subquery(total), 0),
        )
        .values("m", "s")
        .annotate(n=Count("id"))
        .values_list("m", "s", "n")
        .order_by()
    )
    counts: dict[int, Counter] = {i: Counter() for i in only}
    for i, score, n in rows:
        if i in only:
            counts[i][score] += n
    return counts


def _profile_out(ms: list, counts: dict[int, Counter]) -> dict[date, dict]:
    out = {}
    for i, (first, _, _) in enumerate(ms):
        c = +counts.get(i, Counter())  # drop zero and negative counts
        hist = {}
        for lo, hi in SCORE_BUCKETS:
            hist[bucket_label(lo, hi)] = sum(
                n for v, n in c.items() if (lo is None or v >= lo) and (hi is None or v < hi)
            )
        out[first] = {"score_histogram": hist, "score_median": median_of_counts(c)}
    return out


LIFECYCLE_KEYS = ("mql_entries", "mqls", "sqls", "mqls_decided", "mqls_accepted")


def _lifecycle_counts(q: ReportQuery) -> tuple[list[dict], dict]:
    """Per (clipped) month of the period and over it: MQL entries and unique MQLs, unique
    SQLs, MQLs decided and accepted (:func:`mqls`, :func:`sqls`, :func:`acceptance`).

    Without filters, one read of the period's ``StageEntryDaily`` rows (reports.stage_facts:
    a month's unique contacts are its rows whose previous same-stage entry is before the
    month); with any, :func:`lifecycle_counts_raw`.
    """
    if not _unfiltered(q):
        return lifecycle_counts_raw(q)
    ms = months(q)
    starts = [s.date() for _, s, _ in ms]
    ends = [e.date() for _, _, e in ms]
    # Grouped per month (a balanced CASE on the day) and stage pair: a row is its contact's
    # first entry of the month when its previous same-stage entry is before the month start
    # (one comparison per row instead of a FILTER per month and figure).
    rows = (
        StageEntryDaily.objects.filter(
            to_stage__in=[Stage.MQL, *DECISIONS], day__gte=q.start, day__lt=q.end
        )
        .alias(month_start=_by_month_created("day", starts, ends, DateField()))
        .values(
            "from_stage",
            "to_stage",
            m=_by_month_created("day", list(range(len(ms))), ends, IntegerField()),
        )
        .annotate(
            n=Sum("entries"),
            firsts=Coalesce(Sum("entries", filter=Q(prev_day__lt=F("month_start"))), 0),
            period_firsts=Coalesce(Sum("entries", filter=first_in(q.start)), 0),
        )
        .values_list("m", "from_stage", "to_stage", "n", "firsts", "period_firsts")
        .order_by()
    )
    counts = [dict.fromkeys(LIFECYCLE_KEYS, 0) for _ in ms]
    period = {"mqls": 0, "sqls": 0}
    for i, from_stage, to_stage, n, firsts, period_firsts in rows:
        c = counts[i]
        if to_stage == Stage.MQL:
            c["mql_entries"] += n
            c["mqls"] += firsts
            period["mqls"] += period_firsts
        if to_stage == Stage.SQL:
            c["sqls"] += firsts
            period["sqls"] += period_firsts
        if from_stage == Stage.MQL and to_stage in DECISIONS:  # accepted, recycled, rejected
            c["mqls_decided"] += n
            c["mqls_accepted"] += n if to_stage == Stage.SQL else 0
    return _lifecycle_out(counts, period)


def lifecycle_counts_raw(q: ReportQuery) -> tuple[list[dict], dict]:
    """:func:`_lifecycle_counts` from the transitions (filters; property-test reference).

    Two reads of the period's entries into mql, sql, recycled and disqualified instead of
    six reads of the same ``(to_stage, at)`` range: one grouped by month, one for the
    period's unique contacts. Months partition the period, so the period's entries,
    decided and accepted are the sums of the months'.
    """
    mql = Q(to_stage=Stage.MQL)
    sql = Q(to_stage=Stage.SQL)
    decided = Q(from_stage=Stage.MQL, to_stage__in=DECISIONS)
    accepted = Q(from_stage=Stage.MQL, to_stage=Stage.SQL)
    qs = entries(q, Stage.MQL, Stage.SQL, Stage.RECYCLED, Stage.DISQUALIFIED)
    by_month = {
        r["m"]: r
        for r in qs.annotate(m=month_of("at", q))
        .values("m")
        .annotate(
            mql_entries=Count("id", filter=mql),
            mqls=Count("contact_id", distinct=True, filter=mql),
            sqls=Count("contact_id", distinct=True, filter=sql),
            mqls_decided=Count("id", filter=decided),
            mqls_accepted=Count("id", filter=accepted),
        )
        .order_by()
    }
    period = qs.filter(to_stage__in=[Stage.MQL, Stage.SQL]).aggregate(
        mqls=Count("contact_id", distinct=True, filter=mql),
        sqls=Count("contact_id", distinct=True, filter=sql),
    )
    rows = [{k: by_month.get(s, {}).get(k, 0) for k in LIFECYCLE_KEYS} for _, s, _ in months(q)]
    return _lifecycle_out(rows, period)


def _lifecycle_out(rows: list[dict], period: dict) -> tuple[list[dict], dict]:
    totals = {
        **{k: sum(r[k] for r in rows) for k in ("mql_entries", "mqls_decided", "mqls_accepted")},
        **period,
    }
    out = []
    for counts in [*rows, totals]:
        rate = ratio(counts["mqls_accepted"], counts["mqls_decided"])
        out.append(
            {
                **{k: counts[k] for k in LIFECYCLE_KEYS},
                "mql_acceptance_rate": rate,
                "acceptance_alert": rate is not None and rate < ACCEPTANCE_ALERT,
            }
        )
    return out[:-1], out[-1]


def leads_by_month(q: ReportQuery) -> tuple[list[dict], dict]:
    """The leads report: one row per calendar month touching the period, and totals."""
    new = new_leads_by_month(q)
    per_month, period = _lifecycle_counts(q)
    reo, reo_total = reopened_counts(q)
    profile = score_profile(q, new)
    rows = []
    for (first, s, _), counts in zip(months(q), per_month, strict=True):
        rows.append(
            {
                "month": first.strftime("%Y-%m"),
                "new_leads": new.get(s, 0),
                "reopened_leads": reo.get(s, 0),
                **counts,
                **profile.get(first, {"score_histogram": {}, "score_median": None}),
            }
        )
    totals = {
        "new_leads": sum(r["new_leads"] for r in rows),
        "reopened_leads": reo_total,
        **period,
    }
    return rows, totals
