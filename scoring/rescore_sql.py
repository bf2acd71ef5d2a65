"""PostgreSQL fast path of the full rescore: one chunk of contacts in one statement.

The portable path (:func:`scoring.engine.reconcile`) reads every contact's expected points
per rule and the ledger's sums per (contact, rule) into Python, diffs them there, and
sends the adjustments and the new scores back as arrays. Per 100k contacts that moved
~1M values each way and cost seconds of worker CPU for arithmetic PostgreSQL does in a
hash join. Here the same function is one statement per chunk: the expected points
(built from the same ORM conditions: ``fit_q``, ``activity_q``, ``engine._column``), the
ledger sums, their difference appended with ``INSERT … SELECT`` (reason ``rescore``,
dated at the rescore), and the cached scores set where they change — only what the MQL
hand-off needs comes back. tests/scoring/test_rescore_sql.py checks it appends the same
entries and leaves the same scores as the portable path on random rules and activities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Case, IntegerField, Q, Value, When

from crm.models import Activity, Contact
from crm.models.choices import ENGAGEMENT_KINDS

from . import engine
from .models import LedgerEntry, Rule
from .rules import activity_q, fit_q
from .writes import Entry

R = LedgerEntry.Reason

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
    rules not enabled), set ``Contact.score`` to the ledger sum where it differs.

    Must run in the transaction that locked the chunk, as a statement after the lock: its
    snapshot then holds every committed activity and entry of these contacts, and no
    ingestion batch touching them can commit before this transaction does (it locks its
    contacts first), so nothing is counted twice or missed.
    ``threshold`` (None: no hand-off) selects the contacts whose entries come back.
    """
    sql, params = _statement(lo, hi, rules, now, threshold)
    outcome = ChunkOutcome()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for tag, contact_id, rule_id, points, score in cursor.fetchall():
            if tag == 0:  # the totals row
                outcome.contacts = contact_id or 0
                outcome.contacts_changed = rule_id or 0
                outcome.entries_created = points or 0
                continue
            outcome.handoff_entries.append(
                Entry(contact_id, rule_id, None, points, now, R.RESCORE.value)
            )
            outcome.handoff_scores[contact_id] = score
    return outcome


def _statement(lo, hi, rules, now, threshold) -> tuple[str, list]:
    rule_set = engine.RuleSet(list(rules))
    flags = rule_set.flag_rules
    counted = rule_set.count_rules
    inactive = [r for r in counted if r.kind == Rule.Kind.NEGATIVE]
    engagement = [r for r in counted if r.kind != Rule.Kind.NEGATIVE]

    # Per contact of the chunk: creation time and each flag rule's points if it holds.
    fit_cols = {
        f"f{r.pk}": Case(
            When(fit_q(r), then=Value(r.points)), default=Value(0), output_field=IntegerField()
        )
        for r in flags
    }
    contacts = (
        Contact.objects.filter(pk__gte=lo, pk__lt=hi)
        .order_by()
        .annotate(**fit_cols)
        .values_list("pk", "created_at", *fit_cols)
    )
    contact_sql, contact_params = contacts.query.sql_with_params()

    # Per contact with activity: each engagement rule's counted buckets (and latest match
    # for a half-life), and the latest engagement for the inactivity rules — the same
    # aggregate as engine.expected_values. Every rule condition requires a human
    # activity, so machine activities are left out before grouping.
    columns = []
    for r in engagement:
        q = activity_q(r, now=now)
        columns.append((f"c{r.pk}", r, q))
        if r.half_life_days:
            columns.append((f"l{r.pk}", r, q))
    if inactive:
        columns.append(("last_engaged", None, Q(kind__in=list(ENGAGEMENT_KINDS))))
    kinds = {r.activity_kind for r in engagement} | (set(ENGAGEMENT_KINDS) if inactive else set())
    if columns:
        activities = (
            Activity.objects.filter(
                contact_id__gte=lo, contact_id__lt=hi, kind__in=sorted(kinds), is_machine=False
            )
            .order_by()
            .values("contact_id")
            .annotate(**{n: engine._column(n, r, q) for n, r, q in columns})
            .values_list("contact_id", *(n for n, _, _ in columns))
        )
        activity_sql, activity_params = activities.query.sql_with_params()
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
            # engine.rule_value: int(value / 2**h), h = int((now - last) / half-life),
            # 0 from 64 halvings on. Exact: the epoch difference is numeric, and value /
            # 2**h truncates toward zero like integer division.
            h = (
                f'trunc(extract(epoch from (%s::timestamptz - a."l{r.pk}")) '
                f"/ {int(r.half_life_days) * 86400})::int"
            )
            params.extend([now] * 4)
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

    sql = (
        f"WITH fit(id, created_at{''.join(', ' + n for n in fit_cols)}) AS MATERIALIZED "  # noqa: S608
        f"({contact_sql}), "
        f"agg AS MATERIALIZED ({activity_sql}), "
        f"expected AS ({expected}), "
        # What the ledger holds per (contact, rule); recycle resets belong to no rule's
        # expectation (engine module docstring) but count in the score.
        "owned AS (SELECT contact_id, rule_id, "
        f"COALESCE(SUM(points) FILTER (WHERE reason <> '{R.RECYCLE_RESET.value}'), 0) AS s, "
        "SUM(points) AS t FROM scoring_ledgerentry WHERE contact_id >= %s AND contact_id < %s "
        "GROUP BY contact_id, rule_id), "
        "ins AS (INSERT INTO scoring_ledgerentry "
        "(contact_id, rule_id, activity_id, points, at, reason) "
        "SELECT COALESCE(e.contact_id, o.contact_id), COALESCE(e.rule_id, o.rule_id), NULL, "
        f"COALESCE(e.value, 0) - COALESCE(o.s, 0), %s, '{R.RESCORE.value}' "
        "FROM expected e FULL JOIN owned o ON o.contact_id = e.contact_id "
        "AND o.rule_id = e.rule_id WHERE COALESCE(e.value, 0) <> COALESCE(o.s, 0) "
        "RETURNING contact_id, rule_id, points), "
        "added AS (SELECT contact_id, SUM(points) AS d, COUNT(*) AS n, "
        "bool_or(points > 0) AS gained FROM ins GROUP BY contact_id), "
        "score AS (SELECT f.id, (COALESCE(ot.t, 0) + COALESCE(d.d, 0))::int AS score, "
        "COALESCE(d.n, 0) AS n, COALESCE(d.gained, false) AS gained FROM fit f "
        "LEFT JOIN (SELECT contact_id, SUM(t) AS t FROM owned GROUP BY contact_id) ot "
        "ON ot.contact_id = f.id LEFT JOIN added d ON d.contact_id = f.id), "
        # Only rows whose score changes are written: each is a non-HOT update (score is
        # indexed for the score-sorted lists). The id range keeps the join to the chunk's
        # rows (without it the plan hashed the whole contact table for every chunk).
        "upd AS (UPDATE crm_contact c SET score = s.score FROM score s "
        "WHERE c.id = s.id AND c.id >= %s AND c.id < %s AND c.score <> s.score "
        "RETURNING c.id) "
        "SELECT 0, (SELECT count(*) FROM score), (SELECT count(*) FROM score WHERE n > 0), "
        "(SELECT COALESCE(SUM(n), 0) FROM score)::int, (SELECT count(*) FROM upd)::int "
    )
    tail_params: list = [lo, hi, now, lo, hi]
    if threshold is not None:
        sql += (
            "UNION ALL SELECT 1, i.contact_id, i.rule_id, i.points, s.score FROM ins i "
            "JOIN score s ON s.id = i.contact_id WHERE s.gained AND s.score >= %s"
        )
        tail_params.append(threshold)
    return sql, [*contact_params, *activity_params, *params, *tail_params]
