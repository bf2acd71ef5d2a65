"""PostgreSQL fast path of the back-test's per-contact window aggregate.

The portable aggregate (:func:`scoring.backtest.qualified_counts`) counts a rule's days
and weeks with ``COUNT(DISTINCT day)``: PostgreSQL runs such an aggregate in one process
only, sorted by contact, with a sort per contact and distinct aggregate. Here the same
values come from an aggregate that runs in parallel workers: a rule's distinct days
(weeks) are the set bits of ``BIT_OR`` over its matching activities of a bit string with
one bit per day (week) of the window, counted with ``bit_count``. ``BIT_OR``, ``COUNT``
and ``MAX`` combine partial states, so each worker aggregates its share of the window's
activities by contact and the leader merges them (no sort, no ``DISTINCT``).

A day's (week's) bit is its ``TruncDate`` (``TruncWeek``) — the portable path's buckets —
minus the window's first day (week), plus a margin, so that no time-zone shift can give
a negative position; the string covers the window's span plus the margins on both sides.
tests/scoring/test_backtest_sql.py checks this path against the portable one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Q
from django.db.models.functions import TruncDate, TruncWeek
from django.utils import timezone

from crm.models import Activity
from crm.models.activities import engagement_q

from .models import Rule
from .rules import activity_q

DAY_MARGIN = 2  # positions before the window's first day (week) a time zone could give
WEEK_MARGIN = 1
PARALLEL_TUPLE_COST = "0.001"
WORK_MEM = "128MB"

Sql = tuple[str, list]


def supported() -> bool:
    """PostgreSQL 14+ (``bit_count``)."""
    return connection.vendor == "postgresql" and connection.pg_version >= 140000


def planner_settings(cursor) -> None:
    """Settings for the back-test's statement, local to its transaction (one query).

    * ``parallel_tuple_cost``: the contacts' fit conditions (``c``) cost ~10 µs per
      contact — ``UPPER()`` of a text in a multi-byte locale is ~0.6 µs and a fit rule
      set makes ~20 of them — which the planner prices as a few operators, so it would
      evaluate them for every contact in one process rather than in parallel workers
      (at 1M contacts: 10.5 s serial, 4.2 s in three processes).
    * ``work_mem``: each worker's partial aggregate holds a state per contact it saw
      (~450 bytes with the rules' bit strings: ~180 MB per process at 1M contacts);
      with the default it spills to disk in batches.
    """
    cursor.execute(
        "SELECT set_config('parallel_tuple_cost', %s, true), set_config('work_mem', %s, true)",
        [PARALLEL_TUPLE_COST, WORK_MEM],
    )


def window_aggregate(
    *,
    engagement: dict[str, list[Rule]],
    inactive: dict[str, list[Rule]],
    since: datetime,
    now: datetime,
    kinds: list[str] | None,
) -> Sql:
    """SQL and params of one row per contact with an activity in ``[since, now)`` (of
    ``kinds`` when given, else of any kind), with the columns the portable aggregate
    gives: ``engaged`` (latest engagement, when there are inactivity rules) and, per side
    ``s``, ``idle_<s>`` (the inactivity points that latest engagement implies) and
    ``eng_<s>`` (the sum of the side's engagement rule values, as
    ``engine.rule_value_expression`` computes them)."""
    qn = connection.ops.quote_name
    query = Activity.objects.none().query
    compiler = query.get_compiler(connection=connection)
    first_day = since.astimezone(timezone.get_current_timezone()).date()
    first_week = first_day - timedelta(days=first_day.weekday())
    span = (now - since).days + 2  # the window touches at most this many local days
    days_bits = span + 2 * DAY_MARGIN
    weeks_bits = span // 7 + 2 + 2 * WEEK_MARGIN
    day_sql, day_params = compiler.compile(TruncDate("occurred_at").resolve_expression(query))
    week_sql, week_params = compiler.compile(TruncWeek("occurred_at").resolve_expression(query))
    position: dict[str, tuple[int, Sql]] = {
        "d": (days_bits, (f"({day_sql} - %s::date + {DAY_MARGIN})", [*day_params, first_day])),
        "w": (
            weeks_bits,
            (f"(({week_sql})::date - %s::date) / 7 + {WEEK_MARGIN}", [*week_params, first_week]),
        ),
    }
    table = qn(Activity._meta.db_table)
    occurred = f"{table}.{qn('occurred_at')}"
    aggregates: dict[tuple, tuple[str, Sql]] = {}  # SQL + params → (alias, SQL and params)

    def agg(sql: str, params: list) -> str:
        """A column of the per-contact aggregate, each distinct aggregate computed once."""
        key = (sql, tuple(map(repr, params)))
        if key not in aggregates:
            aggregates[key] = (f"g{len(aggregates)}", (sql, params))
        return "g." + qn(aggregates[key][0])

    def where(q: Q) -> Sql:
        sql, params = compiler.compile(query.build_where(q))
        return sql, list(params)

    def halvings(half_life: timedelta) -> tuple[int, Sql]:
        """``k`` such that ``now − (k+1)·half-life < occurred_at ≤ now − k·half-life``
        (exact time comparisons), ``most + 1`` beyond the last halving that leaves
        anything; and ``most``."""
        most = min(int((now - since) / half_life), 62)
        whens = " ".join(f"WHEN {occurred} > %s THEN {k}" for k in range(most + 1))
        params = [now - (k + 1) * half_life for k in range(most + 1)]
        return most, (f"CASE {whens} ELSE {most + 1} END", params)

    def value(rule: Rule) -> Sql:
        """SQL mirror of ``engine.rule_value_expression`` (caps, once ever, half-life).

        A rule counting days (weeks) with a half-life reads one bit string: its buckets,
        then a bit per number of halvings since each matching activity (the first set
        one is the latest activity's). So each activity is tested against the rule's
        condition once; other rules with a half-life add the latest match (``MAX``).
        """
        cond_sql, cond_params = where(activity_q(rule, now=now))
        unit = {Rule.Frequency.ONCE_PER_DAY: "d", Rule.Frequency.ONCE_PER_WEEK: "w"}.get(
            rule.frequency
        )
        half_life = timedelta(days=rule.half_life_days or 0)
        halving = None  # SQL of the 1-based number of halvings + 1 of the latest match
        if unit is None:
            n = agg(f"COUNT(*) FILTER (WHERE {cond_sql})", cond_params)
        else:
            bits, (pos_sql, pos_params) = position[unit]
            if not rule.half_life_days:
                mask = agg(
                    f"BIT_OR(B'1'::bit({bits}) >> ({pos_sql})) FILTER (WHERE {cond_sql})",
                    [*pos_params, *cond_params],
                )
                n = f"COALESCE(bit_count({mask}), 0)"
            else:
                most, (k_sql, k_params) = halvings(half_life)
                width = bits + most + 2
                mask = agg(
                    f"BIT_OR((B'1'::bit({width}) >> ({pos_sql})) | "
                    f"(B'1'::bit({width}) >> ({bits} + {k_sql}))) FILTER (WHERE {cond_sql})",
                    [*pos_params, *k_params, *cond_params],
                )
                n = f"COALESCE(bit_count(substring({mask} FROM 1 FOR {bits})), 0)"
                halving = f"position(B'1' IN substring({mask} FROM {bits + 1}))"
        cap = 1 if rule.frequency == Rule.Frequency.ONCE_EVER else None
        if rule.cap:
            cap = min(cap, rule.cap) if cap else rule.cap
        if cap:
            n = f"LEAST({n}, {int(cap)})"
        points = f"({int(rule.points)} * {n})"
        if not rule.half_life_days:
            return points, []
        if halving is not None:
            most = min(int((now - since) / half_life), 62)
            whens = " ".join(f"WHEN {k + 1} THEN {points} / {2**k}" for k in range(most + 1))
            return f"CASE {halving} {whens} ELSE 0 END", []
        last = agg(f"MAX({occurred}) FILTER (WHERE {cond_sql})", cond_params)
        most = min(int((now - since) / half_life), 62)
        whens = " ".join(f"WHEN {last} > %s THEN {points} / {2**k}" for k in range(most + 1))
        return f"CASE {whens} ELSE 0 END", [now - (k + 1) * half_life for k in range(most + 1)]

    cols: dict[str, Sql] = {}
    if any(inactive.values()):
        cond_sql, cond_params = where(engagement_q())
        cols["engaged"] = (agg(f"MAX({occurred}) FILTER (WHERE {cond_sql})", cond_params), [])
    for s in engagement.keys() | inactive.keys():
        if inactive.get(s):
            cols[f"idle_{s}"] = _sum(
                [
                    (
                        f"CASE WHEN {cols['engaged'][0]} < %s THEN {int(r.points)} ELSE 0 END",
                        [now - timedelta(days=r.inactive_days or 0)],
                    )
                    for r in inactive[s]
                ]
            )
        if engagement.get(s):
            cols[f"eng_{s}"] = _sum([value(r) for r in engagement[s]])

    scope = Q(occurred_at__gte=since, occurred_at__lt=now)
    if kinds is not None:
        scope &= Q(kind__in=kinds)
    scope_sql, scope_params = where(scope)
    contact = f"{table}.{qn('contact_id')}"
    # g: the aggregates, one row per contact (a grouped subquery is planned on its own,
    # so each aggregate is computed once however often the values above read it).
    inner = "".join(f", {sql} AS {qn(alias)}" for alias, (sql, _) in aggregates.values())
    outer = "".join(f", {sql} AS {qn(name)}" for name, (sql, _) in cols.items())
    sql = (
        f"SELECT g.{qn('contact_id')}{outer} FROM ("  # noqa: S608
        f"SELECT {contact} AS {qn('contact_id')}{inner} "
        f"FROM {table} WHERE {scope_sql} GROUP BY {contact}) g"
    )
    params = [
        *(p for _, ps in cols.values() for p in ps),
        *(p for _, (_, ps) in aggregates.values() for p in ps),
        *scope_params,
    ]
    return sql, params


def _sum(terms: list[Sql]) -> Sql:
    return "(" + " + ".join(t for t, _ in terms) + ")", [p for _, ps in terms for p in ps]
