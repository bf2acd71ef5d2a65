"""PostgreSQL full rescore as one pass over the activities, applied chunk by chunk.

Per-chunk reads (scoring.rescore_sql.chunk_rescore) find a chunk's activities through the
(contact, time) index: ~1M index probes and heap fetches per 50k contacts at 1M contacts,
2–3× the cost per row of one parallel sequential scan of the table. Here the rescore reads
everything once, before taking any contact lock:

1. :func:`pass_build` — one ``CREATE TEMP TABLE … AS`` statement (PostgreSQL runs its
   query in parallel workers, as it does a plain SELECT) computes, for EVERY contact, the
   diff the chunk statement would compute, from the same SQL pieces
   (``rescore_sql.diff_parts``): expected points per rule from a whole-table aggregate of
   the activities and the fit conditions, minus the ledger's sums. It keeps per contact
   the adjustments, the ledger total and what the pass saw of the contact: its row
   versions (``xmin`` of its contact row and of its company row) and its number of
   ledger entries; and, for all contacts, an activity watermark
   (:func:`activity_watermark`): every activity with an id up to it was committed (or
   rolled back) before the pass read.
2. :func:`chunk_apply`, per chunk under the chunk's contact locks (``chunk_lock``, as
   before, so ingestion goes on meanwhile and waits for one chunk at most): one read
   compares what the pass saw with what is committed now; the contacts that are
   unchanged get the pass's adjustments, the others ("dirty") are rescored exactly as
   before, by the chunk statement restricted to their ids (or to the whole chunk when
   many are dirty).

Why a clean contact's pass diff is the diff the chunk statement would compute now, under
the lock (so that nothing that arrived between the pass and the lock is lost or counted
twice). The diff of a contact is a function of its contact row, its company row, its
activities, its ledger entries, the rules and ``now`` (the last two fixed for the run):

* contact and company rows: any committed UPDATE writes a new row version, with another
  ``xmin``; same ``xmin`` ⇒ the version the pass read. (A company change still in flight
  is invisible to the chunk statement too; its "contacts changed" handler rescores fit.)
* activities: an activity the pass did not see has an id above the watermark, and the
  check looks them up (a range of the primary key: none unless ingestion went on). Rows
  change otherwise only by a contact merge (which re-points the duplicate's activities
  and ledger entries to the kept contact and rewrites the kept contact's row) and an
  erasure (which scrubs activities' details and URLs and rewrites the contact's row),
  both caught by ``xmin``; a deleted contact is not locked and gets nothing.
* ledger entries: only ever appended (merges aside, see above), so the same number of
  entries ⇒ the same entries.
* rows written after the pass by a transaction not yet committed when the check reads
  are invisible to the chunk statement as well, and their writer (ingestion and the
  scoring handler lock their contacts first) scores them after this chunk commits,
  against the adjusted ledger — exactly as with the chunk statement.
* the cached score is read at the check, and set where it differs from the new score
  (the ledger being unchanged, ledger total + adjustments is still the ledger sum).

A contact created after the pass has no pass row and is dirty. Anything the argument
does not cover makes a contact dirty, never wrong: dirty contacts take the exact path.
tests/scoring/test_rescore_pass.py records activities (through ingestion and without the
handler), entries, profile and company changes, a merge and an erasure between the pass
and the chunks' writes and checks the outcome equals the exact path's after the same
changes; tests/scoring/test_rescore_sql.py checks the pass path against the portable one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from . import rescore_sql
from .models import LedgerEntry, Rule
from .rescore_sql import ChunkOutcome, Scope
from .writes import int_array

TABLE = "scoring_rescore_pass"  # a temporary table: one per database session
# Share of a chunk's contacts above which the dirty ones are rescored by the range
# statement (one read of the chunk) rather than by id (index probes per contact).
DIRTY_SHARE = 0.2
RESET = LedgerEntry.Reason.RECYCLE_RESET.value
# How long the pass waits for the transactions writing activities when it starts (one
# ingestion batch each); past it, the rescore reads chunk by chunk instead.
WAIT_SECONDS = 60.0


def activity_watermark(*, timeout: float = WAIT_SECONDS) -> int | None:
    """The last activity id handed out, once every activity with an id up to it is
    committed or rolled back; None if that is not reached within ``timeout`` seconds.

    A transaction inserting activities holds ROW EXCLUSIVE on the table from before it
    draws its ids until it ends. So the transactions that drew an id up to the sequence's
    last value as read here are among those holding that lock right after (this session
    excepted: its own rows are visible to it): wait until they have all ended. A snapshot
    taken after that holds every activity with an id up to the watermark that will ever
    be committed; any activity it misses has a greater id.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(pg_sequence_last_value("
            "pg_get_serial_sequence('crm_activity', 'id')::regclass), 0)"
        )
        (mark,) = cursor.fetchone()
        cursor.execute(_HOLDERS_SQL)
        holders, prepared = cursor.fetchone()
        if prepared:  # a prepared transaction ends when someone commits it: don't wait
            return None
        deadline = time.monotonic() + timeout
        while holders:
            cursor.execute(_RUNNING_SQL, [holders])
            holders = cursor.fetchone()[0]
            if holders and time.monotonic() > deadline:
                return None
            if holders:
                time.sleep(0.05)
    return mark


_HOLDERS_SQL = (
    "SELECT array_agg(DISTINCT virtualtransaction) FILTER (WHERE pid IS NOT NULL), "
    "bool_or(pid IS NULL) FROM pg_locks WHERE locktype = 'relation' "
    "AND relation = 'crm_activity'::regclass AND mode = 'RowExclusiveLock' AND granted "
    "AND pid IS DISTINCT FROM pg_backend_pid()"
)
# A transaction holds the lock on its own virtual transaction id until it ends.
_RUNNING_SQL = (
    "SELECT array_agg(virtualxid) FROM pg_locks WHERE locktype = 'virtualxid' "
    "AND virtualxid = ANY(%s::text[])"
)


def pass_build(*, rules: list[Rule], now: datetime) -> Pass | None:
    """Compute every contact's adjustments into the session's temporary table (module
    docstring); None (nothing built) when :func:`activity_watermark` gives up.

    One statement; its query runs the parts that read tables in parallel workers (the
    activities' aggregate is a parallel sequential scan and hash aggregate, like the bare
    ``GROUP BY`` over the table; the fit conditions and the ledger's sums likewise). Per
    contact it keeps:

    * ``d``: the adjustment per rule of ``Pass.rule_ids`` (expected − owned: the chunk
      statement's ``diff``, as one row per contact rather than a row per (contact, rule),
      so without the sort and join of ~25 rows per contact), NULL when all are 0;
    * ``xr``/``xp``: the rules not enabled (or deleted: NULL) whose points the contact
      still holds, and minus those points (their adjustments);
    * ``t``: the ledger total; ``cx``, ``kx``, ``nl``: what the check compares.

    The table is ordered by contact id and indexed on it: a chunk reads a range.
    """
    mark = activity_watermark()
    if mark is None:
        return None
    bounds = rescore_sql._day_bounds(rules, now)
    parts = rescore_sql.diff_parts(Scope(), rules, now, bounds)
    rule_ids = [int(pk) for pk, _ in parts.values]
    owned = "".join(
        f", SUM(points) FILTER (WHERE rule_id = {pk} AND reason <> '{RESET}') AS o{pk}"
        for pk in rule_ids
    )
    diffs = ", ".join(f"({expr}) - COALESCE(o.o{pk}, 0)" for pk, expr in parts.values)
    sql = (
        f"CREATE TEMPORARY TABLE {TABLE} AS "  # noqa: S608
        f"WITH fit({', '.join(parts.fit_names)}) AS MATERIALIZED ({parts.fit[0]}), "
        f"agg AS MATERIALIZED ({parts.agg[0]}), "
        f"ow AS MATERIALIZED (SELECT contact_id, SUM(points) AS t, COUNT(*) AS n{owned} "
        "FROM scoring_ledgerentry GROUP BY contact_id), "
        "other AS (SELECT contact_id, array_agg(rule_id ORDER BY rule_id) AS xr, "
        "array_agg(-s ORDER BY rule_id) AS xp FROM ("
        f"SELECT contact_id, rule_id, SUM(points) FILTER (WHERE reason <> '{RESET}') AS s "
        "FROM scoring_ledgerentry WHERE rule_id IS NULL OR rule_id <> ALL(%s::bigint[]) "
        "GROUP BY contact_id, rule_id) x WHERE s <> 0 GROUP BY contact_id) "
        "SELECT f.id, f.cx, f.kx, COALESCE(o.n, 0) AS nl, COALESCE(o.t, 0)::int AS t, "
        f"NULLIF(ARRAY[{diffs}]::int[], array_fill(0, ARRAY[{len(rule_ids)}])) AS d, "
        "x.xr, x.xp FROM fit f LEFT JOIN agg a ON a.contact_id = f.id "
        "LEFT JOIN ow o ON o.contact_id = f.id LEFT JOIN other x ON x.contact_id = f.id "
        "ORDER BY f.id"
    )
    params = [*parts.fit[1], *parts.agg[1], int_array(rule_ids), *parts.value_params]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(_PASS_PLANNER_SQL, _PASS_PLANNER_SETTINGS)
        cursor.execute(sql, params)
        cursor.execute(f"CREATE INDEX ON {TABLE} (id)")
        cursor.execute(f"ANALYZE {TABLE}")
    return Pass(rule_ids=rule_ids, mark=mark)


@dataclass(frozen=True)
class Pass:
    rule_ids: list[int]  # the rules of the ``d`` arrays, in order
    mark: int  # activity watermark: later activities make their contact dirty


def pass_drop() -> None:
    """Drop the pass's table (left to the enclosing transaction's rollback when that
    transaction has failed: the table was created in it)."""
    if connection.needs_rollback:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


# Planner settings of the pass, local to its transaction: those of the chunk's read
# (parallel workers for the costly per-row conditions, rescore_sql._PLANNER_SQL), with
# more memory for the aggregate, which holds a state per contact of the whole table
# (the rules' day/week bit strings) in each process; and hash joins, which the planner
# (estimating ~100k groups for ~1M contacts) would replace by sorts of every input.
_PASS_PLANNER_SQL = (
    "SELECT set_config('parallel_tuple_cost', %s, true), set_config('work_mem', %s, true), "
    "set_config('enable_mergejoin', 'off', true)"
)
_PASS_PLANNER_SETTINGS = ["0.001", "256MB"]


# The check of a locked chunk against the pass. Rows: (0, contacts of the chunk), (3,
# contact) per dirty contact, and for the clean ones: (1, contact, rule, points) per
# adjustment; (4, contact, cached score, ledger total) per contact with adjustments
# (its new score is the total plus its adjustments); (2, contact, 1, total) per contact
# without any whose cached score differs from its ledger total. The ledger's counts
# are an index-only scan of its (contact, time) index; the activities after the mark a
# range of the primary key (none unless ingestion went on meanwhile).
_CHECK_SQL = (
    "WITH cur AS MATERIALIZED (SELECT c.id, c.xmin::text AS cx, k.xmin::text AS kx, "  # noqa: S608
    "s.score AS cached FROM crm_contact c LEFT JOIN crm_company k ON k.id = c.company_id "
    "LEFT JOIN crm_contactscore s ON s.contact_id = c.id "
    "WHERE c.id >= %s AND c.id < %s), "
    "nl AS (SELECT contact_id, COUNT(*) AS n FROM scoring_ledgerentry "
    "WHERE contact_id >= %s AND contact_id < %s GROUP BY contact_id), "
    "na AS (SELECT DISTINCT contact_id FROM crm_activity "
    "WHERE id > %s AND contact_id >= %s AND contact_id < %s), "
    f"p AS MATERIALIZED (SELECT * FROM {TABLE} WHERE id >= %s AND id < %s), "
    "chk AS MATERIALIZED (SELECT cur.id, cur.cached, p.t, p.d, p.xr, p.xp, "
    "(p.id IS NULL OR p.cx IS DISTINCT FROM cur.cx OR p.kx IS DISTINCT FROM cur.kx "
    "OR p.nl <> COALESCE(nl.n, 0) OR na.contact_id IS NOT NULL) AS dirty "
    "FROM cur LEFT JOIN p ON p.id = cur.id "
    "LEFT JOIN nl ON nl.contact_id = cur.id LEFT JOIN na ON na.contact_id = cur.id) "
    "SELECT 0, (SELECT count(*) FROM chk), NULL::bigint, NULL::int "
    "UNION ALL SELECT 3, id, NULL, NULL FROM chk WHERE dirty "
    "UNION ALL SELECT 1, chk.id, u.r, u.p FROM chk, unnest(%s::bigint[], chk.d) AS u(r, p) "
    "WHERE NOT dirty AND d IS NOT NULL AND u.p <> 0 "
    "UNION ALL SELECT 1, id, unnest(xr), unnest(xp) FROM chk "
    "WHERE NOT dirty AND xr IS NOT NULL "
    "UNION ALL SELECT 4, id, cached, t FROM chk "
    "WHERE NOT dirty AND (d IS NOT NULL OR xr IS NOT NULL) "
    "UNION ALL SELECT 2, id, 1, t FROM chk "
    "WHERE NOT dirty AND d IS NULL AND xr IS NULL AND t <> cached"
)


def chunk_apply(
    *, lo: int, hi: int, rules: list[Rule], built: Pass, now: datetime, threshold: int | None
) -> ChunkOutcome:
    """Rescore the (already locked) contacts with ids in ``[lo, hi)`` from the pass
    ``built``: what ``rescore_sql.chunk_rescore`` does, with the clean contacts' diff
    read from the pass (module docstring) and the dirty ones' computed now."""
    with connection.cursor() as cursor:
        params = [lo, hi, lo, hi, built.mark, lo, hi, lo, hi, int_array(built.rule_ids)]
        cursor.execute(_CHECK_SQL, params)
        rows = cursor.fetchall()
    contacts = next((row[1] for row in rows if row[0] == 0), 0) or 0
    dirty = [row[1] for row in rows if row[0] == 3]
    if len(dirty) > DIRTY_SHARE * contacts:
        return rescore_sql.chunk_rescore(lo=lo, hi=hi, rules=rules, now=now, threshold=threshold)
    added: dict[int, int] = defaultdict(int)
    for kind, contact, _, points in rows:
        if kind == 1:
            added[contact] += points
    for i, (kind, contact, cached, total) in enumerate(rows):
        if kind == 4:
            score = total + added[contact]
            rows[i] = (2, contact, int(score != cached), score)
    if dirty:
        bounds = rescore_sql._day_bounds(rules, now)
        sql, params = rescore_sql._statement(Scope(ids=tuple(dirty)), rules, now, bounds)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows += cursor.fetchall()
    outcome = rescore_sql.rows_apply(rows, now=now, threshold=threshold)
    outcome.contacts = contacts
    return outcome
