"""PostgreSQL fast path of incremental scoring: a batch's diff and ledger append in one
statement.

The portable path (:func:`scoring.engine.batch_reconcile`) reads the matched rules' worth
per contact (one aggregate over the batch contacts' activities, with the latest match
time of each half-life rule as a timestamp), then the ledger sums of the matched
(contact, rule) pairs, diffs them in Python and sends the entries back as six arrays:
per 1,000-activity batch ~30 ms of worker CPU, most of it converting values the diff
only subtracts. Here one statement does the same arithmetic where the rows are: the
matched pairs travel in as arrays (contact, rule, whether the target is known to be 0),
with the batch activities that each add a counted unit to a pair; the aggregate (built
from the same ORM conditions: ``activity_q``, ``engine._column``), the ledger sums and
their difference are CTEs, the non-zero differences are inserted as ledger entries — a
gain split over its units as ``engine.gain_split`` splits it — in the portable path's
order, and only (pair position, unit, points) comes back, from which the caller builds
the entries the hand-off reads. The cached score update stays with the caller (``scores_add``).

tests/scoring/test_batch_sql.py checks this path appends the same entries, leaves the
same scores and hands off the same MQLs as the portable path on random rules, batches
and histories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from crm.models import Activity
from crm.models.activities import engagement_q
from crm.models.choices import ENGAGEMENT_KINDS

from . import engine
from .models import LedgerEntry, Rule
from .rules import activity_q
from .writes import ids_q, int_array, word_array

R = LedgerEntry.Reason


def supported() -> bool:
    return connection.vendor == "postgresql"


def batch_diff(
    *,
    pairs: Sequence[tuple[int, int]],
    units: Sequence[Sequence[Activity]],
    rules: Sequence[Rule],
    known: Sequence[bool],
    agg_rules: Sequence[Rule],
    agg_contacts: Sequence[int],
    need: Mapping[int, set[int]] | None = None,
    unapplied: frozenset[int] = frozenset(),
    now: datetime,
) -> list[tuple[int, int, int]]:
    """Append the ledger entries of a batch's matched ``pairs`` (sorted (contact, rule))
    and return ``[(position in pairs, unit, points)]`` of the entries appended, in order:
    ``unit`` k > 0 for the share of a gain dated at the pair's k-th unit (``units[i]``,
    split as ``engine.gain_split`` splits it), 0 for a loss.

    ``units[i]`` are the batch's activities that each add a counted unit to ``pairs[i]``
    (``engine.batch_matches``), ``rules[i]`` its rule; ``known[i]`` says the pair's target
    is 0 without the aggregate (an inactivity penalty a recent engagement of the batch
    ends). ``agg_rules``/``agg_contacts``: the rules and contacts of the other pairs, whose
    target is the rule's full worth for the contact, as ``engine.expected_values``
    computes it; ``need`` (rule id → contacts) narrows the aggregate to the activity
    kinds each contact needs; ``unapplied``: activities of batches still queued, left out
    of the aggregate (``engine.batch_reconcile``).
    """
    if not pairs:
        return []
    contacts, rule_ids = zip(*pairs, strict=True)
    # Per pair its signed worth of a unit (an engagement rule's points; NULL for an
    # inactivity rule: its gain goes whole to the first unit) and its units as rows (pair
    # position, k, units of the pair, activity). Plain ints and flags only (the array
    # literals of ~2,000 pairs cost ~1 ms; their times as ISO strings cost 3 more): a
    # share's time is its activity's, read by id.
    worths: list[int | None] = []
    u_pair, u_k, u_n, u_activity = [], [], [], []
    for i, (mine, rule) in enumerate(zip(units, rules, strict=True), 1):
        if not mine:  # a change needs an activity to date it (JOIN u would drop it)
            raise ValueError(f"pair {pairs[i - 1]} has no unit")
        worth = rule.points if rule.kind == Rule.Kind.ENGAGEMENT else None
        worths.append(worth)
        if not worth or len(mine) == 1:
            mine = mine[:1]
        for k, activity in enumerate(mine, 1):
            u_pair.append(i)
            u_k.append(k)
            u_n.append(len(mine))
            u_activity.append(activity.id)
    params: list = [
        _ints(contacts),
        _ints(rule_ids),
        "{" + ",".join(["t" if k else "f" for k in known]) + "}",
        int_array(worths),
        _ints(u_pair),
        _ints(u_k),
        _ints(u_n),
        _ints(u_activity),
    ]
    ctes = [
        "m AS MATERIALIZED (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[], "
        "%s::int[]) WITH ORDINALITY AS m(contact_id, rule_id, known, w, i))",
        "u AS MATERIALIZED (SELECT * FROM unnest(%s::int[], %s::int[], %s::int[], "
        "%s::bigint[]) AS u(i, k, n, activity_id))",
    ]
    joins = ""
    targets: list[str] = []
    engagement = [r for r in agg_rules if r.kind == Rule.Kind.ENGAGEMENT]
    inactive = [r for r in agg_rules if r.kind == Rule.Kind.NEGATIVE]
    if agg_rules:
        activity_sql, activity_params = _aggregate(
            engagement, inactive, agg_contacts, need, now, unapplied
        )
        ctes.append(f"agg AS MATERIALIZED ({activity_sql})")
        params.extend(activity_params)
        joins += " LEFT JOIN agg a ON a.contact_id = m.contact_id"
    if inactive:
        # engine.expected_values: without an engagement, the creation time decides.
        ctes.append(
            "born AS MATERIALIZED (SELECT id, created_at FROM crm_contact "
            "WHERE id IN (SELECT unnest(%s::bigint[])))"
        )
        params.append(int_array(agg_contacts))
        joins += " LEFT JOIN born b ON b.id = m.contact_id"
    target_params: list = []
    for r in engagement:
        sql, extra = _engagement_value(r, now)
        targets.append(f"WHEN m.rule_id = {int(r.pk)} THEN {sql}")
        target_params.extend(extra)
    for r in inactive:
        cutoff = now - timedelta(days=r.inactive_days or 0)
        targets.append(
            f"WHEN m.rule_id = {int(r.pk)} THEN CASE WHEN (CASE WHEN a.last_engaged IS NOT NULL "
            f"THEN a.last_engaged < %s ELSE b.created_at < %s END) THEN {int(r.points)} ELSE 0 END"
        )
        target_params.extend([cutoff, cutoff])
    # What each matched rule already gave, and its recycle resets (they belong to no
    # rule's expectation, but take back at most what the rule is worth: engine.rule_target).
    ctes.append(
        "owned AS MATERIALIZED (SELECT contact_id, rule_id, "
        "SUM(points) FILTER (WHERE reason <> %s) AS s, "
        "SUM(points) FILTER (WHERE reason = %s) AS r FROM scoring_ledgerentry "
        "WHERE contact_id IN (SELECT unnest(%s::bigint[])) AND rule_id = ANY(%s::bigint[]) "
        "GROUP BY contact_id, rule_id)"
    )
    params.extend(
        [
            R.RECYCLE_RESET.value,
            R.RECYCLE_RESET.value,
            int_array(sorted(set(contacts))),
            int_array(sorted(set(rule_ids))),
        ]
    )
    # Only ints and the ORM's compiled SQL are interpolated; values travel as parameters.
    # The target is engine.rule_target(worth, resets): GREATEST(w, LEAST(w, 0) - r).
    ctes.append(
        "diff0 AS (SELECT i, contact_id, rule_id, w, "  # noqa: S608
        "GREATEST(worth, LEAST(worth, 0) - r) - s AS points FROM (SELECT m.i, m.contact_id, "
        f"m.rule_id, m.w, (CASE WHEN m.known THEN 0 {' '.join(targets)} ELSE 0 END) AS worth, "
        "COALESCE(o.s, 0) AS s, COALESCE(o.r, 0) AS r "
        f"FROM m{joins} LEFT JOIN owned o ON o.contact_id = m.contact_id "
        "AND o.rule_id = m.rule_id) t), "
        # engine.activity_caused: toward the rule's sign (an engagement rule), a gain (else).
        "diff AS MATERIALIZED (SELECT *, CASE WHEN w IS NULL THEN points > 0 "
        "ELSE w::bigint * points > 0 END AS caused FROM diff0)"
    )
    params.extend(target_params)
    # engine.gain_split in SQL, on |change| and |worth| with the sign put back: the k-th
    # of a pair's n units takes a unit's worth while the change lasts, the first also what
    # is left when all have theirs (NULL worth: the whole change). A change the batch
    # caused is its activities', dated at them; any other is expiry (rules with an expiry)
    # or decay, dated now (engine._clock_reason). Entries go in in (pair, unit) order, as
    # the portable path appends them.
    ctes.append(
        "rows AS MATERIALIZED (SELECT * FROM (SELECT d.i, u.k, d.contact_id, d.rule_id, "
        "u.activity_id, CASE WHEN d.w IS NULL OR d.w = 0 THEN d.points "
        "ELSE sign(d.points)::int * (LEAST(abs(d.w), GREATEST(abs(d.points) "
        "- abs(d.w) * (u.k - 1), 0)) + CASE WHEN u.k = 1 THEN GREATEST(abs(d.points) "
        "- abs(d.w) * u.n, 0) ELSE 0 END) END AS points "
        "FROM diff d JOIN u ON u.i = d.i WHERE d.caused) g WHERE g.points <> 0 "
        "UNION ALL SELECT i, 0, contact_id, rule_id, NULL, points FROM diff "
        "WHERE points <> 0 AND NOT caused)"
    )
    expiring = sorted({r.pk for r in rules if r.expire_after_days})
    ctes.append(
        "ins AS (INSERT INTO scoring_ledgerentry "
        "(contact_id, rule_id, activity_id, points, at, reason) "
        "SELECT r.contact_id, r.rule_id, r.activity_id, r.points, CASE WHEN r.k > 0 THEN "
        "(SELECT x.occurred_at FROM crm_activity x WHERE x.id = r.activity_id) "
        "ELSE %s::timestamptz END, "
        "CASE WHEN r.k > 0 THEN %s WHEN r.rule_id = ANY(%s::bigint[]) THEN %s ELSE %s END "
        "FROM rows r ORDER BY r.i, r.k)"
    )
    params.extend([now, R.ACTIVITY.value, int_array(expiring), R.EXPIRY.value, R.DECAY.value])
    sql = "WITH " + ", ".join(ctes) + " SELECT i, k, points FROM rows ORDER BY i, k"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(i - 1, k, points) for i, k, points in cursor.fetchall()]


def _ints(values: Sequence[int]) -> str:
    """An array literal of ints (``writes.int_array`` without its per-value ``int()``)."""
    return "{" + ",".join(map(str, values)) + "}"


def _aggregate(engagement, inactive, contact_ids, need, now, unapplied) -> tuple[str, tuple]:
    """The SQL of ``engine.expected_values``' activity aggregate for these rules and
    contacts: per contact, each rule's counted buckets (``c<pk>``), latest match of a
    half-life rule (``l<pk>``) and the latest engagement (``last_engaged``). Every
    condition requires a human activity, so machine activities are left out before
    grouping.

    With ``need`` and no inactivity rule to evaluate, only the (contact, kind) pairs the
    matched pairs read are aggregated: a contact's column of a rule it does not need is
    never read, and a batch contact usually needs one or two of the kinds (100k copy,
    bench batch: 3,584 rows aggregated instead of 11,864, the read 34 -> 22 ms).
    """
    columns = []
    for r in engagement:
        q = activity_q(r, now=now)
        columns.append((f"c{r.pk}", r, q))
        if r.half_life_days:
            columns.append((f"l{r.pk}", r, q))
    if inactive:
        columns.append(("last_engaged", None, engagement_q()))
    kinds = {r.activity_kind for r in engagement} | (set(ENGAGEMENT_KINDS) if inactive else set())
    if need is not None and not inactive:
        pairs = sorted({(c, r.activity_kind) for r in engagement for c in need[r.pk]})
        contacts, wanted = zip(*pairs, strict=True)
        scope = RawSQL(
            '("crm_activity"."contact_id", "crm_activity"."kind") IN '
            "(SELECT * FROM unnest(%s::bigint[], %s::varchar[]))",
            [_ints(contacts), word_array(wanted)],
            output_field=BooleanField(),
        )
    else:
        scope = ids_q("contact_id", contact_ids)
    queued = [~ids_q("id", sorted(unapplied))] if unapplied else []
    qs = (
        Activity.objects.filter(scope, *queued, kind__in=sorted(kinds), is_machine=False)
        .order_by()
        .values("contact_id")
        .annotate(**{n: engine._column(n, r, q) for n, r, q in columns})
        .values_list("contact_id", *(n for n, _, _ in columns))
    )
    return qs.query.sql_with_params()


def _engagement_value(rule: Rule, now: datetime) -> tuple[str, list]:
    """SQL of ``engine.rule_value`` over the aggregate row ``a`` (as the PostgreSQL
    rescore computes it, scoring.rescore_sql)."""
    n = f'COALESCE(a."c{rule.pk}", 0)'
    cap = 1 if rule.frequency == Rule.Frequency.ONCE_EVER else None
    if rule.cap:
        cap = min(cap, rule.cap) if cap else rule.cap
    value = (
        f"({int(rule.points)} * LEAST({n}, {int(cap)}))" if cap else f"({int(rule.points)} * {n})"
    )
    if not rule.half_life_days:
        return value, []
    # int(value / 2**h), h = int((now - last) / half-life), 0 from 63 halvings on: the
    # epoch difference is exact (numeric), and bigint division truncates toward zero.
    h = (
        f'trunc(extract(epoch from (%s::timestamptz - a."l{rule.pk}")) '
        f"/ {int(rule.half_life_days) * 86400})::int"
    )
    return (
        f"CASE WHEN {n} = 0 THEN 0 WHEN {h} >= 63 THEN 0 "
        f"WHEN {h} >= 0 THEN {value} / (1::bigint << {h}) "
        f"ELSE {value} * (1::bigint << LEAST(-{h}, 62)) END"
    ), [now] * 4
