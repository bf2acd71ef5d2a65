"""Back-test ("what if"): replay the last N days under a draft rule set vs the current one.

Both rule sets are evaluated in one query over the contacts active in the window
(activities in ``[now − days, now)``; fit on today's profile), which sums each contact's
window score per rule set and returns only counts (:func:`qualified_counts`). A contact "would
have qualified" when its window score reaches the MQL threshold (and the minimum fit).
Precision compares those qualifications with what sales decided in the window: accepted
(``mql → sql``) vs rejected (``mql → recycled`` or ``disqualified``), as in METRICS.md
"MQL acceptance rate". It is an approximation by design: decay inside the window and
earlier recycle resets are not replayed.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Case, Count, Exists, Max, OuterRef, Q, Value, When
from django.db.models.lookups import LessThan
from django.utils import timezone

from crm.models import Activity, Contact, LifecycleTransition, Stage
from crm.models.activities import engagement_q
from crm.models.choices import ENGAGEMENT_KINDS

from . import backtest_sql, engine
from .models import Rule, ScoringSettings
from .rules import active_from_parse, activity_q, fit_q, in_force, rule_errors
from .services import RULE_FIELDS

MAX_DAYS = 365
# Taken as sent; ``campaign`` (an id) and ``active_from`` (ISO text) are converted apart.
RULE_INPUT_FIELDS = [f for f in RULE_FIELDS if f not in ("campaign", "active_from")]


@dataclass
class Side:
    mqls: int
    accepted: int
    rejected: int

    @property
    def precision(self) -> float | None:
        decided = self.accepted + self.rejected
        return round(self.accepted / decided, 3) if decided else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mqls": self.mqls,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "precision": self.precision,
        }


def draft_rules_from(items: list[dict[str, Any]]) -> list[Rule]:
    """Unsaved rules from API/UI input; raises ``ValidationError`` listing each bad rule."""
    if not isinstance(items, list) or len(items) > 200:
        raise ValidationError({"rules": ["Send a list of at most 200 rules."]})
    rules, errors = [], {}
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            errors[f"rules[{i}]"] = ["Each rule must be an object."]
            continue
        problems = {k: " ".join(v) for k, v in rule_errors(raw).items()}
        try:
            # As the rule endpoint reads it: a draft replays as the saved rule would score.
            active_from = active_from_parse(raw.get("active_from"))
        except ValueError as exc:
            problems["active_from"] = str(exc)
        if problems:
            errors[f"rules[{i}]"] = [f"{k}: {v}" for k, v in problems.items()]
            continue
        data = {k: raw[k] for k in RULE_INPUT_FIELDS if k in raw and raw[k] is not None}
        data.setdefault("name", f"draft {i + 1}")
        rule = Rule(**data, campaign_id=raw.get("campaign") or None, active_from=active_from)
        if rule.enabled:
            rules.append(rule)
    if errors:
        raise ValidationError(errors)
    return rules


def backtest_run(*, draft: list[Rule], days: int, now=None) -> dict[str, Any]:
    """MQLs and precision under ``draft`` and under the enabled rules, side by side."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError({"days": [f"Use a whole number of days from 1 to {MAX_DAYS}."]})
    now = now or timezone.now()
    since = now - timedelta(days=days)
    conf = ScoringSettings.load()
    counts = qualified_counts(
        sides={"draft": draft, "current": engine.rules_enabled()},
        since=since,
        now=now,
        threshold=conf.mql_threshold,
        min_fit=conf.min_fit,
    )
    accepted = LifecycleTransition.objects.in_period(since, now).filter(
        from_stage=Stage.MQL, to_stage=Stage.SQL, contact_id=OuterRef("contact_id")
    )
    decided = (
        LifecycleTransition.objects.in_period(since, now)
        .filter(from_stage=Stage.MQL)
        .aggregate(
            accepted=Count("contact_id", distinct=True, filter=Q(to_stage=Stage.SQL)),
            rejected=Count(
                "contact_id", distinct=True, filter=Q(to_stage__in=REJECTED) & ~Exists(accepted)
            ),
        )
    )
    return {
        "days": days,
        "start": since.isoformat(),
        "end": now.isoformat(),
        "threshold": conf.mql_threshold,
        "contacts_evaluated": counts["evaluated"],
        "decided": {"accepted": decided["accepted"], "rejected": decided["rejected"]},
        "draft": Side(*(counts[f"draft_{k}"] for k in SIDE_COUNTS)).as_dict(),
        "current": Side(*(counts[f"current_{k}"] for k in SIDE_COUNTS)).as_dict(),
    }


def qualified_counts(
    *,
    sides: dict[str, list[Rule]],
    since: datetime,
    now: datetime,
    threshold: int,
    min_fit: int | None,
) -> dict[str, int]:
    """``evaluated`` and, per side, ``<side>_mqls``/``_accepted``/``_rejected``: one query.

    The contacts evaluated are the ones :func:`engine.expected_values` gives for the
    window with all the sides' rules: every contact with an activity in it when some rule
    reads the profile (fit, unsubscribed, hard bounce) or inactivity, otherwise those with
    an activity of a kind an engagement rule reads. A contact's window score on a side is
    the sum of that side's rule values (the values ``expected_values`` gives), summed in
    SQL rather than read per rule: ``c`` holds a row per contact with a 0/1 column per
    distinct profile condition (fit, email status, created before an inactivity cut-off),
    ``a`` one aggregate row per contact over the window's activities (engagement points
    through :func:`engine.rule_value_expression`, the latest engagement and the
    inactivity points it implies), ``d`` sales' decisions in the window. Memory and
    transfer stay a handful of integers whatever the number of contacts; the database
    does one pass over the window's activities, as before. (Counting days and weeks
    without ``COUNT(DISTINCT …)``, by grouping per contact, week and day first, was
    tried: on the benchmark data a contact has ~1.2 activities per active day, so the
    extra level costs more than the sorts it saves.) On PostgreSQL ``a`` comes from
    :func:`backtest_sql.window_aggregate` instead: the same columns from an aggregate
    that runs in parallel workers (days and weeks as bit strings), over every activity
    of the window when every active contact is evaluated, so that it also gives the
    contacts evaluated (``c`` is then every contact, inner-joined to ``a``).
    """
    # A rule not in force at the window's end counts nothing, as in scoring itself.
    sides = {s: [r for r in rs if in_force(r, now)] for s, rs in sides.items()}
    rules = [r for rs in sides.values() for r in rs]
    counts = {"evaluated": 0} | {f"{s}_{k}": 0 for s in sides for k in SIDE_COUNTS}
    if not rules:
        return counts
    window = Q(occurred_at__gte=since, occurred_at__lt=now)
    engagement = {s: [r for r in rs if r.kind == Rule.Kind.ENGAGEMENT] for s, rs in sides.items()}
    inactive = {s: [r for r in rs if _is_inactive(r)] for s, rs in sides.items()}
    flags = {s: [r for r in rs if engine.is_flag(r)] for s, rs in sides.items()}
    every_active = any(flags.values()) or any(inactive.values())

    # c: one row per contact, a 0/1 column per distinct profile condition of either side
    # (a draft is mostly the current rules: each condition is evaluated once per contact).
    c_cols: dict[str, Any] = {}
    c_names: dict[Any, str] = {}

    def c_col(key, cond) -> str:
        if key not in c_names:
            c_names[key] = f"f{len(c_names)}"
            c_cols[c_names[key]] = Case(When(cond, then=Value(1)), default=Value(0))
        return "c." + qn(c_names[key])

    # a: one aggregate row per contact over the window's activities of the kinds the
    # rules read. The window is the aggregate's WHERE, so the rules' own conditions need
    # not repeat it.
    a_cols: dict[str, Any] = {}
    if any(inactive.values()):
        a_cols["engaged"] = Max("occurred_at", filter=engagement_q())
    points: dict[str, dict[str, list[str]]] = {}  # side → part → SQL terms
    for s in sides:
        points[s] = {"fit": [], "email": [], "idle": []}
        for r in flags[s]:
            col = c_col(fit_q(r), fit_q(r))
            points[s]["fit" if r.kind == Rule.Kind.FIT else "email"].append(
                f"{int(r.points)} * {col}"
            )
        for r in inactive[s]:
            cutoff = _inactive_cutoff(r, now)
            col = c_col(("created_before", cutoff), Q(created_at__lt=cutoff))
            points[s]["idle"].append(f"{int(r.points)} * {col}")
        if inactive[s]:
            a_cols[f"idle_{s}"] = _points_sum(
                (LessThan(a_cols["engaged"], _inactive_cutoff(r, now)), r.points)
                for r in inactive[s]
            )
        if engagement[s]:
            values = [
                engine.rule_value_expression(r, q=activity_q(r, now=now), now=now, since=since)
                for r in engagement[s]
            ]
            a_cols[f"eng_{s}"] = sum(values[1:], values[0])

    kinds = {r.activity_kind for rs in engagement.values() for r in rs}
    if "engaged" in a_cols:
        kinds |= set(ENGAGEMENT_KINDS)
    contacts = Contact.objects.order_by()
    fast = backtest_sql.supported()
    if fast:
        # One parallel aggregate over the window gives both the evaluated contacts (every
        # contact with an activity in it, or with one of the kinds the rules read) and
        # their engagement columns (see backtest_sql).
        a_sql, a_params = backtest_sql.window_aggregate(
            engagement=engagement,
            inactive=inactive,
            since=since,
            now=now,
            kinds=None if every_active else sorted(kinds),
        )
        a_join = "INNER JOIN"
    else:
        if every_active:
            contacts = contacts.filter(pk__in=Activity.objects.filter(window).values("contact_id"))
        a_sql, a_params = (
            Activity.objects.filter(window, kind__in=sorted(kinds))
            .order_by()
            .values("contact_id")
            .annotate(**a_cols)
            .values("contact_id", *a_cols)
            .query.sql_with_params()
            if a_cols
            else ("", [])
        )
        a_join = "LEFT JOIN" if every_active else "INNER JOIN"
    c_sql, c_params = contacts.annotate(**c_cols).values("pk", *c_cols).query.sql_with_params()
    sql_from, params_from = "c", []
    if a_sql:
        sql_from += f" {a_join} ({a_sql}) a ON a.{qn('contact_id')} = c.{qn('pk')}"
        params_from += a_params

    # d: sales' decisions in the window, one row per decided contact.
    d_sql, d_params = (
        LifecycleTransition.objects.in_period(since, now)
        .filter(from_stage=Stage.MQL)
        .order_by()
        .values("contact_id")
        .annotate(
            acc=Max(Case(When(to_stage=Stage.SQL, then=Value(1)), default=Value(0))),
            rej=Max(Case(When(to_stage__in=REJECTED, then=Value(1)), default=Value(0))),
        )
        .values("contact_id", "acc", "rej")
        .query.sql_with_params()
    )
    sql_from += f" LEFT JOIN ({d_sql}) d ON d.{qn('contact_id')} = c.{qn('pk')}"
    params_from += d_params

    selects, params = [], []
    for s in sides:
        terms = points[s]["fit"] + points[s]["email"]
        if engagement[s]:
            terms.append(f"COALESCE(a.{qn('eng_' + s)}, 0)")
        if inactive[s]:
            idle = " + ".join(points[s]["idle"])
            terms.append(
                f"CASE WHEN a.{qn('engaged')} IS NULL THEN {idle} ELSE a.{qn('idle_' + s)} END"
            )
        ok, ok_params = f"({' + '.join(terms) or '0'}) >= %s", [threshold]
        if min_fit is not None:
            ok, ok_params = (
                f"{ok} AND ({' + '.join(points[s]['fit']) or '0'}) >= %s",
                [*ok_params, min_fit],
            )
        selects.append(f"CASE WHEN {ok} THEN 1 ELSE 0 END")
        params += ok_params
    # The rows are the combinations (qualifies per side, accepted, rejected) with their
    # number of contacts, at most 16. ``c`` is MATERIALIZED (PostgreSQL 12+, SQLite 3.35+)
    # so that its conditions are evaluated once per contact rather than inlined in each
    # side's sum. Only compiled ORM SQL, quoted aliases, integer points and placeholders
    # are interpolated.
    sql = (
        f"WITH c AS MATERIALIZED ({c_sql}) "  # noqa: S608
        f"SELECT {', '.join(selects)}, d.{qn('acc')}, d.{qn('rej')}, COUNT(*) "
        f"FROM {sql_from} GROUP BY {', '.join(str(i + 1) for i in range(len(sides) + 2))}"
    )
    # The fast path's planner settings are local to a transaction (no savepoint: a
    # failed read fails the enclosing transaction anyway).
    in_transaction = transaction.atomic(savepoint=False) if fast else nullcontext()
    with in_transaction, connection.cursor() as cursor:
        if fast:
            backtest_sql.planner_settings(cursor)
        cursor.execute(sql, [*c_params, *params, *params_from])
        rows = cursor.fetchall()
    for *ok, acc, rej, n in rows:
        counts["evaluated"] += n
        for s, qualifies in zip(sides, ok, strict=True):
            if qualifies:
                counts[f"{s}_mqls"] += n
                counts[f"{s}_accepted"] += n if acc else 0
                counts[f"{s}_rejected"] += n if rej and not acc else 0
    return counts


REJECTED = [Stage.RECYCLED, Stage.DISQUALIFIED]
SIDE_COUNTS = ("mqls", "accepted", "rejected")


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _is_inactive(rule: Rule) -> bool:
    return rule.kind == Rule.Kind.NEGATIVE and rule.negative == Rule.Negative.INACTIVE


def _inactive_cutoff(rule: Rule, now: datetime) -> datetime:
    return now - timedelta(days=rule.inactive_days or 0)


def _points_sum(items):
    """Σ points of the conditions a contact meets, as one expression."""
    terms = [Case(When(q, then=Value(points)), default=Value(0)) for q, points in items]
    return sum(terms[1:], terms[0])
