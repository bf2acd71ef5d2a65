"""The scoring engine: what each rule is worth for each contact, and the ledger entries
that make the ledger agree with it.

One idea serves every path. For a set of contacts (a batch's contacts, contacts whose
profile changed, or an id range of a rescore) and a set of rules, two aggregate queries
give each contact's *expected* points per rule (fit flags; distinct counted buckets of
matching activities, with caps, expiry and half-life), one aggregate gives the points the
ledger already holds per (contact, rule), and the difference is appended with
``entries_append``. The cached score (``ContactScore``) is then set to the ledger sum in
one UPDATE. Because
incremental scoring, fit changes, decay and rescoring all compute the same function, the
ledger after any sequence of batches equals a full rescore (tests/scoring/test_property.py).

Entries of ``recycle_reset`` belong to no rule's expectation: they are the recycle
policy's deliberate adjustment and a rescore keeps them. They take back at most what
their rule is worth, though (:func:`rule_target`): once the points a reset took back
expire, decay or are switched off, the reset cancels them rather than the rule's
entries taking them back a second time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db import connection
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate, TruncWeek
from django.utils import timezone

from crm.models import Activity, Contact, ContactScore
from crm.models.activities import engagement_q, is_engagement, unsubscribe_link_prefix
from crm.models.choices import ENGAGEMENT_KINDS

from . import batch_sql
from .models import LedgerEntry, Rule
from .rules import activity_q, fit_q, in_force
from .writes import Entry, entries_append, ids_q, scores_add, scores_set

R = LedgerEntry.Reason
ACTIVITY = R.ACTIVITY.value
MASK_BITS = 60
BIG = BigIntegerField()


@dataclass
class RuleSet:
    """Rules split by how they are evaluated; positions are stable within one run."""

    rules: list[Rule]

    @property
    def flag_rules(self) -> list[Rule]:
        return [r for r in self.rules if is_flag(r)]

    @property
    def count_rules(self) -> list[Rule]:
        return [r for r in self.rules if not is_flag(r)]


def is_flag(rule: Rule) -> bool:
    return rule.kind == Rule.Kind.FIT or (
        rule.kind == Rule.Kind.NEGATIVE and rule.negative != Rule.Negative.INACTIVE
    )


def rules_enabled(kinds: Iterable[str] | None = None) -> list[Rule]:
    qs = Rule.objects.filter(enabled=True)
    if kinds is not None:
        qs = qs.filter(kind__in=list(kinds))
    return list(qs.order_by("id"))


def time_dependent(
    rules: Sequence[Rule], *, now: datetime, last_run: datetime | None = None
) -> list[Rule]:
    """Rules whose worth changes with the clock alone: expiry, half-life, inactivity —
    and a profile or inactivity rule coming into force: its active-from date is still
    ahead (kept at nothing meanwhile) or came after ``last_run``, the last decay run's
    time (every such rule when there was none), so the first run at or after the date
    applies it whatever runs were missed. An engagement rule needs no run to come into
    force: it counts the activities from its date as they arrive."""

    def coming_into_force(r: Rule) -> bool:
        if r.kind == Rule.Kind.ENGAGEMENT or r.active_from is None:
            return False
        return last_run is None or r.active_from > min(now, last_run)

    return [
        r
        for r in rules
        if r.is_fading()
        or (r.kind == Rule.Kind.NEGATIVE and r.negative == Rule.Negative.INACTIVE)
        or coming_into_force(r)
    ]


def rule_target(worth: int, reset: int) -> int:
    """What a rule's own entries (recycle resets aside) must sum to for a contact, given
    the rule's ``worth`` for the contact and the sum of its recycle resets (``reset`` ≤
    0: each took back part of what the rule had given).

    A reset takes back at most what the rule is worth now, so a rule's net never passes
    zero against its sign — a rule that only ever gave points never costs any: +30, then
    a reset −30, then the rule switched off (or its points expired) leaves the rule at 0,
    not −30. The net is ``worth + max(reset, −max(worth, 0))``; the entries' sum is that
    net minus the reset. Every path computes its targets with it (the SQL paths as
    ``GREATEST(w, LEAST(w, 0) − r)``: scoring.batch_sql, scoring.rescore_sql).
    """
    return max(worth, min(worth, 0) - reset)


def _column(name: str, rule: Rule | None, q: Q):
    """``c<pos>``: the rule's counted buckets; ``l<pos>``/``last_engaged``: latest match."""
    if not name.startswith("c"):
        return Max("occurred_at", filter=q)
    if rule.frequency == Rule.Frequency.ONCE_PER_DAY:
        return Count(TruncDate("occurred_at"), filter=q, distinct=True)
    if rule.frequency == Rule.Frequency.ONCE_PER_WEEK:
        return Count(TruncWeek("occurred_at"), filter=q, distinct=True)
    return Count("id", filter=q)


def rule_value(rule: Rule, *, count: int, last: datetime | None, now: datetime) -> int:
    """Points of an engagement rule given its counted buckets and latest match."""
    n = min(count, 1) if rule.frequency == Rule.Frequency.ONCE_EVER else count
    if rule.cap:
        n = min(n, rule.cap)
    value = rule.points * n
    if value and rule.half_life_days and last is not None:
        halvings = int((now - last) / timedelta(days=rule.half_life_days))
        value = int(value / (2**halvings)) if halvings < 64 else 0
    return value


def rule_value_expression(rule: Rule, *, q: Q, now: datetime, since: datetime):
    """SQL mirror of :func:`rule_value`: an aggregate, over activities of ``[since, now)``
    grouped by contact, worth the engagement rule's points for the group's activities
    matching ``q`` (the back-test sums it in the database instead of reading a column per
    rule).

    Halvings ``⌊(now − last) / half-life⌋`` become a CASE comparing ``last`` with
    ``now − k·half-life`` (exact time comparisons, no float); as ``last`` lies in the
    window, ``k`` never exceeds ``⌊(now − since) / half-life⌋``, and from 63 halvings on
    nothing is left. Integer division truncates toward zero on both databases, like
    ``int(value / 2**k)``.
    """
    from django.db.models.functions import Least
    from django.db.models.lookups import GreaterThan

    n = _column("c", rule, q)
    cap = 1 if rule.frequency == Rule.Frequency.ONCE_EVER else None
    if rule.cap:
        cap = min(cap, rule.cap) if cap else rule.cap
    if cap:
        n = Least(n, Value(cap))
    value = Value(rule.points) * n
    if not rule.half_life_days:
        return value
    half_life = timedelta(days=rule.half_life_days)
    last = _column("l", rule, q)
    most = min(int((now - since) / half_life), 62)
    return Case(
        *(
            When(GreaterThan(last, now - (k + 1) * half_life), then=value / Value(2**k))
            for k in range(most + 1)
        ),
        default=Value(0),
        output_field=BIG,
    )


def expected_values(
    contact_q: Q,
    rule_set: RuleSet,
    *,
    now: datetime,
    activity_scope: Q | None = None,
    since: datetime | None = None,
) -> dict[int, dict[int, int]]:
    """``{contact_id: {rule position: points}}`` for the contacts matching ``contact_q``.

    At most two queries whatever the number of contacts and rules: one row per contact
    (fit flags, creation time), and one aggregate over the activities of ``activity_scope``
    grouped by contact — a range scan of the (contact, time) index for an id range, so a
    full rescore reads every activity once. ``since`` limits the activities to
    ``[since, now)`` (back-test). Every contact of ``contact_q`` appears, possibly with an
    empty dict, when it has fit rules or inactivity rules to evaluate.
    """
    positions = {id(r): i for i, r in enumerate(rule_set.rules)}
    result: dict[int, dict[int, int]] = {}
    # A rule not yet in force is worth nothing: it is left out, as a disabled one.
    live = RuleSet([r for r in rule_set.rules if in_force(r, now)])
    flag_rules = live.flag_rules
    count_rules = live.count_rules
    inactive = [r for r in count_rules if r.kind == Rule.Kind.NEGATIVE]
    engagement = [r for r in count_rules if r.kind != Rule.Kind.NEGATIVE]
    # Fit flags and "created before the inactivity cut-off" travel as bits of a few
    # integer columns: decoding two ints per row is far cheaper than one column per rule.
    bit_rules = [*flag_rules, *inactive]
    created_early: dict[int, set[int]] = defaultdict(set)  # contact → inactive positions
    if bit_rules:
        masks = {}
        for start in range(0, len(bit_rules), MASK_BITS):
            terms = []
            for bit, r in enumerate(bit_rules[start : start + MASK_BITS]):
                if r.kind == Rule.Kind.NEGATIVE and r.negative == Rule.Negative.INACTIVE:
                    cond = Q(created_at__lt=now - timedelta(days=r.inactive_days or 0))
                else:
                    cond = fit_q(r)
                terms.append(
                    Case(When(cond, then=Value(1 << bit)), default=Value(0), output_field=BIG)
                )
            masks[f"m{start}"] = sum(terms[1:], terms[0])
        qs = Contact.objects.filter(contact_q).order_by().annotate(**masks)
        names = list(masks)
        for row in rows_fetch(qs.values_list("pk", *names), names):
            values = result.setdefault(row[0], {})
            for name, mask in zip(names, row[1:], strict=True):
                start = int(name[1:])
                while mask:
                    bit = (mask & -mask).bit_length() - 1
                    mask &= mask - 1
                    r = bit_rules[start + bit]
                    if r.kind == Rule.Kind.NEGATIVE and r.negative == Rule.Negative.INACTIVE:
                        created_early[row[0]].add(positions[id(r)])
                    else:
                        values[positions[id(r)]] = r.points
    if not count_rules:
        return result
    columns: list[tuple[str, Rule | None, Q]] = []  # (name, rule, activity condition)
    for r in engagement:
        pos = positions[id(r)]
        q = activity_q(r, now=now)
        if since is not None:  # back-test: replay only the window's activities
            q &= Q(occurred_at__gte=since, occurred_at__lt=now)
        columns.append((f"c{pos}", r, q))
        if r.half_life_days:
            columns.append((f"l{pos}", r, q))
    if inactive:
        columns.append(("last_engaged", None, engagement_q()))
    names = [name for name, _, _ in columns]
    scope = (
        activity_scope
        if activity_scope is not None
        else Q(contact__in=Contact.objects.filter(contact_q))
    )
    # Only the kinds some rule reads: sends and deliveries, the bulk of email events,
    # never reach the aggregate.
    kinds = {r.activity_kind for r in engagement} | (set(ENGAGEMENT_KINDS) if inactive else set())
    qs = (
        Activity.objects.filter(scope, kind__in=sorted(kinds))
        .order_by()
        .values("contact_id")
        .annotate(
            **{n: _column(n, r, q) for n, r, q in columns},
        )
        .values_list("contact_id", *names)
    )
    # Column index, position, points and cap per rule, resolved once (this loop runs for
    # every contact with activity in the scope).
    plan = []
    for r in engagement:
        pos = positions[id(r)]
        cap = 1 if r.frequency == Rule.Frequency.ONCE_EVER else None
        if r.cap:
            cap = min(cap, r.cap) if cap else r.cap
        last_col = 1 + names.index(f"l{pos}") if r.half_life_days else None
        plan.append((1 + names.index(f"c{pos}"), pos, r, r.points, cap, last_col))
    engaged_col = 1 + names.index("last_engaged") if inactive else None
    last_engaged: dict[int, datetime] = {}
    for row in rows_fetch(qs, names):
        if engaged_col is not None and row[engaged_col] is not None:
            last_engaged[row[0]] = row[engaged_col]
        values = result.get(row[0])
        if values is None:
            values = result[row[0]] = {}
        for col, pos, r, points, cap, last_col in plan:
            n = row[col]
            if not n:
                continue
            if last_col is not None:
                value = rule_value(r, count=n, last=row[last_col], now=now)
            else:
                value = points * (min(n, cap) if cap else n)
            if value:
                values[pos] = value
    for r in inactive:
        pos = positions[id(r)]
        cutoff = now - timedelta(days=r.inactive_days or 0)
        for contact_id, values in result.items():
            last = last_engaged.get(contact_id)
            if (last < cutoff) if last is not None else (pos in created_early[contact_id]):
                values[pos] = r.points
    return result


@dataclass
class Outcome:
    entries: list[Entry] = field(default_factory=list)
    contacts: set[int] = field(default_factory=set)
    scores: dict[int, int] | None = None  # new cached scores of changed contacts, if known

    @property
    def delta_by_contact(self) -> dict[int, int]:
        deltas: dict[int, int] = defaultdict(int)
        for e in self.entries:
            deltas[e.contact_id] += e.points
        return deltas


def reconcile(
    *,
    contact_ids: Iterable[int] | None = None,
    id_range: tuple[int, int] | None = None,
    rules: Sequence[Rule],
    now: datetime,
    mode: str,
    all_rules: bool = False,
    cached_scores: dict[int, int] | None = None,
    queued: Iterable[int] = (),
    before: datetime | None = None,
    at_by_contact: Mapping[int, datetime] | None = None,
) -> Outcome:
    """Append the entries that make the ledger equal the rules' worth, and refresh scores.

    ``mode`` picks the reason: ``fit``, ``decay`` or ``rescore`` (a batch's activities go
    through :func:`batch_reconcile`). ``all_rules`` (rescore)
    also takes back points of rules that are disabled or deleted; ``cached_scores`` (the
    chunk's cached scores, read when it was locked) saves it re-reading them. ``queued``:
    activities of batches still in the activity queue, left out as incremental scoring
    leaves them out until their own turn (:func:`batch_reconcile`).

    A history replay (scoring.replay) passes ``before``: only activities before it count
    (the later ones are stored already, but had not happened at ``now``), and may date a
    contact's entries at its own moment (``at_by_contact``: its creation, its email status
    change) instead of ``now``.
    """
    if id_range is not None:
        contact_q = Q(pk__gte=id_range[0], pk__lt=id_range[1])
        ledger_q = Q(contact_id__gte=id_range[0], contact_id__lt=id_range[1])
        scope = ledger_q
    else:
        ids = list(contact_ids or ())
        if not ids:
            return Outcome()
        contact_q, ledger_q = Q(pk__in=ids), Q(contact_id__in=ids)
        scope = ledger_q
    queued = sorted(queued)
    if queued:
        scope &= ~ids_q("pk", queued)
    scope = _before(scope, before)
    rule_set = RuleSet(list(rules))
    expected = (
        expected_values(contact_q, rule_set, now=now, activity_scope=scope)
        if rule_set.rules
        else {}
    )
    by_id = {r.pk: (i, r) for i, r in enumerate(rule_set.rules)}

    # What each rule already gave (recycle resets apart: they belong to no rule's
    # expectation, rule_target) and, for a rescore, every entry's total to re-derive the
    # cached score.
    owned_qs = LedgerEntry.objects.filter(ledger_q)
    if not all_rules:
        owned_qs = owned_qs.filter(rule_id__in=list(by_id))
    owned: dict[int, dict[int | None, int]] = defaultdict(dict)
    resets: dict[tuple[int, int | None], int] = {}
    ledger_total: dict[int, int] = defaultdict(int)
    for contact_id, rule_id, points, total in rows_fetch(
        owned_qs.order_by()
        .values_list("contact_id", "rule_id")
        .annotate(
            s=Sum("points", filter=~Q(reason=R.RECYCLE_RESET)),
            t=Sum("points"),
        ),
        ["s", "t"],
    ):
        owned[contact_id][rule_id] = points or 0
        if total != (points or 0):
            resets[(contact_id, rule_id)] = total - (points or 0)
        ledger_total[contact_id] += total

    outcome = Outcome()
    pks = [r.pk for r in rule_set.rules]
    for contact_id in expected.keys() | owned.keys():
        want = expected.get(contact_id, {})
        have = owned.get(contact_id, {})
        for rule_id in {pks[p] for p in want}.union(have):
            pos_rule = by_id.get(rule_id)
            target = rule_target(
                want.get(pos_rule[0], 0) if pos_rule else 0,
                resets.get((contact_id, rule_id), 0),
            )
            delta = target - have.get(rule_id, 0)
            if not delta:
                continue
            rule = pos_rule[1] if pos_rule else None
            reason = _why(rule, delta, mode)
            at = at_by_contact.get(contact_id, now) if at_by_contact else now
            outcome.entries.append(Entry(contact_id, rule_id, None, delta, at, reason))
            outcome.contacts.add(contact_id)
    if outcome.entries:
        entries_append(outcome.entries)
    deltas = outcome.delta_by_contact
    if all_rules:
        # A rescore also repairs a cached score that drifted from its ledger.
        cached = (
            cached_scores.items()
            if cached_scores is not None
            else Contact.objects.filter(contact_q).order_by().values_list("pk", "scorecard__score")
        )
        outcome.scores = {}
        stale = {}
        for cid, score in cached:
            total = ledger_total.get(cid, 0) + deltas.get(cid, 0)
            outcome.scores[cid] = total
            if score != total:
                stale[cid] = total
        scores_set(stale)
    elif deltas:
        scores_add(deltas)
    return outcome


def rows_fetch(qs, names: Sequence[str]):
    """The rows of a ``values_list`` queryset whose last columns are the annotations
    ``names``; on PostgreSQL through a plain cursor, in batches.

    The engine's reads return a row per contact (or per contact and rule): ~100k rows of
    up to ~20 integer and time columns per rescore chunk. Django's per-value converters
    (``int()`` of every count and sum) cost more CPU than decoding the rows; psycopg
    already returns ints and aware datetimes for these columns. The annotations are
    located by their aliases, so the row layout never depends on Django's select order.
    """
    if connection.vendor != "postgresql":
        yield from qs
        return
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        aliases = [d.name for d in cursor.description]
        width = len(aliases)
        if aliases[width - len(names) :] != list(names):
            order = [*range(width - len(names)), *(aliases.index(n) for n in names)]
        else:
            order = None
        while True:
            part = cursor.fetchmany(10_000)
            if not part:
                return
            if order is None:
                yield from part
            else:
                for row in part:
                    yield tuple(row[i] for i in order)


def _why(rule, delta, mode) -> str:
    """Reason of one adjustment of :func:`reconcile` (dated now)."""
    if mode == "fit":
        return R.FIT.value
    if mode == "decay" and rule is not None:
        if is_flag(rule):  # a profile rule the clock changes: one coming into force
            return R.FIT.value
        return _clock_reason(rule)  # either sign: a negative rule's points expire too
    return R.RESCORE.value


def batch_matches(batch, rules, now) -> dict[tuple[int, int], list[Activity]]:
    """Public name of :func:`_batch_matches` (the handler decides what to lock with it)."""
    return _batch_matches(batch, rules, now)


def activity_caused(rule: Rule, delta: int) -> bool:
    """Whether a batch's change ``delta`` of a rule's points is its activities' doing
    (dated at them, :func:`gain_split`) rather than the clock's or an edit's (dated now:
    expiry or decay). For an engagement rule, a change toward the rule's sign — a
    positive rule's gain, a negative rule's loss ("visited the careers page −10"); for an
    inactivity rule, a gain: the penalty an engagement ends."""
    if rule.kind == Rule.Kind.ENGAGEMENT:
        return rule.points * delta > 0
    return delta > 0


def gain_split(points: int, units: Sequence[Activity], rule: Rule) -> list[tuple[Activity, int]]:
    """A batch's activity-caused change of ``points`` for one (contact, rule), as entries
    per activity.

    ``units`` are the batch's activities that each add one counted unit of the rule (see
    :func:`_batch_matches`), in time order. Each is worth the rule's points until the
    change is spent (a cap can leave the last ones nothing); what is left when every unit
    has its points — the ledger held less than the rule's worth before the batch: a rule
    edited and not yet rescored, a half-life's refresh by the first new match — goes to
    the first. So every point is dated at the activity that earned it: a contact's score
    at a moment (METRICS.md, "Scores over time") and the MQL hand-off's "dated at the
    activity that pushed it over" hold within a batch too, not only between batches (a
    history imported in one batch, or a queue drain of several batches, used to date all
    of a pair's points at its first activity). scoring.batch_sql splits the same way in
    SQL. A negative engagement rule's loss splits the same way, with the signs turned.
    """
    worth = abs(rule.points) if rule.kind == Rule.Kind.ENGAGEMENT else 0
    if worth == 0 or len(units) == 1:
        return [(units[0], points)]
    sign = -1 if points < 0 else 1
    shares: list[list] = []
    left = abs(points)
    for activity in units:
        take = min(worth, left)
        if take <= 0:
            break
        shares.append([activity, take])
        left -= take
    shares[0][1] += left
    return [(activity, sign * share) for activity, share in shares]


def _clock_reason(rule: Rule) -> str:
    """The reason of a change a batch did not cause: expiry for a rule whose points expire,
    else decay (a half-life, or points the ledger holds beyond an edited rule's worth)."""
    return (R.EXPIRY if rule.expire_after_days else R.DECAY).value


def batch_reconcile(
    *,
    matches: dict[tuple[int, int], list[Activity]],
    rules: Sequence[Rule],
    now: datetime,
    scores: dict[int, int],
    batch: Sequence[Activity] = (),
    unapplied: frozenset[int] = frozenset(),
    portable: bool = False,
    before: datetime | None = None,
) -> Outcome:
    """Score a batch: reconcile only the (contact, rule) pairs the batch's activities hit.

    ``matches`` comes from :func:`batch_matches`; ``scores`` are the locked contacts'
    cached scores. A pair the batch does not touch keeps its value until the decay tick
    or a rescore (a batch adds activities, so only matched rules can change, apart from
    the clock, which :func:`decay_run` owns). Per pair the target is the rule's full worth
    for the contact (caps, once-per-day/week, once-ever, expiry, half-life need the
    contact's prior matches), computed by one aggregate restricted to the batch's contacts
    and the kinds of the matched rules; an inactivity penalty that a recent engagement of
    the batch ends is known to be 0 without a query. At most three queries: the aggregate,
    the ledger sums of the matched pairs, and the bulk insert, plus one UPDATE of scores;
    on PostgreSQL (unless ``portable``) the first three are one statement
    (:mod:`scoring.batch_sql`).
    The new scores are returned in ``Outcome.scores`` so the hand-off can skip its query
    when nobody reaches the threshold.

    ``unapplied`` (a queue drain's ``ActivitiesRecorded.unapplied_ids``): stored activities
    of batches still queued, left out of the aggregate. Counted now, their points would be
    dated at this batch's activities (the gain split gives what its units cannot explain
    to the first); their own turn scores them, dated at themselves.

    ``before`` (a history replay, scoring.replay): only activities before it count, as
    :func:`reconcile`'s; it takes the portable path (the SQL one has no such bound, and a
    replay's batches are few).
    """
    by_id = {r.pk: r for r in rules}
    known: dict[tuple[int, int], int] = {}
    latest_engagement: dict[int, datetime] = {}
    prefix = unsubscribe_link_prefix()
    for a in batch:
        if is_engagement(a.kind, a.is_machine, a.url, prefix):
            seen = latest_engagement.get(a.contact_id)
            if seen is None or a.occurred_at > seen:
                latest_engagement[a.contact_id] = a.occurred_at
    need: dict[int, set[int]] = defaultdict(set)  # rule id → contacts needing the aggregate
    for contact_id, rule_id in matches:
        rule = by_id[rule_id]
        if rule.kind == Rule.Kind.NEGATIVE:
            if not in_force(rule, now):  # worth nothing yet (the decay run applies it)
                known[(contact_id, rule_id)] = 0
                continue
            cutoff = now - timedelta(days=rule.inactive_days or 0)
            last = latest_engagement.get(contact_id)
            if last is not None and last >= cutoff:
                known[(contact_id, rule_id)] = 0
                continue
        need[rule_id].add(contact_id)
    expected: dict[int, dict[int, int]] = {}
    agg_rules = [by_id[rid] for rid in sorted(need)]
    agg_contacts = sorted(set().union(*need.values())) if agg_rules else []
    outcome = Outcome()
    if before is None and not portable and batch_sql.supported():
        # PostgreSQL: the aggregate, the ledger sums, the diff and the append in one
        # statement (scoring.batch_sql); only the entries' positions and points return.
        pairs = sorted(matches)
        for i, k, points in batch_sql.batch_diff(
            pairs=pairs,
            units=[matches[key] for key in pairs],
            rules=[by_id[rule_id] for _, rule_id in pairs],
            known=[key in known for key in pairs],
            agg_rules=agg_rules,
            agg_contacts=agg_contacts,
            need=need,
            unapplied=unapplied,
            now=now,
        ):
            contact_id, rule_id = pairs[i]
            if k:  # a share of the pair's k-th unit (gain_split)
                unit = matches[pairs[i]][k - 1]
                entry = Entry(contact_id, rule_id, unit.pk, points, unit.occurred_at, ACTIVITY)
            else:
                entry = Entry(contact_id, rule_id, None, points, now, _clock_reason(by_id[rule_id]))
            outcome.entries.append(entry)
            outcome.contacts.add(contact_id)
        return _scores_after(outcome, scores)
    if agg_rules:
        expected = expected_values(
            ids_q("pk", agg_contacts),
            RuleSet(agg_rules),
            now=now,
            activity_scope=_before(
                ids_q("contact_id", agg_contacts) & ~ids_q("pk", sorted(unapplied)), before
            ),
        )
    positions = {r.pk: i for i, r in enumerate(agg_rules)}
    contact_ids = sorted({c for c, _ in matches})
    owned: dict[tuple[int, int], tuple[int, int]] = {  # (entries' sum, resets' sum)
        (c, r): (s or 0, reset or 0)
        for c, r, s, reset in LedgerEntry.objects.filter(
            ids_q("contact_id", contact_ids), rule_id__in=sorted({r for _, r in matches})
        )
        .order_by()
        .values_list("contact_id", "rule_id")
        .annotate(
            s=Sum("points", filter=~Q(reason=R.RECYCLE_RESET)),
            reset=Sum("points", filter=Q(reason=R.RECYCLE_RESET)),
        )
    }
    for key in sorted(matches):
        contact_id, rule_id = key
        if key in known:
            worth = known[key]
        else:
            worth = expected.get(contact_id, {}).get(positions[rule_id], 0)
        have, reset = owned.get(key, (0, 0))
        delta = rule_target(worth, reset) - have
        if not delta:
            continue
        outcome.contacts.add(contact_id)
        rule = by_id[rule_id]
        if activity_caused(rule, delta):
            for unit, points in gain_split(delta, matches[key], rule):
                outcome.entries.append(
                    Entry(contact_id, rule_id, unit.pk, points, unit.occurred_at, ACTIVITY)
                )
        else:
            outcome.entries.append(
                Entry(contact_id, rule_id, None, delta, now, _clock_reason(rule))
            )
    entries_append(outcome.entries)
    return _scores_after(outcome, scores)


def _before(scope: Q, before: datetime | None) -> Q:
    """``scope`` limited to activities before ``before`` (a history replay), if given."""
    return scope if before is None else scope & Q(occurred_at__lt=before)


def _scores_after(outcome: Outcome, scores: dict[int, int]) -> Outcome:
    """Add the appended entries to the cached scores (one UPDATE); the new scores go in
    ``Outcome.scores`` for the hand-off."""
    if outcome.entries:
        deltas = outcome.delta_by_contact
        scores_add(deltas)
        outcome.scores = {c: scores.get(c, 0) + d for c, d in deltas.items()}
    return outcome


def _batch_matches(batch, rules, now) -> dict[tuple[int, int], list[Activity]]:
    """Per (contact, rule), the batch's activities that each add one counted unit of the
    rule, in time order: every match of an every-time rule, the first match of each day
    (week) of a once-per-day (week) rule — the engine's buckets, ``TruncDate`` and
    ``TruncWeek`` in the current time zone — and the first of a once-ever rule, up to the
    rule's cap; for an inactivity rule, one: the first engagement inside the rule's window
    (the one that ends the inactivity), or the first engagement if none is. The first is
    the pair's earliest match. Python over the batch's rows.

    A gain smaller than its units' worth — a day (week) counted before the batch, points
    lowered or expiring and not yet taken back by the decay tick — is dated at the
    earliest units (:func:`gain_split`): the gain itself is exact, its split early.
    """
    from .rules import activity_matches

    # Rules indexed by the activity kind they read, so each activity is checked only
    # against rules that can count it (most kinds of a batch, e.g. sends, match none).
    by_kind: dict[str, list[tuple[int, Rule]]] = defaultdict(list)
    inactive: list[tuple[int, datetime]] = []
    for r in rules:
        if r.kind == Rule.Kind.ENGAGEMENT:
            by_kind[r.activity_kind].append((r.pk, r))
        elif r.kind == Rule.Kind.NEGATIVE and r.negative == Rule.Negative.INACTIVE:
            inactive.append((r.pk, now - timedelta(days=r.inactive_days or 0)))
    found: dict[tuple[int, int], list[Activity]] = {}
    buckets: dict[tuple[int, int], set] = defaultdict(set)
    days: dict[int, date] = {}  # activity → local day (one time zone lookup per batch)
    zone = timezone.get_current_timezone()
    prefix = unsubscribe_link_prefix()
    for a in sorted(batch, key=lambda a: (a.occurred_at, a.id or 0)):
        if a.is_machine:
            continue
        for pk, r in by_kind.get(a.kind, ()):
            key = (a.contact_id, pk)
            units = found.get(key)
            if units is not None and len(units) >= _unit_limit(r):
                continue
            if not activity_matches(r, a, now=now, link_prefix=prefix):
                continue
            if r.frequency in _BUCKETED:
                day = days.get(id(a))
                if day is None:
                    day = days[id(a)] = a.occurred_at.astimezone(zone).date()
                bucket = day - timedelta(days=day.weekday()) if r.frequency == _WEEK else day
                if bucket in buckets[key]:
                    continue
                buckets[key].add(bucket)
            if units is None:
                found[key] = [a]
            else:
                units.append(a)
        if inactive and is_engagement(a.kind, a.is_machine, a.url, prefix):
            for pk, cutoff in inactive:
                key = (a.contact_id, pk)
                units = found.get(key)
                if units is None or (units[0].occurred_at < cutoff <= a.occurred_at):
                    found[key] = [a]
    return found


_WEEK = Rule.Frequency.ONCE_PER_WEEK
_BUCKETED = {Rule.Frequency.ONCE_PER_DAY, _WEEK}


def _unit_limit(rule: Rule) -> int:
    """How many units of the rule a contact can hold (its cap; one when once-ever)."""
    limit = 1 if rule.frequency == Rule.Frequency.ONCE_EVER else None
    if rule.cap:
        limit = min(limit, rule.cap) if limit else rule.cap
    return limit or 1_000_000_000


def scores_refresh(*, contact_ids: Iterable[int]) -> None:
    """Set each contact's cached score (``ContactScore``) to its ledger sum, in one UPDATE."""
    ids = list(contact_ids)
    if not ids:
        return
    total = (
        LedgerEntry.objects.filter(contact_id=OuterRef("pk"))
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("points"))
        .values("s")
    )
    ContactScore.objects.filter(pk__in=ids).update(score=Coalesce(Subquery(total), Value(0)))
