"""PostgreSQL fast path of the full rescore: one chunk of contacts in one read.

The portable path (:func:`scoring.engine.reconcile`) reads every contact's expected points
per rule and the ledger's sums per (contact, rule) into Python, diffs them there, and
sends the adjustments and the new scores back as arrays. Per 100k contacts that moved
~1M values each way and cost seconds of worker CPU for arithmetic PostgreSQL does in a
hash join. Here the diff is one SELECT per chunk: the expected points (built from the
same ORM conditions: ``fit_q``, ``activity_q``, ``engine._column``), the ledger sums and
their difference; only the adjustments and the changed scores come back, and go out
again as two array-joined writes (``entries_append``, ``scores_set``). The read is kept
apart from the writes so that PostgreSQL can run it in parallel workers (it never does
for a statement that writes); for that, a rule's distinct days/weeks are counted as the
set bits of ``BIT_OR`` over a bit per day/week (combinable across workers) rather than
with ``COUNT(DISTINCT …)`` (one process, a sort per contact) — the back-test's fast path
(scoring.backtest_sql) counts them the same way. tests/scoring/test_rescore_sql.py checks
this path appends the same entries, leaves the same scores and hands off the same MQLs
as the portable path on random rules and activities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    DateField,
    Func,
    IntegerField,
    Q,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Coalesce, TruncDate, TruncWeek
from django.utils import timezone

from crm.models import Activity, Contact
from crm.models.activities import engagement_q, unsubscribe_click_q
from crm.models.choices import ENGAGEMENT_KINDS

from . import engine
from .models import LedgerEntry, Rule
from .rules import activity_q, fit_q, in_force
from .writes import Entry, ids_q, int_array, scores_set, word_array

R = LedgerEntry.Reason
BIG = engine.BIG

# Locks the chunk's contacts in id order (the order ingestion and the scoring handler
# lock theirs) without sending the rows to the worker.
_LOCK_SQL = (
    "WITH locked AS MATERIALIZED (SELECT id FROM crm_contact WHERE id >= %s AND id < %s "
    "ORDER BY id FOR NO KEY UPDATE) SELECT count(*) FROM locked"
)


@dataclass
class ChunkOutcome:
    contacts: int = 0  # contacts of the chunk (locked)
    contacts_changed: int = 0
    entries_created: int = 0
    # Entries and new scores of the contacts that gained points and now reach the
    # threshold: all the hand-off reads (every other contact cannot become an MQL).
    handoff_entries: list[Entry] = field(default_factory=list)
    handoff_scores: dict[int, int] = field(default_factory=dict)


def chunk_lock(lo: int, hi: int) -> int:
    """Lock the contacts with ids in ``[lo, hi)``; return how many there are."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [lo, hi])
        return cursor.fetchone()[0]


def chunk_rescore(
    *, lo: int, hi: int, rules: list[Rule], now: datetime, threshold: int | None
) -> ChunkOutcome:
    """Rescore the (already locked) contacts with ids in ``[lo, hi)``: append the entries
    that make the ledger equal every enabled rule's worth (and take back the points of
    rules not enabled), set the cached score to the ledger sum where it differs.

    Must run in the transaction that locked the chunk, after the lock: the read's snapshot
    then holds every committed activity and entry of these contacts, and no ingestion
    batch touching them can commit before this transaction does (it locks its contacts
    first), so nothing is counted twice or missed.
    ``threshold`` (None: no hand-off) selects the contacts whose entries come back.

    The read is one SELECT and the writes two statements joined to arrays of what it
    returned (the adjustments and the changed scores, ~30k rows per 50k-contact chunk in
    the benchmark): a statement that writes (a data-modifying CTE) never runs in parallel
    workers, a SELECT does, and the read is most of the work — every rule's aggregate
    over the chunk's activities, the fit conditions over its contacts.
    """
    bounds = _day_bounds(rules, now)
    sql, params = _statement(Scope(lo=lo, hi=hi), rules, now, bounds)
    with connection.cursor() as cursor:
        cursor.execute(_PLANNER_SQL, _PLANNER_SETTINGS)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    contacts = next((row[1] for row in rows if row[0] == 0), 0) or 0
    outcome = rows_apply(rows, now=now, threshold=threshold)
    outcome.contacts = contacts
    return outcome


def rows_apply(rows, *, now: datetime, threshold: int | None) -> ChunkOutcome:
    """Write what a chunk's read returned: rows ``(1, contact, rule, points)`` per
    adjustment (appended, dated ``now``) and ``(2, contact, stale, score)`` per contact
    adjusted or stale (the cached score set where stale); other rows are ignored.
    Plain tuples, no model or Entry per row (~30k per chunk in the benchmark)."""
    outcome = ChunkOutcome()
    adjustments = [row[1:] for row in rows if row[0] == 1]
    scores = {row[1]: (row[3], row[2]) for row in rows if row[0] == 2}
    if adjustments:
        # Every adjustment has the same time and reason and no activity: three arrays.
        contacts, rule_ids, points = zip(*adjustments, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT_SQL,
                [now, R.RESCORE.value, int_array(contacts), int_array(rule_ids)]
                + [int_array(points)],
            )
    scores_set({c: score for c, (score, stale) in scores.items() if stale})
    outcome.entries_created = len(adjustments)
    outcome.contacts_changed = len({c for c, _, _ in adjustments})
    if threshold is not None:
        gained = {c for c, _, p in adjustments if p > 0}
        reach = {c for c in gained if scores[c][0] >= threshold}
        outcome.handoff_entries = [
            Entry(c, r, None, p, now, R.RESCORE.value) for c, r, p in adjustments if c in reach
        ]
        outcome.handoff_scores = {c: scores[c][0] for c in reach}
    return outcome


_INSERT_SQL = (
    "INSERT INTO scoring_ledgerentry (contact_id, rule_id, activity_id, points, at, reason) "
    "SELECT c, r, NULL, p, %s, %s FROM unnest(%s::bigint[], %s::bigint[], %s::integer[]) "
    "AS v(c, r, p)"
)


# Planner settings local to the chunk's transaction. ``parallel_tuple_cost``: the fit
# conditions (~20 ``UPPER()`` per contact, ~10 µs) and the per-rule filtered aggregates
# cost far more per row than the planner prices them, so without it the read stays in
# one process; ``work_mem``: each worker's partial aggregate holds a state per contact of
# the chunk (the rules' day/week bit strings), which spills in batches at the default.
_PLANNER_SQL = (
    "SELECT set_config('parallel_tuple_cost', %s, true), set_config('work_mem', %s, true)"
)
_PLANNER_SETTINGS = ["0.001", "128MB"]

# A rule counting distinct days/weeks ORs one bit per day (week) of the activities'
# span; beyond this span (bad data: a date decades away) the bit strings would grow
# with it, and the aggregate counts with COUNT(DISTINCT …) instead, in one process.
MAX_SPAN_DAYS = 5 * 366
DAY_MARGIN = 2  # positions either side of the span a time zone shift could reach


def _day_bounds(rules: list[Rule], now: datetime) -> tuple[date, date] | None:
    """First and last local day of the activities the day/week rules read (index
    probes per kind), or None when no rule counts days or weeks, there are no such
    activities, or their span exceeds ``MAX_SPAN_DAYS``. Read after the chunk's lock:
    the chunk's contacts get no new activity until it commits."""
    kinds = sorted(
        {
            r.activity_kind
            for r in rules
            if r.kind == Rule.Kind.ENGAGEMENT
            and r.frequency in (Rule.Frequency.ONCE_PER_DAY, Rule.Frequency.ONCE_PER_WEEK)
        }
    )
    if not kinds:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(b.lo), max(b.hi) FROM unnest(%s::varchar[]) AS k(kind), LATERAL "
            "(SELECT min(occurred_at) AS lo, max(occurred_at) AS hi FROM crm_activity a "
            "WHERE a.kind = k.kind) b",
            [word_array(kinds)],
        )
        first, last = cursor.fetchone()
    if first is None:
        return None
    tz = timezone.get_current_timezone()
    first, last = first.astimezone(tz).date(), last.astimezone(tz).date()
    if (last - first).days > MAX_SPAN_DAYS:
        return None
    return first - timedelta(days=DAY_MARGIN), last + timedelta(days=DAY_MARGIN)


class _BitOr(Aggregate):
    function = "BIT_OR"
    output_field = CharField()  # a bit string, only ever counted in the database


def _bucket_count(rule: Rule, q, bounds: tuple[date, date]):
    """The rule's distinct days (weeks) among the activities matching ``q``: the set
    bits of BIT_OR over a bit per ``TruncDate`` (``TruncWeek``) — the engine's buckets —
    which PostgreSQL combines across parallel workers, unlike COUNT(DISTINCT …)."""
    first, last = bounds
    if rule.frequency == Rule.Frequency.ONCE_PER_DAY:
        bits = (last - first).days + 1
        bucket = TruncDate("occurred_at")
        template = f"B'1'::bit({bits}) >> (%(expressions)s)"
        start = first
    else:
        start = first - timedelta(days=first.weekday())
        bits = (last - start).days // 7 + 1
        bucket = Cast(TruncWeek("occurred_at"), DateField())
        template = f"B'1'::bit({bits}) >> ((%(expressions)s) / 7)"
    position = Func(
        bucket,
        Value(start, output_field=DateField()),
        arg_joiner=" - ",
        template=template,
        output_field=CharField(),
    )
    counted = Func(_BitOr(position, filter=q), function="bit_count", output_field=BIG)
    return Coalesce(counted, Value(0), output_field=BIG)


@dataclass(frozen=True)
class Scope:
    """The contacts a statement reads: an id range ``[lo, hi)``, a list of ids, or (both
    None) every contact. ``markers``: with each contact's row-change markers (the pass,
    scoring.rescore_pass)."""

    lo: int | None = None
    hi: int | None = None
    ids: tuple[int, ...] | None = None
    markers: bool = False

    def q(self, field: str) -> Q:
        if self.ids is not None:
            return ids_q(field, self.ids)
        if self.lo is not None:
            return Q(**{f"{field}__gte": self.lo, f"{field}__lt": self.hi})
        return Q()

    def ledger_sql(self) -> tuple[str, list]:
        if self.ids is not None:
            return "WHERE contact_id = ANY(%s::bigint[])", [int_array(self.ids)]
        if self.lo is not None:
            return "WHERE contact_id >= %s AND contact_id < %s", [self.lo, self.hi]
        return "", []


def _statement(scope: Scope, rules, now, bounds) -> tuple[str, list]:
    """The read of a chunk (or of some of its contacts): the totals, the adjustments and
    the changed scores as rows."""
    ctes, params = diff_ctes(scope, rules, now, bounds)
    sql = (
        f"{ctes}, added AS (SELECT contact_id, SUM(points) AS d, COUNT(*) AS n FROM diff "  # noqa: S608
        "GROUP BY contact_id), "
        "score AS MATERIALIZED (SELECT f.id, f.cached, "
        "(COALESCE(ot.t, 0) + COALESCE(d.d, 0))::int AS score, COALESCE(d.n, 0) AS n "
        "FROM fit f LEFT JOIN (SELECT contact_id, SUM(t) AS t FROM owned GROUP BY contact_id) ot "
        "ON ot.contact_id = f.id LEFT JOIN added d ON d.contact_id = f.id) "
        # Rows: the totals, the adjustments, and the new score of every contact that gets
        # an adjustment or whose cached score differs (flagged: only those are written —
        # each is a non-HOT update, score being indexed for the score-sorted lists).
        "SELECT 0, (SELECT count(*) FROM score), NULL::bigint, NULL::int "
        "UNION ALL SELECT 1, contact_id, rule_id, points::int FROM diff "
        "UNION ALL SELECT 2, id, (score <> cached)::int, score FROM score "
        "WHERE n > 0 OR score <> cached"
    )
    return sql, params


# Row-change markers of a contact for the pass (scoring.rescore_pass): the
# contact row's and its company row's creating transaction — any committed UPDATE of
# either writes a new row version with another xmin.
CONTACT_XMIN = '"crm_contact".xmin::text'


def diff_parts(scope: Scope, rules, now, bounds) -> Parts:
    """Per contact of ``scope`` its row (``fit``: id, created_at, cached score, each flag
    rule's points ``f<rule>``; with ``cx``/``kx`` row markers for the pass),
    its activity aggregate (``agg``), and each rule's points as SQL over both rows.

    A rule not yet in force at ``now`` is left out, as a disabled one: worth nothing,
    the points the ledger holds for it are taken back (``engine.expected_values`` alike).
    """
    rule_set = engine.RuleSet([r for r in rules if in_force(r, now)])
    flags = rule_set.flag_rules
    counted = rule_set.count_rules
    inactive = [r for r in counted if r.kind == Rule.Kind.NEGATIVE]
    engagement = [r for r in counted if r.kind != Rule.Kind.NEGATIVE]
    with_markers = scope.markers

    # Per contact of the chunk: creation time, cached score and each flag rule's points.
    fit_cols = {
        f"f{r.pk}": Case(
            When(fit_q(r), then=Value(r.points)), default=Value(0), output_field=IntegerField()
        )
        for r in flags
    }
    # Constant SQL (no input): the contact row's marker.
    markers = {"cx": RawSQL(CONTACT_XMIN, [], CharField())} if with_markers else {}  # noqa: S611
    company = ["company_id"] if with_markers else []
    contacts = (
        Contact.objects.filter(scope.q("pk"))
        .order_by()
        .annotate(**fit_cols, **markers)
        .values_list("pk", "created_at", "scorecard__score", *company, *fit_cols, *markers)
    )
    contact_sql, contact_params = contacts.query.sql_with_params()
    names = ["id", "created_at", "cached", *company, *fit_cols, *markers]
    if with_markers:
        # The company row's marker by a join (a correlated subquery per contact would
        # keep the fit conditions out of parallel workers).
        contact_sql = (
            f"SELECT q.*, k.xmin::text AS kx FROM ({contact_sql}) q({', '.join(names)}) "  # noqa: S608
            "LEFT JOIN crm_company k ON k.id = q.company_id"
        )
        names.append("kx")

    # Per contact with activity: each engagement rule's counted buckets (and latest match
    # for a half-life), and the latest engagement for the inactivity rules — the same
    # aggregate as engine.expected_values. Every rule condition requires a human
    # activity, so machine activities are left out before grouping.
    columns = []
    for r in engagement:
        q = _time_first(r, now) & activity_q(r, now=now)
        columns.append((f"c{r.pk}", r, q))
        if r.half_life_days:
            columns.append((f"l{r.pk}", r, q))
    kinds = {r.activity_kind for r in engagement} | (set(ENGAGEMENT_KINDS) if inactive else set())
    if inactive:
        # The rows read are people's activities of these kinds (the filter below): when
        # those are all engagement kinds, an engagement is any of them but an unsubscribe
        # click — not 17 kind comparisons more per activity (~0.4 s per 500k contacts).
        engaged = ~unsubscribe_click_q() if kinds <= ENGAGEMENT_KINDS else engagement_q()
        columns.append(("last_engaged", None, engaged))
    if columns:
        activities = (
            Activity.objects.filter(scope.q("contact_id"), kind__in=sorted(kinds), is_machine=False)
            .order_by()
            .values("contact_id")
            .annotate(**{n: _column(n, r, q, bounds) for n, r, q in columns})
            .values_list("contact_id", *(n for n, _, _ in columns))
        )
        activity_sql, activity_params = activities.query.sql_with_params()
        halving = [r for r in engagement if r.half_life_days]
        if halving:
            # A half-life rule's halvings since its latest match, once per contact (its
            # points' CASE reads them four times): engine.rule_value's
            # h = int((now - last) / half-life), exact — the epoch difference is numeric.
            hs = ", ".join(
                f'trunc(extract(epoch from (%s::timestamptz - q."l{r.pk}")) '
                f'/ {int(r.half_life_days) * 86400})::int AS "h{r.pk}"'
                for r in halving
            )
            activity_sql = f"SELECT q.*, {hs} FROM ({activity_sql}) q"  # noqa: S608
            activity_params = (*([now] * len(halving)), *activity_params)
    else:
        activity_sql, activity_params = "SELECT NULL::bigint AS contact_id WHERE false", ()

    # (rule id, SQL of its points for the contact row f and aggregate row a). Only ints
    # and the ORM's compiled SQL are interpolated; times and ids travel as parameters.
    values = [(r.pk, f'f."f{r.pk}"') for r in flags]
    params: list = []
    for r in engagement:
        n = f'COALESCE(a."c{r.pk}", 0)'
        cap = 1 if r.frequency == Rule.Frequency.ONCE_EVER else None
        if r.cap:
            cap = min(cap, r.cap) if cap else r.cap
        value = f"({int(r.points)} * LEAST({n}, {int(cap)}))" if cap else f"({int(r.points)} * {n})"
        if r.half_life_days:
            # engine.rule_value: int(value / 2**h), h the halvings (the aggregate's
            # column), 0 from 64 halvings on; value / 2**h truncates toward zero like
            # integer division.
            h = f'a."h{r.pk}"'
            value = (
                f"CASE WHEN {n} = 0 THEN 0 WHEN {h} >= 63 THEN 0 "
                f"WHEN {h} >= 0 THEN {value} / (1::bigint << {h}) "
                f"ELSE {value} * (1::bigint << LEAST(-{h}, 62)) END"
            )
        values.append((r.pk, value))
    for r in inactive:
        cutoff = now - timedelta(days=r.inactive_days or 0)
        values.append(
            (
                r.pk,
                "CASE WHEN (CASE WHEN a.last_engaged IS NOT NULL THEN a.last_engaged < %s "
                f"ELSE f.created_at < %s END) THEN {int(r.points)} ELSE 0 END",
            )
        )
        params.extend([cutoff, cutoff])
    return Parts(
        fit=(contact_sql, list(contact_params)),
        fit_names=names,
        agg=(activity_sql, list(activity_params)),
        values=values,
        value_params=params,
        ledger=scope.ledger_sql(),
    )


@dataclass
class Parts:
    """The pieces of a diff statement (see :func:`diff_ctes`)."""

    fit: tuple[str, list]  # per contact: the ``fit_names`` columns
    fit_names: list[str]
    agg: tuple[str, list]  # per contact with activities: the rules' aggregates
    values: list[tuple[int, str]]  # (rule id, SQL of its points from rows f and a)
    value_params: list
    ledger: tuple[str, list]  # WHERE clause of the ledger rows of the scope


def diff_ctes(scope: Scope, rules, now, bounds) -> tuple[str, list]:
    """``WITH fit, agg, expected, owned, diff``: per contact of ``scope`` its row (``fit``:
    id, created_at, cached score, each flag rule's points), its activity aggregate
    (``agg``), the expected and owned points per (contact, rule) and their difference
    (``diff``: contact, rule, points)."""
    parts = diff_parts(scope, rules, now, bounds)
    values = parts.values
    if values:
        # One row per contact with every rule's points, unnested in the select list (a
        # LATERAL VALUES list evaluated as a join per contact cost 4× as much CPU).
        ids = ", ".join(str(int(pk)) for pk, _ in values)
        exprs = ", ".join(f"({expr})" for _, expr in values)
        expected = (
            "SELECT contact_id, rule_id, value FROM (SELECT f.id AS contact_id, "  # noqa: S608
            f"unnest('{{{ids}}}'::bigint[]) AS rule_id, unnest(ARRAY[{exprs}]::int[]) AS value "
            "FROM fit f LEFT JOIN agg a ON a.contact_id = f.id) v WHERE value <> 0"
        )
    else:
        expected = (
            "SELECT NULL::bigint AS contact_id, NULL::bigint AS rule_id, 0 AS value WHERE false"
        )
    ledger_where, ledger_params = parts.ledger
    sql = (
        f"WITH fit({', '.join(parts.fit_names)}) AS MATERIALIZED "  # noqa: S608
        f"({parts.fit[0]}), "
        f"agg AS MATERIALIZED ({parts.agg[0]}), "
        f"expected AS ({expected}), "
        # What the ledger holds per (contact, rule); recycle resets belong to no rule's
        # expectation (engine module docstring) but count in the score, and take back
        # at most what the rule is worth: the target is engine.rule_target(worth, r).
        "owned AS (SELECT contact_id, rule_id, "
        f"COALESCE(SUM(points) FILTER (WHERE reason <> '{R.RECYCLE_RESET.value}'), 0) AS s, "
        f"COALESCE(SUM(points) FILTER (WHERE reason = '{R.RECYCLE_RESET.value}'), 0) AS r, "
        f"SUM(points) AS t FROM scoring_ledgerentry {ledger_where} "
        "GROUP BY contact_id, rule_id), "
        "diff AS MATERIALIZED (SELECT * FROM (SELECT COALESCE(e.contact_id, o.contact_id) "
        "AS contact_id, COALESCE(e.rule_id, o.rule_id) AS rule_id, "
        "GREATEST(COALESCE(e.value, 0), LEAST(COALESCE(e.value, 0), 0) - COALESCE(o.r, 0)) "
        "- COALESCE(o.s, 0) AS points "
        "FROM expected e FULL JOIN owned o ON o.contact_id = e.contact_id "
        "AND o.rule_id = e.rule_id) d WHERE points <> 0)"
    )
    params = [*parts.fit[1], *parts.agg[1], *parts.value_params, *ledger_params]
    return sql, params


def _time_first(rule: Rule, now: datetime) -> Q:
    """The rule's kind and time bounds, tested before its whole condition (which repeats
    them): PostgreSQL evaluates a filter's conditions in the order written, and an
    activity of another kind or outside an expiry window then skips the costly tests
    (``UPPER(url) LIKE …``, JSON lookups). Over 20M activities this is ~30 % of the
    aggregate's CPU."""
    q = Q(kind=rule.activity_kind)
    if rule.expire_after_days:
        q &= Q(occurred_at__gt=now - timedelta(days=rule.expire_after_days))
    if rule.active_from:
        q &= Q(occurred_at__gte=rule.active_from)
    return q


def _column(name: str, rule: Rule | None, q, bounds):
    """``engine._column``, with the distinct days/weeks as bit counts when ``bounds``."""
    if (
        bounds is not None
        and name.startswith("c")
        and rule.frequency in (Rule.Frequency.ONCE_PER_DAY, Rule.Frequency.ONCE_PER_WEEK)
    ):
        return _bucket_count(rule, q, bounds)
    return engine._column(name, rule, q)
