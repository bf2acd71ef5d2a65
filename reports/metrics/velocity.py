"""Funnel velocity (METRICS.md "time in stage / velocity"): per forward step, the converted
contacts' median and p90 time from entering A to entering B, from ``TransitionFact``'s
stored durations — picked in the database on PostgreSQL, sorted in Python elsewhere."""

from __future__ import annotations

import math
from collections import defaultdict

from django.contrib.postgres.fields import ArrayField
from django.db.models import Aggregate, BigIntegerField, Count, Q, Value

from crm.models import Stage
from crm.models.choices import FUNNEL_STAGES

from ..models import TransitionFact
from ..query import ReportQuery

DAY = 86400.0


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (choice: no interpolation; p90 of 10 values is the 9th)."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p * len(v)) - 1)]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _moves(q: ReportQuery):
    """Per step's from-stage, the facts of its converted cohort and their durations (µs).

    A stage's rows: first entries in the period (``prev_same_at`` before it) whose
    ``next_at`` — the first entry into the next stage after them — is before the end.
    The lead step's rows: the new leads' first MQL entries before the end. ``lead_at`` is
    only set for contacts not suppressed when created (a fact frozen at creation, see
    TransitionFact), so no join to the contacts checks it again. Both are read index-only
    through their partial indexes (``transition_fact_velocity``, ``transition_fact_lead``).
    """
    facts = TransitionFact.objects.filter(q.contact_q("contact__"))
    rows = facts.filter(
        Q(prev_same_at__isnull=True) | Q(prev_same_at__lt=q.start_dt),
        to_stage__in=FUNNEL_STAGES[1:-1],
        at__gte=q.start_dt,
        at__lt=q.end_dt,
        next_at__lt=q.end_dt,
    )
    lead_rows = facts.filter(
        to_stage=Stage.MQL, lead_at__gte=q.start_dt, lead_at__lt=q.end_dt, at__lt=q.end_dt
    )
    return rows, lead_rows


def _days(us: int) -> float:
    """Microseconds as days, the float ``timedelta(microseconds=us).total_seconds() / DAY``
    gives (``total_seconds`` is the exact quotient by 10**6, rounded once)."""
    return us / 1_000_000 / DAY


def velocity_python(q: ReportQuery) -> dict[str, tuple]:
    """Per step's from-stage: ``(converted, median days, p90 days)`` by sorting every
    duration in Python (the portable path: SQLite)."""
    rows, lead_rows = _moves(q)
    times: dict[str, list[float]] = defaultdict(list)
    for stage, us in rows.values_list("to_stage", "next_us").union(
        lead_rows.values_list(Value(str(Stage.LEAD)), "lead_us"), all=True
    ):
        times[stage].append(_days(us))
    return {s: (len(t), median(t), percentile(t, 0.9)) for s, t in times.items()}


# ``percentile_disc(f)`` is the value at rank ceil(f·n) of the sorted values (1-based; the
# first for f·n ≤ 1): f = 0.9 is :func:`percentile`'s nearest rank (the same double
# product and ceiling); f = 0.5 is the middle value of an odd n and the lower middle of an
# even n; f = 0.5 + 1e-10 is rank ⌊n/2⌋ + 1 — the middle again for an odd n, the upper
# middle for an even n — for every n below 5·10⁹ (1e-10·n < 0.5 and far above the
# product's rounding error). One sort of the integers per stage gives all three.
RANKS = (0.5, 0.5 + 1e-10, 0.9)


class _Ranks(Aggregate):
    """PostgreSQL ordered-set aggregate: the values at :data:`RANKS`, in one sort."""

    function = "percentile_disc"
    template = "%(function)s(%(ranks)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = ArrayField(BigIntegerField())

    def as_sql(self, compiler, connection, **extra):
        ranks = ", ".join(repr(float(r)) for r in RANKS)
        return super().as_sql(
            compiler, connection, ranks=f"ARRAY[{ranks}]::double precision[]", **extra
        )


def velocity_sql(q: ReportQuery) -> dict[str, tuple]:
    """:func:`velocity_python` with the ranks picked in the database (PostgreSQL): one row
    per stage instead of every duration of the period (~340k rows at 1M contacts for a
    year, most of a second of Python); the picked microseconds turn into days and the even
    median into the mean of its two middle values exactly as :func:`median` computes them.
    """
    rows, lead_rows = _moves(q)
    stages = (
        rows.values("to_stage")
        .annotate(n=Count("next_us"), ranks=_Ranks("next_us"))
        .values_list("to_stage", "n", "ranks")
        .order_by()
    )
    lead = (
        lead_rows.annotate(stage=Value(str(Stage.LEAD)))
        .values("stage")
        .annotate(n=Count("lead_us"), ranks=_Ranks("lead_us"))
        .values_list("stage", "n", "ranks")
        .order_by()
    )
    out = {}
    for stage, n, ranks in stages.union(lead, all=True):
        if not n:
            continue
        lo, hi, p90 = (_days(us) for us in ranks)
        out[stage] = (n, (lo + hi) / 2 if n % 2 == 0 else lo, p90)
    return out
