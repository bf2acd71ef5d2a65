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
   before, so ingestion goes on meanwhile and waits for one chunk at most): one
   statement compares what the pass saw with what is committed now and writes the
   pass's adjustments and new scores of the contacts that are unchanged (only the
   hand-off candidates come back); the others ("dirty") are rescored exactly as
   before, by the chunk statement restricted to their ids (or to the whole chunk when
   many are dirty: the statement then writes nothing).

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

A contact created after the pass has no pass row and is dirty, and so is a contact
holding recycle resets: its targets depend on each rule's resets
(``engine.rule_target``), which the pass does not sum per rule — they are rare, and a
column per rule over the whole ledger would cost every rescore. Anything the argument
does not cover makes a contact dirty, never wrong: dirty contacts take the exact path.
tests/scoring/test_rescore_pass.py records activities (through ingestion and without the
handler), entries, profile and company changes, a merge and an erasure between the pass
and the chunks' writes and checks the outcome equals the exact path's after the same
changes; tests/scoring/test_rescore_sql.py checks the pass path against the portable one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from . import rescore_sql
from .models import LedgerEntry, Rule
from .rescore_sql import ChunkOutcome, Scope
from .writes import Entry, int_array

TABLE = "scoring_rescore_pass"  # a temporary table: one per database session
# Share of a chunk's contacts above which the dirty ones are rescored by the range
# statement (one read of the chunk) rather than by id (index probes per contact).
DIRTY_SHARE = 0.2
RESET = LedgerEntry.Reason.RECYCLE_RESET.value
RESCORE = LedgerEntry.Reason.RESCORE.value
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


def pass_build(
    *,
    rules: list[Rule],
    now: datetime,
    lo: int | None = None,
    hi: int | None = None,
    parallel: bool = True,
) -> Pass | None:
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
    * ``t``: the ledger total; ``cx``, ``kx``, ``nl``: what the check compares;
    * ``hr``: whether the contact holds recycle resets (it is then dirty, module
      docstring).

    The table is ordered by contact id and indexed on it: a chunk reads a range.
    ``lo``/``hi``: only the contacts with ids in ``[lo, hi)`` (a slice of a rescore run
    by several connections, each its own pass: the table is the session's);
    ``parallel=False`` keeps the statement in this one process (the other slices' use the
    other cores).
    """
    mark = activity_watermark()
    if mark is None:
        return None
    sql, params, rule_ids = pass_query(rules=rules, now=now, lo=lo, hi=hi)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(_PASS_PLANNER_SQL, _PASS_PLANNER_SETTINGS)
        if not parallel:
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(f"CREATE TEMPORARY TABLE {TABLE} AS {sql}", params)  # noqa: S608
        cursor.execute(f"CREATE INDEX ON {TABLE} (id)")
        cursor.execute(f"ANALYZE {TABLE}")
    return Pass(rule_ids=rule_ids, mark=mark)


def pass_query(
    *, rules: list[Rule], now: datetime, lo: int | None = None, hi: int | None = None
) -> tuple[str, list, list[int]]:
    """The pass's query (:func:`pass_build`), its parameters and the rules of its ``d``
    arrays, in order."""
    bounds = rescore_sql._day_bounds(rules, now)
    scope = Scope(lo=lo, hi=hi, markers=True)
    parts = rescore_sql.diff_parts(scope, rules, now, bounds)
    ledger_where, ledger_params = scope.ledger_sql()
    other_where = f"{ledger_where} AND" if ledger_where else "WHERE"
    rule_ids = [int(pk) for pk, _ in parts.values]
    owned = "".join(
        f", SUM(points) FILTER (WHERE rule_id = {pk} AND reason <> '{RESET}') AS o{pk}"
        for pk in rule_ids
    )
    diffs = [f"({expr}) - COALESCE(o.o{pk}, 0)" for pk, expr in parts.values]
    # The sum of a contact's adjustments (its new score is the ledger total plus it), and
    # whether any of them is a gain (only those contacts can be handed off).
    cells = [f"d[{i}]" for i in range(1, len(diffs) + 1)]
    total = " + ".join(cells) or "0"
    gain = f"GREATEST({', '.join(cells)}) > 0" if cells else "false"
    sql = (
        f"WITH fit({', '.join(parts.fit_names)}) AS MATERIALIZED ({parts.fit[0]}), "  # noqa: S608
        f"agg AS MATERIALIZED ({parts.agg[0]}), "
        f"ow AS MATERIALIZED (SELECT contact_id, SUM(points) AS t, COUNT(*) AS n{owned}, "
        f"bool_or(reason = '{RESET}') AS hr FROM scoring_ledgerentry {ledger_where} "
        "GROUP BY contact_id), "
        "other AS (SELECT contact_id, array_agg(rule_id ORDER BY rule_id) AS xr, "
        "array_agg(-s ORDER BY rule_id) AS xp, -SUM(s)::int AS xs, bool_or(s < 0) AS xg FROM ("
        f"SELECT contact_id, rule_id, SUM(points) FILTER (WHERE reason <> '{RESET}') AS s "
        f"FROM scoring_ledgerentry {other_where} (rule_id IS NULL OR rule_id <> ALL(%s::bigint[])) "
        "GROUP BY contact_id, rule_id) x WHERE s <> 0 GROUP BY contact_id) "
        f"SELECT id, cx, kx, nl, t, NULLIF(d, array_fill(0, ARRAY[{len(rule_ids)}])) AS d, "
        f"({total}) + COALESCE(xs, 0) AS s, ({gain} OR COALESCE(xg, false)) AS g, xr, xp, hr "
        "FROM ("
        "SELECT f.id, f.cx, f.kx, COALESCE(o.n, 0) AS nl, COALESCE(o.t, 0)::int AS t, "
        "COALESCE(o.hr, false) AS hr, "
        f"ARRAY[{', '.join(diffs)}]::int[] AS d, "
        "x.xr, x.xp, x.xs, x.xg FROM fit f LEFT JOIN agg a ON a.contact_id = f.id "
        "LEFT JOIN ow o ON o.contact_id = f.id LEFT JOIN other x ON x.contact_id = f.id "
        # OFFSET 0: q is not pulled up, or every d[i] would rebuild the whole array.
        "OFFSET 0) q ORDER BY id"
    )
    params = [
        *parts.fit[1],
        *parts.agg[1],
        *ledger_params,
        *ledger_params,
        int_array(rule_ids),
        *parts.value_params,
    ]
    return sql, params, rule_ids


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
# more memory for the aggregates, which hold a state per contact of the whole table in
# each process (the rules' day/week bit strings; the ledger's sums per rule) — at 1M
# contacts ~0.5 GB each, over the 2 × 256 MB a hash may take at 256 MB, so they spilled
# to disk in batches; and hash joins, which the planner (estimating ~100k groups for
# ~1M contacts) would replace by sorts of every input.
_PASS_PLANNER_SQL = (
    "SELECT set_config('parallel_tuple_cost', %s, true), set_config('work_mem', %s, true), "
    "set_config('enable_mergejoin', 'off', true)"
)
_PASS_PLANNER_SETTINGS = ["0.001", "1GB"]


# The check of a locked chunk against the pass, and the writes of its clean contacts, in
# one statement (no row of theirs travels to the worker and back). ``chk``: per contact
# of the chunk, what the pass computed and whether it is dirty (changed since the pass).
# Unless more than ``DIRTY_SHARE`` of them are dirty (the whole chunk is then rescored
# by range, and nothing here writes), the clean contacts' adjustments are appended
# (``ins``) and their new score (ledger total + adjustments) set where it differs from
# the cached one (``upd``, in contact id order through the primary key's range). The
# ledger's counts are an index-only scan of its (contact, time) index; the activities
# after the mark a range of the primary key (none unless ingestion went on meanwhile).
# Rows returned: (0, contacts, 1 if the clean ones were written, NULL); (5, entries
# appended, contacts adjusted, NULL); (3, contact, NULL, NULL) per dirty contact; and for
# the hand-off, of the written contacts that gained points and now reach the threshold
# (none when it is NULL): (1, contact, rule, points) per adjustment and (2, contact, 0,
# new score).
_APPLY_SQL = (
    # cur and p are read once (inlined): the planner joins them on the tables' statistics.
    "WITH cur AS (SELECT c.id, c.xmin::text AS cx, k.xmin::text AS kx, "  # noqa: S608
    "s.score AS cached FROM crm_contact c LEFT JOIN crm_company k ON k.id = c.company_id "
    # The range repeated on the score rows: a range of their primary key, not a scan of
    # the whole table per chunk.
    "LEFT JOIN crm_contactscore s ON s.contact_id = c.id "
    "AND s.contact_id >= %(lo)s AND s.contact_id < %(hi)s "
    "WHERE c.id >= %(lo)s AND c.id < %(hi)s), "
    "nl AS (SELECT contact_id, COUNT(*) AS n FROM scoring_ledgerentry "
    "WHERE contact_id >= %(lo)s AND contact_id < %(hi)s GROUP BY contact_id), "
    "na AS (SELECT DISTINCT contact_id FROM crm_activity "
    "WHERE id > %(mark)s AND contact_id >= %(lo)s AND contact_id < %(hi)s), "
    f"p AS (SELECT * FROM {TABLE} WHERE id >= %(lo)s AND id < %(hi)s), "
    "chk AS MATERIALIZED (SELECT cur.id, cur.cached, p.t, p.d, p.s, p.g, p.xr, p.xp, "
    "(p.id IS NULL OR p.hr OR p.cx IS DISTINCT FROM cur.cx OR p.kx IS DISTINCT FROM cur.kx "
    "OR p.nl <> COALESCE(nl.n, 0) OR na.contact_id IS NOT NULL) AS dirty "
    "FROM cur LEFT JOIN p ON p.id = cur.id "
    "LEFT JOIN nl ON nl.contact_id = cur.id LEFT JOIN na ON na.contact_id = cur.id), "
    "few AS MATERIALIZED (SELECT count(*) AS n, "
    "count(*) FILTER (WHERE dirty) <= %(share)s::float8 * count(*) AS go FROM chk), "
    # Per clean contact: its new score, and whether it is a hand-off candidate (a gain
    # and the threshold reached; never when the threshold is NULL).
    "ok AS MATERIALIZED (SELECT chk.id, chk.cached, chk.d, chk.xr, chk.xp, "
    "chk.t + chk.s AS score, COALESCE(chk.g AND chk.t + chk.s >= %(threshold)s::int, false) "
    "AS reach FROM chk, few WHERE few.go AND NOT chk.dirty), "
    "adj AS MATERIALIZED (SELECT ok.id AS c, u.r, u.p, ok.reach "
    "FROM ok, unnest(%(rules)s::bigint[], ok.d) AS u(r, p) WHERE ok.d IS NOT NULL AND u.p <> 0 "
    "UNION ALL SELECT id, unnest(xr), unnest(xp), reach FROM ok WHERE xr IS NOT NULL), "
    "ins AS (INSERT INTO scoring_ledgerentry (contact_id, rule_id, activity_id, points, at, "
    "reason) SELECT c, r, NULL, p, %(now)s, %(reason)s FROM adj), "
    "upd AS (UPDATE crm_contactscore cs SET score = ok.score FROM ok "
    "WHERE cs.contact_id = ok.id AND ok.score IS DISTINCT FROM ok.cached "
    "AND cs.contact_id >= %(lo)s AND cs.contact_id < %(hi)s) "
    "SELECT 0, n, go::int, NULL::int FROM few "
    "UNION ALL SELECT 5, count(*), count(DISTINCT c), NULL FROM adj "
    "UNION ALL SELECT 3, id, NULL, NULL FROM chk WHERE dirty "
    "UNION ALL SELECT 1, c, r, p FROM adj WHERE reach "
    "UNION ALL SELECT 2, id, 0, score FROM ok WHERE reach"
)


def chunk_apply(
    *, lo: int, hi: int, rules: list[Rule], built: Pass, now: datetime, threshold: int | None
) -> ChunkOutcome:
    """Rescore the (already locked) contacts with ids in ``[lo, hi)`` from the pass
    ``built``: what ``rescore_sql.chunk_rescore`` does, with the clean contacts' diff
    read from the pass (module docstring) and written by the same statement, and the
    dirty ones' computed now."""
    params = {
        "lo": lo,
        "hi": hi,
        "mark": built.mark,
        "share": DIRTY_SHARE,
        "rules": int_array(built.rule_ids),
        "now": now,
        "reason": RESCORE,
        "threshold": threshold,
    }
    with connection.cursor() as cursor:
        cursor.execute(_APPLY_SQL, params)
        rows = cursor.fetchall()
    contacts = applied = 0
    outcome = ChunkOutcome()
    for kind, a, b, _ in rows:
        if kind == 0:
            contacts, applied = a, b
        elif kind == 5:
            outcome.entries_created, outcome.contacts_changed = a, b
    dirty = [row[1] for row in rows if row[0] == 3]
    if not applied:
        return rescore_sql.chunk_rescore(lo=lo, hi=hi, rules=rules, now=now, threshold=threshold)
    outcome.handoff_entries = [
        Entry(c, r, None, p, now, RESCORE) for kind, c, r, p in rows if kind == 1
    ]
    outcome.handoff_scores = {c: score for kind, c, _, score in rows if kind == 2}
    if dirty:
        bounds = rescore_sql._day_bounds(rules, now)
        sql, params = rescore_sql._statement(Scope(ids=tuple(dirty)), rules, now, bounds)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            exact = rescore_sql.rows_apply(cursor.fetchall(), now=now, threshold=threshold)
        outcome.entries_created += exact.entries_created
        outcome.contacts_changed += exact.contacts_changed
        outcome.handoff_entries += exact.handoff_entries
        outcome.handoff_scores.update(exact.handoff_scores)
    outcome.contacts = contacts
    return outcome
