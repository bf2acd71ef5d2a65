"""Per-batch upkeep of the daily rollups and step facts: signed count deltas, set-based.

Ingestion runs this inside its transaction for every 1,000-activity batch (issue 3), so it
never recomputes a day from raw data (that is ``rollups_rebuild``/``facts_rebuild`` and the
daily reconciliation, which must agree with it). A batch becomes signed deltas per email
(contact, message id, campaign; see reports.models):

* sends and social reactions count per event (+1);
* only an email's *first* event of a kind counts (METRICS.md lines 19–31), on the day of
  that event: for the emails the batch touches one query reads each fact's earliest time
  before the batch. No earlier one: +1 on the batch event's day; an out-of-order batch
  event earlier than the stored first moves it (−1 on the old day, +1 on the new);
* only clicks that count are clicks (``crm.models.activities.click_q``: not a machine's,
  not on the unsubscribe link), here and in the conversions;
* an email converts when any of its clicks is followed by the campaign's goal action
  within the window (METRICS.md line 31), counted on the day of its first converting
  click: compared before and after the batch, for emails the batch clicked or whose
  contact did a goal action in the batch after a click.

The per-email deltas are computed once and summed into both ``EmailDaily`` (day × campaign
× source) and, for emails that are nurture sends (``EmailSend.message_id`` → step),
``EmailStepDaily`` (× step). Stage changes add +1 entries to ``StageDaily``. Rows get their
deltas through one portable upsert per table (:func:`counts_upsert`).
"""

from __future__ import annotations

from collections import Counter
from datetime import date

from django.db import connection
from django.db.models import BooleanField, Case, Exists, Min, Q, Value, When
from django.db.models.functions import Coalesce

from crm.models import Activity, ActivityKind, Campaign, Contact
from crm.models.activities import (
    CONVERSION_WINDOW,
    click_q,
    goal_actions_after,
    is_click,
    open_q,
    unsubscribe_link_prefix,
)

from .fact_writes import _in, _pg, counts_upsert, pg_array
from .models import EmailDaily, EmailStepDaily, StageDaily
from .query import site_tz
from .rollups import COUNTED_KINDS, EMAIL_COUNT_FIELDS, FIRST_EVENT_KINDS, STEP_FIELDS

K = ActivityKind
EmailKey = tuple[int, str, int]  # contact, message id ("" = none), campaign (0 = none)
# (day, campaign, contact, message id, field) → signed count
DeltaKey = tuple[date, int, int, str, str]
EMAIL_KEY = ["day", "campaign_id", "source", "step_id"]
STAGE_KEY = ["day", "from_stage", "to_stage", "source", "campaign_id"]


def _facts() -> dict[str, Q]:
    """Per-email first-event facts as filters (mirror rollups.email_fact_aggregates and
    _facts_of below; METRICS.md lines 19–31); built per call, as the click filter reads
    the site's URL from the settings."""
    return {
        "bounced": Q(kind=K.EMAIL_BOUNCED),
        "hard_bounced": Q(kind=K.EMAIL_BOUNCED, details__bounce_type="hard"),
        "unique_opens": open_q(),
        "machine_opens": Q(kind=K.EMAIL_OPENED, is_machine=True),
        "unique_clicks": click_q(),
        "unsubscribed": Q(kind=K.EMAIL_UNSUBSCRIBED),  # either scope (rollups' docstring)
        "complaints": Q(kind=K.EMAIL_COMPLAINED),
    }


def _facts_of(a, prefix: str) -> tuple[str, ...]:
    """The first-event facts a batch activity is an event of (the :func:`_facts` filters
    in Python; ``prefix``: the unsubscribe links' start)."""
    kind = a.kind
    if kind == K.EMAIL_OPENED:
        return ("machine_opens",) if a.is_machine else ("unique_opens",)
    if kind == K.EMAIL_CLICKED:
        # a click implies an open; a machine's click or the unsubscribe link's is neither
        counts = is_click(kind, a.is_machine, a.url, prefix)
        return ("unique_opens", "unique_clicks") if counts else ()
    if kind == K.EMAIL_BOUNCED:
        hard = isinstance(a.details, dict) and a.details.get("bounce_type") == "hard"
        return ("bounced", "hard_bounced") if hard else ("bounced",)
    if kind == K.EMAIL_UNSUBSCRIBED:
        return ("unsubscribed",)
    if kind == K.EMAIL_COMPLAINED:
        return ("complaints",)
    return ()


STEP_FIELD_SET = frozenset(STEP_FIELDS)


def _local_day(dt) -> date:
    return dt.astimezone(site_tz()).date()


def upkeep_apply_activities(
    *,
    activities,
    email_rollup: bool = True,
    step_facts: bool = True,
    unapplied: frozenset[int] = frozenset(),
) -> None:
    """Bring ``EmailDaily`` and/or ``EmailStepDaily`` up to date with a stored batch.

    ``unapplied``: ids of stored activities of batches still queued (see
    ``crm.events.ActivitiesRecorded``): the deltas compare the batch with the activities
    applied before it, so those are read as if not stored yet.

    Queries: campaigns (goal actions, channels) always; then only what the batch needs:
    clicks a goal action may convert, earlier first events, goal actions in the window,
    contact sources, the batch's nurture steps, one upsert per table (+ a delete of rows a
    moved first event emptied). A batch with no email, social or goal-action kind: 1 query.
    """
    activities = list(activities)
    campaign_ids = {a.campaign_id for a in activities if a.campaign_id}
    campaigns = {
        pk: (goal, channel)
        for pk, goal, channel in Campaign.objects.filter(
            Q(pk__in=campaign_ids) | ~Q(goal_action="")
        ).values_list("pk", "goal_action", "channel")
    }
    goal_of = {pk: goal for pk, (goal, _) in campaigns.items() if goal}
    deltas: Counter = Counter()
    for a in activities:
        name = COUNTED_KINDS.get(a.kind)
        if name is not None and (email_rollup or name in STEP_FIELD_SET):
            day = _local_day(a.occurred_at)
            deltas[(day, a.campaign_id or 0, a.contact_id, a.message_id or "", name)] += 1
    email_deltas(activities, goal_of, deltas, unapplied)
    deltas = {k: n for k, n in deltas.items() if n}
    if not deltas:
        return
    channels = {pk: channel for pk, (_, channel) in campaigns.items()}
    emails: dict[tuple, Counter] = {}  # (day, campaign, contact, message id) → counts
    for (day, campaign_id, contact_id, message_id, name), n in deltas.items():
        emails.setdefault((day, campaign_id, contact_id, message_id), Counter())[name] += n
    write = _write_pg if _pg() else _write_orm
    write(emails, channels, email_rollup=email_rollup, step_facts=step_facts)


def _write_orm(emails: dict, channels: dict, *, email_rollup: bool, step_facts: bool) -> None:
    """Sum the per-email deltas into the tables' rows: sources and steps read, then one
    portable upsert per table (:func:`counts_upsert`)."""
    sources = dict(
        Contact.objects.filter(pk__in={k[2] for k in emails}).order_by().values_list("pk", "source")
    )

    def channel_of(key: tuple) -> dict:
        return {"channel": channels.get(key[1], "")}

    if email_rollup:
        rows: dict[tuple, Counter] = {}
        for (day, campaign_id, contact_id, _), counts in emails.items():
            key = (day, campaign_id, sources.get(contact_id, ""), 0)
            rows.setdefault(key, Counter()).update(counts)  # update() keeps negative counts
        counts_upsert(
            EmailDaily, key=EMAIL_KEY, rows=rows, fields=EMAIL_COUNT_FIELDS, insert=channel_of
        )
    if step_facts:
        messages = {k[3] for k, c in emails.items() if k[3] and STEP_FIELD_SET.intersection(c)}
        steps = _steps(messages) if messages else {}
        rows = {}
        for (day, campaign_id, contact_id, message_id), counts in emails.items():
            step_id = steps.get(message_id)
            if step_id is not None:
                key = (day, campaign_id, sources.get(contact_id, ""), step_id)
                row = rows.setdefault(key, Counter())
                row.update({f: n for f, n in counts.items() if f in STEP_FIELD_SET})
        counts_upsert(
            EmailStepDaily, key=EMAIL_KEY, rows=rows, fields=STEP_FIELDS, insert=channel_of
        )


def _steps(message_ids: set[str]) -> dict[str, int]:
    """Nurture step of each email that is a send (``EmailSend.message_id`` is unique)."""
    send = _send_model()
    if send is None:  # pragma: no cover - nurture not installed
        return {}
    return dict(
        send.objects.filter(message_id__in=message_ids, step__isnull=False)
        .order_by()
        .values_list("message_id", "step_id")
    )


def _send_model():
    try:
        from nurture.models import EmailSend
    except ImportError:  # pragma: no cover - nurture not installed
        return None
    return EmailSend


def _write_pg(emails: dict, channels: dict, *, email_rollup: bool, step_facts: bool) -> None:
    """PostgreSQL: one statement for both tables. The batch's per-email deltas go in as a
    few array literals (:func:`pg_array`), joined once to the contacts' sources; a
    data-modifying CTE per table sums them into its rows (``ON CONFLICT … DO UPDATE SET
    f = f + excluded.f``, in key order), the step table through the sends' steps, and
    returns the rows left with no count (a moved first event), deleted in a second query
    only when there are any. The ORM path's ``__in`` lists and multi-row VALUES build and
    parse one placeholder per value in Python (most of the handler's CPU, profiled)."""
    fields = [f for f in EMAIL_COUNT_FIELDS if any(c.get(f) for c in emails.values())]
    tables = []
    if email_rollup:
        tables.append((EmailDaily, EMAIL_COUNT_FIELDS, "0", ""))
    send = _send_model() if step_facts else None
    if send is not None and STEP_FIELD_SET.intersection(fields):
        join = (
            f"JOIN {send._meta.db_table} s ON s.message_id = t.message_id "
            "AND s.step_id IS NOT NULL WHERE t.message_id <> '' "
        )
        tables.append((EmailStepDaily, STEP_FIELDS, "s.step_id", join))
    if not tables:
        return
    keys = list(emails)
    days, campaigns, contacts, messages = zip(*keys, strict=True)
    params = [
        pg_array(days),
        pg_array(campaigns),
        pg_array(contacts),
        pg_array(messages, text=True),
        pg_array([channels.get(c, "") for c in campaigns], text=True),
        *(pg_array([c.get(f, 0) for c in emails.values()]) for f in fields),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_pg_upsert_sql(fields, tables), params)
        emptied = cursor.fetchall()
    for i, (model, table_fields, _, _) in enumerate(tables):
        ids = [pk for n, pk in emptied if n == i]
        if ids:  # a rebuild would not have them (see counts_upsert)
            model.objects.filter(pk__in=ids, **dict.fromkeys(table_fields, 0)).delete()


def _pg_upsert_sql(fields: list[str], tables: list[tuple]) -> str:
    """The statement of :func:`_write_pg` for the batch's ``fields`` (others add 0).
    Identifiers come from the models and module constants; values are parameters."""
    columns = ", ".join(fields)
    ctes = [
        "WITH t AS (SELECT t.day, t.campaign_id, COALESCE(c.source, '') AS source, "  # noqa: S608
        f"t.message_id, t.channel, {columns} FROM unnest(%s::date[], %s::bigint[], "
        "%s::bigint[], %s::text[], %s::text[], "
        + ", ".join(["%s::int[]"] * len(fields))
        + f") AS t(day, campaign_id, contact_id, message_id, channel, {columns}) "
        f"LEFT JOIN {Contact._meta.db_table} c ON c.id = t.contact_id)"
    ]
    selects = []
    for i, (model, table_fields, step, join) in enumerate(tables):
        used = [f for f in fields if f in table_fields]
        sums = ", ".join(f"SUM(t.{f})" if f in used else "0" for f in table_fields)
        ctes.append(
            f"u{i} AS (INSERT INTO {model._meta.db_table} AS r "  # noqa: S608
            f"(day, campaign_id, source, step_id, channel, {', '.join(table_fields)}) "
            f"SELECT t.day, t.campaign_id, t.source, {step}, t.channel, {sums} FROM t {join}"
            "GROUP BY 1, 2, 3, 4, 5 HAVING "
            + " OR ".join(f"SUM(t.{f}) <> 0" for f in used)
            + " ORDER BY 1, 2, 3, 4 ON CONFLICT (day, campaign_id, source, step_id) "
            "DO UPDATE SET "
            + ", ".join(f"{f} = r.{f} + excluded.{f}" for f in used)
            + " RETURNING r.id, "
            + " AND ".join(f"r.{f} = 0" for f in table_fields)
            + " AS empty)"
        )
        selects.append(f"SELECT {i}, id FROM u{i} WHERE empty")  # noqa: S608
    return ", ".join(ctes) + " " + " UNION ALL ".join(selects)


def email_deltas(
    activities: list, goal_of: dict[int, str], deltas: Counter, unapplied=frozenset()
) -> None:
    """Add to ``deltas`` the first-event and conversion changes of the batch (see module);
    activities in ``unapplied`` count as not stored yet."""

    def add(day: date, key: EmailKey, name: str, n: int) -> None:
        deltas[(day, key[2], key[0], key[1], name)] += n

    prefix = unsubscribe_link_prefix()
    batch_first: dict[EmailKey, dict[str, object]] = {}
    for a in activities:
        names = _facts_of(a, prefix) if a.kind in FIRST_EVENT_KINDS else ()
        if names:
            facts = batch_first.setdefault(
                (a.contact_id, a.message_id or "", a.campaign_id or 0), {}
            )
            for name in names:
                if name not in facts or a.occurred_at < facts[name]:
                    facts[name] = a.occurred_at
    goal_kinds = set(goal_of.values())
    goals = [a for a in activities if a.kind in goal_kinds]
    # emails whose conversion may change: a click of the batch, or a goal action after a
    # stored click
    converting: set[EmailKey] = {
        k for k, facts in batch_first.items() if "unique_clicks" in facts and k[2] in goal_of
    }
    batch_ids = {a.pk for a in activities if a.pk is not None}
    hidden = batch_ids | unapplied  # left out of "before the batch"
    if goals:
        converting |= _clicks_before_goals(goals, goal_of, hidden)
    if batch_first:
        before = _firsts_before(set(batch_first), hidden)
        for key, facts in batch_first.items():
            old = before.get(key, {})
            for name, first in facts.items():
                was = old.get(name)
                if was is None or first < was:
                    if was is not None:
                        add(_local_day(was), key, name, -1)
                    add(_local_day(first), key, name, 1)
    if converting:
        for key, (was, now) in _converting_clicks(converting, batch_ids, unapplied).items():
            if was != now:
                if was is not None:
                    add(_local_day(was), key, "conversions", -1)
                if now is not None:
                    add(_local_day(now), key, "conversions", 1)


def _converting_clicks(keys: set[EmailKey], batch_ids: set[int], unapplied) -> dict:
    """Each email's first converting click (rollups.email_fact_aggregates: a click that
    counts, followed by the goal action within the window) before the batch and with it,
    as email → (before, now), None for none; activities still queued (``unapplied``) are
    left out of both.

    One query: the emails' activities, a click with whether a goal action follows it with
    and without the batch's (a CASE, so only clicks probe). Found as :func:`_firsts_before`
    finds them, with no kind filter (the click rule is applied here, in Python), which
    would tempt the planner into AND-ing the large activity_kind_time bitmap.
    """

    def goal_follows(left_out) -> Case:
        return Case(
            When(kind=K.EMAIL_CLICKED, then=Exists(after.exclude(_in("id", left_out)))),
            default=Value(False),
            output_field=BooleanField(),
        )

    after = goal_actions_after()
    prefix = unsubscribe_link_prefix()
    with_id = {k[1] for k in keys if k[1]}
    without_id = {k[0] for k in keys if not k[1]}
    rows = (
        Activity.objects.filter(
            (_in("message_id", with_id, "text") & ~Q(message_id=""))
            | (Q(message_id="") & _in("contact_id", without_id))
        )
        .exclude(_in("id", unapplied))
        .annotate(
            camp0=Coalesce("campaign_id", Value(0)),
            goal_now=goal_follows(unapplied),
            goal_before=goal_follows(batch_ids | unapplied),
        )
        .values_list(
            "contact_id",
            "message_id",
            "camp0",
            "occurred_at",
            "id",
            "kind",
            "is_machine",
            "url",
            "goal_now",
            "goal_before",
        )
        .order_by()
    )
    was: dict[EmailKey, object] = {}
    now: dict[EmailKey, object] = {}
    for contact_id, message_id, camp0, at, pk, kind, machine, url, goal_now, goal_before in rows:
        key = (contact_id, message_id, camp0)
        if key not in keys or not is_click(kind, machine, url, prefix):
            continue
        if goal_now and (key not in now or at < now[key]):
            now[key] = at
        if goal_before and pk not in batch_ids and (key not in was or at < was[key]):
            was[key] = at
    return {key: (was.get(key), now.get(key)) for key in keys}


def _clicks_before_goals(goals: list, goal_of: dict[int, str], hidden: set[int]) -> set[EmailKey]:
    """The emails with a stored click a batch goal action may convert (its contact, a
    campaign with that goal, within the window before it), leaving out ``hidden`` (the
    batch, activities still queued): which goal contacts clicked (index only), then, if
    any, one query for their clicked emails. Candidates only: :func:`_converting_clicks`
    applies the click rule (machine and unsubscribe-link clicks)."""
    done = {g.kind for g in goals}
    campaign_ids = [c for c, kind in goal_of.items() if kind in done]
    window = {
        "kind": K.EMAIL_CLICKED,
        "campaign_id__in": campaign_ids,
        "occurred_at__gte": min(g.occurred_at for g in goals) - CONVERSION_WINDOW,
        "occurred_at__lte": max(g.occurred_at for g in goals),
    }
    # First which goal contacts clicked at all: every column it reads is in the
    # activity_campaign_contact index (the contact included), so it is an index-only scan
    # of the window's clicks. Asked together with the rows' message ids, the planner
    # fetched the heap row of every click of those campaigns in the window to test its
    # contact (3,700 rows, 3,000 pages, 34 ms warm / 400 ms cold at 1M), for one or none.
    clicked = _goal_contacts_clicked({g.contact_id for g in goals}, window)
    if not clicked:
        return set()
    if _pg():
        return _pg_clicks_before_goals(clicked, window, hidden)
    return set(
        Activity.objects.filter(_in("contact_id", clicked), **window)
        .exclude(_in("id", hidden))
        .order_by()
        .values_list("contact_id", "message_id", "campaign_id")
        .distinct()
    )


# _clicks_before_goals' first question as one statement with binary array parameters on
# PostgreSQL: compiling it through the ORM cost more Python (~3 ms) than it runs.
_PG_GOAL_CLICKERS = (
    f"SELECT DISTINCT contact_id FROM {Activity._meta.db_table} "  # noqa: S608
    "WHERE contact_id = ANY(%b::bigint[]) AND kind = %b AND campaign_id = ANY(%b::bigint[]) "
    "AND occurred_at >= %b AND occurred_at <= %b"
)


def _goal_contacts_clicked(contact_ids: set[int], window: dict) -> set[int]:
    """Which of these contacts clicked in the window's campaigns and period."""
    if not contact_ids or not window["campaign_id__in"]:
        return set()
    if not _pg():
        return set(
            Activity.objects.filter(contact_id__in=contact_ids, **window)
            .order_by()
            .values_list("contact_id", flat=True)
            .distinct()
        )
    from crm.ingest import _pg_cursor  # binary array parameters, see there

    with _pg_cursor() as cursor:
        cursor.execute(
            _PG_GOAL_CLICKERS,
            [
                list(contact_ids),
                str(window["kind"]),
                list(window["campaign_id__in"]),
                window["occurred_at__gte"],
                window["occurred_at__lte"],
            ],
        )
        return {row[0] for row in cursor.fetchall()}


# The ORM query of _clicks_before_goals as one statement with binary array parameters
# (PostgreSQL), as _PG_GOAL_CLICKERS.
_PG_GOAL_CLICKS = (
    "SELECT DISTINCT contact_id, message_id, campaign_id "  # noqa: S608
    f"FROM {Activity._meta.db_table} "
    "WHERE contact_id = ANY(%b::bigint[]) AND kind = %b "
    "AND campaign_id = ANY(%b::bigint[]) AND occurred_at >= %b AND occurred_at <= %b "
    "AND NOT id = ANY(%b::bigint[])"
)


def _pg_clicks_before_goals(clicked: set[int], window: dict, hidden: set[int]) -> set[EmailKey]:
    from crm.ingest import _pg_cursor  # binary array parameters, see there

    with _pg_cursor() as cursor:
        cursor.execute(
            _PG_GOAL_CLICKS,
            [
                list(clicked),
                str(window["kind"]),
                list(window["campaign_id__in"]),
                window["occurred_at__gte"],
                window["occurred_at__lte"],
                list(hidden),
            ],
        )
        return {(c, m, camp) for c, m, camp in cursor.fetchall()}


def _firsts_before(keys: set[EmailKey], hidden: set[int]) -> dict[EmailKey, dict]:
    """Each fact's earliest time per email, leaving out ``hidden`` (the batch and the
    activities still queued): one grouped query.

    Emails with a message id are found through the partial activity_message index, the
    others through their contact; no kind filter (the aggregates filter), which would tempt
    the planner into AND-ing the large activity_kind_time bitmap.
    """
    with_id = {k[1] for k in keys if k[1]}
    without_id = {k[0] for k in keys if not k[1]}
    found = {}
    for row in (
        Activity.objects.filter(
            (_in("message_id", with_id, "text") & ~Q(message_id=""))
            | (Q(message_id="") & _in("contact_id", without_id))
        )
        .exclude(_in("id", hidden))
        .annotate(camp0=Coalesce("campaign_id", Value(0)))
        .values("contact_id", "message_id", "camp0")
        .annotate(**{name: Min("occurred_at", filter=q) for name, q in _facts().items()})
        .order_by()
    ):
        key = (row["contact_id"], row["message_id"], row["camp0"])
        if key in keys:
            found[key] = row
    return found


def upkeep_apply_transitions(*, transitions) -> None:
    """Add the transitions' entries to ``StageDaily`` (day × from → to × source × acquiring
    campaign, the contact's as it stands now, like a rebuild): one upsert joining the
    contacts on PostgreSQL, contacts + upsert elsewhere."""
    transitions = list(transitions)
    if not transitions:
        return
    if _pg():
        params = [
            pg_array([_local_day(t.at) for t in transitions]),
            pg_array([t.from_stage or "" for t in transitions], text=True),
            pg_array([t.to_stage for t in transitions], text=True),
            pg_array([t.contact_id for t in transitions]),
        ]
        with connection.cursor() as cursor:
            cursor.execute(_PG_STAGE_UPSERT, params)
        return
    contacts = {
        pk: (source, campaign_id or 0)
        for pk, source, campaign_id in Contact.objects.filter(
            pk__in={t.contact_id for t in transitions}
        )
        .order_by()
        .values_list("pk", "source", "acquired_by_id")
    }
    rows: dict[tuple, Counter] = {}
    for t in transitions:
        source, campaign_id = contacts.get(t.contact_id, ("", 0))
        key = (_local_day(t.at), t.from_stage or "", t.to_stage, source, campaign_id)
        rows.setdefault(key, Counter())["entries"] += 1
    counts_upsert(StageDaily, key=STAGE_KEY, rows=rows, fields=["entries"])


# PostgreSQL: the transitions as arrays, the contacts' source and acquiring campaign joined.
_PG_STAGE_UPSERT = (
    f"INSERT INTO {StageDaily._meta.db_table} AS r "  # noqa: S608
    "(day, from_stage, to_stage, source, campaign_id, entries) "
    "SELECT t.day, t.from_stage, t.to_stage, COALESCE(c.source, ''), "
    f"COALESCE(c.{Contact._meta.get_field('acquired_by').column}, 0), COUNT(*) "
    "FROM unnest(%s::date[], %s::text[], %s::text[], %s::bigint[]) "
    "AS t(day, from_stage, to_stage, contact_id) "
    f"LEFT JOIN {Contact._meta.db_table} c ON c.id = t.contact_id "
    "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 "
    "ON CONFLICT (day, from_stage, to_stage, source, campaign_id) "
    "DO UPDATE SET entries = r.entries + excluded.entries"
)
