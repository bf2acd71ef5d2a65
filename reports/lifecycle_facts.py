"""Keeping the lifecycle facts current: ``TransitionFact`` and (through
``reports.transition_credits``) ``TransitionCredit``.

Both are pure functions of the raw data (transitions, contacts, campaign touches), so each
upkeep step recomputes the facts of a small set of contacts or transitions from raw data
and replaces them (idempotent; safe to run twice or out of order):

* a stage change recomputes the ``TransitionFact`` rows of its contacts (a new entry moves
  the neighbours' ``prev_same_at``/``next_at``) and the credits of the new transitions;
* an activity batch with campaign touches recomputes the credits of the transitions at or
  after a touch of the same contact (normally none, or those the batch just caused:
  a late or back-dated touch changes the touches of later changes);
* landing-page visits and submissions recompute their url × contact rows of
  ``LandingVisitFact`` (reports.landing_facts);
* engagement and stage changes of ever-recycled contacts recompute their
  ``ReopenedDayFact`` rows (reports.reopened_facts);
* ``lifecycle_facts_rebuild`` recomputes everything in contact chunks (demo seeding,
  migrations), ``lifecycle_facts_reconcile`` one day (reports.tasks.reconcile_rollups).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, timedelta

from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDate

from crm.models import Activity, Contact, Deal, LifecycleTransition, Stage
from crm.models.choices import ENGAGEMENT_KINDS, FUNNEL_STAGES

from .cohort_facts import cohort_apply, cohort_rebuild, cohort_reconcile, firsts_of, firsts_stored
from .credit_facts import credit_daily_apply, credit_facts_reconcile, credit_rows_delete
from .drop_facts import drops_apply, drops_of, drops_rebuild, drops_reconcile, drops_stored
from .fact_writes import facts_insert
from .landing_facts import (
    LANDING_KINDS,
    landing_facts_apply_activities,
    landing_facts_rebuild,
    landing_facts_snapshot,
)
from .models import LeadScoreMonth, NewLeadDaily, TransitionCredit, TransitionFact
from .query import day_start, site_tz
from .reopened_facts import (
    reopened_facts_apply_activities,
    reopened_facts_apply_transitions,
    reopened_facts_rebuild,
    reopened_facts_snapshot,
)
from .score_facts import (
    lead_scores_apply_activities,
    lead_scores_apply_transitions,
    lead_scores_freeze,
    lead_scores_rebuild,
    lead_scores_reconcile,
)
from .transition_credits import CREDIT_STAGES, transition_credits_refresh

log = logging.getLogger(__name__)

NEXT_STAGE = {str(a): str(b) for a, b in zip(FUNNEL_STAGES, FUNNEL_STAGES[1:], strict=False)}
PREV_STAGE = {b: a for a, b in NEXT_STAGE.items()}
CHUNK = 2000  # contacts or transitions per statement (SQLite's bound-parameter limit)


def _chunks(items, size=CHUNK):
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- TransitionFact ----------------------------------------------------------------------


FACT_FIELDS = (
    "transition",
    "contact",
    "to_stage",
    "at",
    "prev_same_at",
    "next_at",
    "lead_at",
    "next_us",
    "lead_us",
    "from_stage",
    "prev_pair_at",
)
US = timedelta(microseconds=1)


def _fact(pk, contact_id, from_stage, stage, at, prev_same_at, next_at, lead_at, prev_pair_at):
    """A :data:`FACT_FIELDS` row; the durations in whole microseconds (exact)."""
    return (
        pk,
        contact_id,
        stage,
        at,
        prev_same_at,
        next_at,
        lead_at,
        None if next_at is None else (next_at - at) // US,
        None if lead_at is None else (at - lead_at) // US,
        from_stage,
        prev_pair_at,
    )


def _facts_for_contacts(contact_ids) -> list[tuple]:
    """The TransitionFact rows (:data:`FACT_FIELDS`) of every transition of these contacts,
    from raw data."""
    return _facts_and_created(contact_ids)[0]


def _facts_and_created(contact_ids) -> tuple[list[tuple], dict]:
    """:func:`_facts_for_contacts`, and contact → (created_at, created_suppressed)."""
    rows = list(
        LifecycleTransition.objects.filter(contact_id__in=contact_ids)
        .order_by("contact_id", "at", "id")
        .values_list("id", "contact_id", "to_stage", "at", "from_stage")
    )
    created = {
        pk: (created_at, suppressed)
        for pk, created_at, suppressed in Contact.objects.filter(pk__in=contact_ids).values_list(
            "pk", "created_at", "created_suppressed"
        )
    }
    by_contact: dict[int, list] = defaultdict(list)
    for r in rows:
        by_contact[r[1]].append(r)
    out = []
    for contact_id, ts in by_contact.items():
        created_at, suppressed = created.get(contact_id, (None, True))
        last_of: dict[str, object] = {}
        last_pair: dict[tuple[str, str], object] = {}
        lead_mql_done = False
        for pk, _, stage, at, from_stage in ts:
            nxt = NEXT_STAGE.get(stage)
            # First entry into the next stage at or after this one: rows are in time order,
            # and an earlier row (smaller id) may share this time.
            next_at = None
            if nxt:
                later = [t[3] for t in ts if t[2] == nxt and t[3] >= at]
                next_at = min(later) if later else None
            lead_at = None
            if stage == Stage.MQL and created_at is not None and at >= created_at:
                if not lead_mql_done and not suppressed:
                    lead_at = created_at
                lead_mql_done = True
            pair = (from_stage, stage)
            out.append(
                _fact(
                    pk,
                    contact_id,
                    from_stage,
                    stage,
                    at,
                    last_of.get(stage),
                    next_at,
                    lead_at,
                    last_pair.get(pair),
                )
            )
            last_of[stage] = at
            last_pair[pair] = at
    return out, created


def transition_facts_refresh(*, contact_ids) -> None:
    """Recompute the TransitionFact rows of these contacts (4–5 queries per 2,000), and
    move the funnel cohort counts of the first entries that changed (reports.cohort_facts:
    one more upsert per table when any did) and the drop-off day rows of the drop moves
    that changed (reports.drop_facts: one upsert when any did)."""
    for chunk in _chunks(set(contact_ids)):
        rows, created = _facts_and_created(chunk)
        before = firsts_stored(chunk, created)
        drops_before = drops_stored(chunk)
        # By transition too: a merge moves the duplicate's transitions to the kept contact
        # before their facts follow (crm.services.contacts.contact_merge).
        moved = [row[0] for row in rows]
        TransitionFact.objects.filter(Q(contact_id__in=chunk) | Q(transition_id__in=moved)).delete()
        facts_insert(TransitionFact, rows, fields=FACT_FIELDS)
        cohort_apply(before, firsts_of(rows, created))
        drops_apply(drops_before, drops_of(rows))


# The batch's contacts' stored transitions other than the batch's: the latest move from
# each stage into each stage, and whether a batch transition already has its fact row (a
# repeated run).
LATEST_SQL = """
SELECT contact_id, from_stage, to_stage, max(at), 0 FROM crm_lifecycletransition
WHERE contact_id = ANY(%s) AND NOT id = ANY(%s)
GROUP BY contact_id, from_stage, to_stage
UNION ALL
SELECT contact_id, '', '', NULL, 1 FROM reports_transitionfact WHERE transition_id = ANY(%s)
"""

# The earlier entries into the stage before a new one that had no next entry yet get the
# new one's time (every stored entry of an appending contact is before the new ones).
NEXT_AT_SQL = """
UPDATE reports_transitionfact f
SET next_at = u.at, next_us = (extract(epoch FROM u.at - f.at) * 1000000)::bigint
FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS u(contact_id, to_stage, at)
WHERE f.contact_id = ANY(%s) AND f.contact_id = u.contact_id AND f.to_stage = u.to_stage
  AND f.next_at IS NULL
"""  # ``ANY``: the facts' contact index, not a hash of the whole table


def transition_facts_append(*, transitions) -> None:
    """Add the fact rows of new transitions (PostgreSQL; stored, with ids), rewriting only
    the contacts where a new one is not after every stored one.

    A contact whose new transitions all come strictly after its stored ones keeps every
    stored fact but ``next_at`` (set on the entries into the previous stage that had none),
    and its new rows follow from the latest stored entry per stage: the same rows as
    :func:`_facts_for_contacts`, without reading, deleting and re-inserting the contact's
    history. Back-dated or same-time transitions, and a repeated run, take the rewrite.
    """
    by_contact: dict[int, list] = defaultdict(list)
    for t in transitions:
        by_contact[t.contact_id].append(
            (t.pk, t.contact_id, str(t.to_stage), t.at, str(t.from_stage))
        )
    rewrite: set[int] = set()
    for chunk in _chunks(by_contact):
        new_ids = [t[0] for c in chunk for t in by_contact[c]]
        latest: dict[int, dict[str, object]] = defaultdict(dict)
        latest_pair: dict[int, dict[tuple[str, str], object]] = defaultdict(dict)
        with connection.cursor() as cursor:
            cursor.execute(LATEST_SQL, [chunk, new_ids, new_ids])
            for contact_id, from_stage, stage, last_at, stored in cursor.fetchall():
                if stored:
                    rewrite.add(contact_id)
                if last_at is not None:
                    latest_pair[contact_id][(from_stage, stage)] = last_at
                    was = latest[contact_id].get(stage)
                    latest[contact_id][stage] = last_at if was is None else max(was, last_at)
        created = {
            pk: (created_at, suppressed)
            for pk, created_at, suppressed in Contact.objects.filter(pk__in=chunk).values_list(
                "pk", "created_at", "created_suppressed"
            )
        }
        rows, next_at = [], []
        for contact_id in chunk:
            if contact_id in rewrite:
                continue
            ts = sorted(by_contact[contact_id], key=lambda t: (t[3], t[0]))
            last_of = dict(latest.get(contact_id, {}))
            last_pair = dict(latest_pair.get(contact_id, {}))
            if last_of and max(last_of.values()) >= ts[0][3]:
                rewrite.add(contact_id)
                continue
            created_at, suppressed = created.get(contact_id, (None, True))
            # An earlier MQL entry at or after creation took the lead → MQL step.
            stored_mql = last_of.get(Stage.MQL)
            lead_mql_done = None not in (stored_mql, created_at) and stored_mql >= created_at
            firsts: dict[str, object] = {}
            for pk, _, stage, at, from_stage in ts:
                firsts.setdefault(stage, at)
                nxt = NEXT_STAGE.get(stage)
                later = [t[3] for t in ts if t[2] == nxt and t[3] >= at] if nxt else []
                lead_at = None
                if stage == Stage.MQL and created_at is not None and at >= created_at:
                    if not lead_mql_done and not suppressed:
                        lead_at = created_at
                    lead_mql_done = True
                pair = (from_stage, stage)
                rows.append(
                    _fact(
                        pk,
                        contact_id,
                        from_stage,
                        stage,
                        at,
                        last_of.get(stage),
                        min(later, default=None),
                        lead_at,
                        last_pair.get(pair),
                    )
                )
                last_of[stage] = at
                last_pair[pair] = at
            for stage, at in firsts.items():
                prev = PREV_STAGE.get(stage)
                if prev and prev in latest.get(contact_id, {}):
                    next_at.append((contact_id, prev, at))
        if next_at:
            with connection.cursor() as cursor:
                cols = [list(col) for col in zip(*next_at, strict=True)]
                cursor.execute(NEXT_AT_SQL, [*cols, sorted(set(cols[0]))])
        facts_insert(TransitionFact, rows, fields=FACT_FIELDS)
        # Stored rows keep ``prev_same_at`` and ``prev_pair_at``: the only new first entries
        # and drop moves are new rows.
        cohort_apply({}, firsts_of(rows, created))
        drops_apply({}, drops_of(rows))
    if rewrite:
        transition_facts_refresh(contact_ids=rewrite)


# --- upkeep from the handlers ------------------------------------------------------------


def lifecycle_facts_apply_transitions(*, transitions) -> None:
    """Stage changed: refresh the contacts' transition facts and the new changes' credits."""
    transitions = list(transitions)
    if not transitions:
        return
    if connection.vendor == "postgresql":
        transition_facts_append(transitions=transitions)
    else:
        transition_facts_refresh(contact_ids={t.contact_id for t in transitions})
    created_ids = [t.contact_id for t in transitions if not t.from_stage]
    created = {}
    if created_ids:  # crm.lifecycle.stages_initial: contacts were just created
        created = dict(Contact.objects.filter(pk__in=created_ids).values_list("pk", "created_at"))
        new_leads_refresh(days={d.astimezone(site_tz()).date() for d in created.values()})
    lead_scores_apply_transitions(transitions=transitions, created=created)
    reopened_facts_apply_transitions(transitions=transitions)
    transition_credits_refresh(
        transitions=[(t.pk, t.contact_id, str(t.to_stage), t.at) for t in transitions]
    )
    won = {t.contact_id for t in transitions if t.to_stage == Stage.CUSTOMER}
    if won:  # crm.sales.deal_win moves the contact to customer with the won deal
        from .deal_facts import deal_credits_refresh

        deal_credits_refresh(contact_ids=won)


def lifecycle_facts_apply_activities(*, activities) -> None:
    """Activities recorded: credits of the changes at or after a new touch of their contact.

    One query when the batch touches nothing that has happened already (the usual case).
    """
    activities = list(activities)
    lead_scores_apply_activities(activities=activities)  # after scoring's ledger entries
    landing_facts_apply_activities(activities=activities)
    reopened_facts_apply_activities(activities=activities)
    first_touch: dict[int, object] = {}
    for a in activities:
        if a.campaign_id and (
            a.contact_id not in first_touch or a.occurred_at < first_touch[a.contact_id]
        ):
            first_touch[a.contact_id] = a.occurred_at
    if not first_touch:
        return
    from .deal_facts import deal_credits_refresh

    deal_credits_refresh(contact_ids=list(first_touch), since=min(first_touch.values()))
    later = [
        t
        for t in LifecycleTransition.objects.filter(
            contact_id__in=list(first_touch),
            to_stage__in=CREDIT_STAGES,
            at__gte=min(first_touch.values()),
        ).values_list("id", "contact_id", "to_stage", "at")
        if t[3] >= first_touch[t[1]]
    ]
    if later:
        transition_credits_refresh(transitions=later)


# --- NewLeadDaily ------------------------------------------------------------------------


def new_leads_refresh(*, days, exclude=()) -> None:
    """Recount the new leads of these days from the contacts (one indexed count per day).

    The day's row is locked before counting: two transactions creating contacts on one day
    take turns, and the second counts the first's contacts (under READ COMMITTED a count
    taken before the lock would miss them and overwrite the first's figure). ``exclude``:
    contacts about to be deleted in this transaction (a merge's duplicate)."""
    for day in sorted(days):
        NewLeadDaily.objects.bulk_create(
            [NewLeadDaily(day=day, new_leads=0)], ignore_conflicts=True
        )
        row = NewLeadDaily.objects.select_for_update().get(day=day)
        n = (
            Contact.objects.filter(
                created_at__gte=day_start(day),
                created_at__lt=day_start(day + timedelta(days=1)),
                created_suppressed=False,
            )
            .exclude(pk__in=list(exclude))
            .count()
        )
        if row.new_leads != n:
            NewLeadDaily.objects.filter(day=day).update(new_leads=n)


def new_leads_rebuild() -> None:
    """Recount every day from the contacts (rebuilds, migrations, demo seeding)."""
    rows = (
        Contact.objects.filter(created_suppressed=False)
        .annotate(day=TruncDate("created_at", tzinfo=site_tz()))
        .values("day")
        .annotate(n=Count("id"))
        .order_by()
    )
    # The stage columns (reports.cohort_facts) are kept: only ``new_leads`` is recounted,
    # and rows left with no count at all are dropped.
    with transaction.atomic():
        NewLeadDaily.objects.update(new_leads=0)
        NewLeadDaily.objects.bulk_create(
            [NewLeadDaily(day=r["day"], new_leads=r["n"]) for r in rows],
            batch_size=5000,
            update_conflicts=True,
            unique_fields=["day"],
            update_fields=["new_leads"],
        )
        NewLeadDaily.objects.filter(
            new_leads=0, **dict.fromkeys(["mql", "sql", "opportunity", "customer"], 0)
        ).delete()


# --- rebuild and reconciliation ----------------------------------------------------------


def lifecycle_facts_rebuild(
    *, contact_ids=None, chunk: int = CHUNK, transitions_only: bool = False
) -> None:
    """Recompute the fact tables from raw data (all contacts, or these), chunk by chunk.

    ``transitions_only``: only ``TransitionFact``/``TransitionCredit`` (the migration that
    creates them runs before the other fact tables exist).
    """
    full = contact_ids is None
    if contact_ids is None:
        if not transitions_only:
            new_leads_rebuild()
            lead_scores_rebuild()
        top = Contact.objects.aggregate(m=Max("pk"))["m"] or 0
        contact_ids = []
        for lo in range(0, top + 1, chunk):
            contact_ids.append(
                list(
                    Contact.objects.filter(pk__gte=lo, pk__lt=lo + chunk).values_list(
                        "pk", flat=True
                    )
                )
            )
        chunks = [ids for ids in contact_ids if ids]
    else:
        chunks = list(_chunks(set(contact_ids), chunk))
    for ids in chunks:
        _rebuild_contacts(ids, transitions_only=transitions_only)
    if full and not transitions_only:
        cohort_rebuild()  # recount from the rebuilt facts (deltas kept any earlier drift)
        drops_rebuild()


def contacts_facts_rebuild(*, contact_ids) -> None:
    """Recompute every per-contact fact of these contacts from raw data, moving the day
    rows by the difference (a merged contact: its facts came from two histories)."""
    for chunk in _chunks(set(contact_ids)):
        _rebuild_contacts(chunk)


def _rebuild_contacts(ids, *, transitions_only: bool = False) -> None:
    with transaction.atomic():
        if not transitions_only:
            landing_facts_rebuild(contact_ids=ids)
            reopened_facts_rebuild(contact_ids=ids)
            from .deal_facts import deal_credits_refresh

            deal_credits_refresh(contact_ids=ids)
        transition_facts_refresh(contact_ids=ids)
        old = credit_rows_delete(contact_ids=ids)
        if not transitions_only:
            credit_daily_apply(old=old, new=[])
        transition_credits_refresh(
            transitions=LifecycleTransition.objects.filter(
                contact_id__in=ids, to_stage__in=CREDIT_STAGES
            ).values_list("id", "contact_id", "to_stage", "at"),
            day_rows=not transitions_only,
        )


def _snapshot(contact_ids) -> tuple[dict, dict, dict, dict, dict]:
    from .deal_facts import deal_credits_snapshot

    facts = {
        r[0]: r[1:]
        for r in TransitionFact.objects.filter(contact_id__in=contact_ids).values_list(
            "transition_id", *FACT_FIELDS[2:]
        )
    }
    credits = {
        r[:2]: r[2:]
        for r in TransitionCredit.objects.filter(contact_id__in=contact_ids).values_list(
            "transition_id", "campaign_id", "touches", "n", "first", "last"
        )
    }
    return (
        facts,
        credits,
        landing_facts_snapshot(contact_ids),
        reopened_facts_snapshot(contact_ids),
        deal_credits_snapshot(contact_ids),
    )


def lifecycle_facts_reconcile(*, day: date) -> dict:
    """Rebuild the facts of the contacts with a transition or touch on ``day``; report diffs."""
    start, end = day_start(day), day_start(day + timedelta(days=1))
    ids = set(
        LifecycleTransition.objects.filter(at__gte=start, at__lt=end).values_list(
            "contact_id", flat=True
        )
    )
    ids |= set(
        Activity.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .filter(Q(campaign__isnull=False) | Q(kind__in=LANDING_KINDS | ENGAGEMENT_KINDS))
        .values_list("contact_id", flat=True)
    )
    ids |= set(  # deals won that day (a deal won by an existing customer has no other hook)
        Deal.objects.filter(closed_at__gte=start, closed_at__lt=end).values_list(
            "contact_id", flat=True
        )
    )
    was = NewLeadDaily.objects.filter(day=day).values_list("new_leads", flat=True).first()
    new_leads_refresh(days=[day])
    now = NewLeadDaily.objects.get(day=day).new_leads
    diff: dict[str, dict] = {
        "new_leads": {} if (was or 0) == now else {str(day): {"facts": was, "raw": now}},
        "transition_facts": {},
        "transition_credits": {},
        "landing": {},
        "reopened": {},
        "deals": {},
    }
    for chunk in _chunks(ids):
        before = _snapshot(chunk)
        _rebuild_contacts(chunk)
        after = _snapshot(chunk)
        for name, b, a in zip(list(diff)[1:], before, after, strict=True):
            for k in set(b) | set(a):
                if b.get(k) != a.get(k):
                    diff[name][str(k)] = {"facts": b.get(k), "raw": a.get(k)}
    # Month-end scores: freeze the months due, then recompute every month frozen before
    # (a late entry may land in any closed month; one grouped read per month).
    fresh = set(lead_scores_freeze())
    # cost and revenue day rows: listed when they differ
    diff.update({k: v for k, v in credit_facts_reconcile(contact_ids=ids).items() if v})
    diff["cohort"] = cohort_reconcile()
    diff["drops"] = drops_reconcile()
    diff["lead_scores"] = lead_scores_reconcile(
        months=set(LeadScoreMonth.objects.values_list("month", flat=True)) - fresh
    )
    if any(diff.values()):
        log.warning("Lifecycle facts reconciliation for %s found differences: %s", day, diff)
    return diff
