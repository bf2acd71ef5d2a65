"""Funnel cohort mode from day rows: which stages the new leads of each day have reached.

METRICS.md funnel cohort mode: of the leads created in the period, how many reached each
stage by the report end. A new lead reached stage S by the end exactly when its *first*
entry into S came before the end, and ``TransitionFact`` marks first entries (the row
whose ``prev_same_at`` is null). So per new lead and stage only that first entry's day
matters, and two summable tables answer any period without reading the contacts:

* ``NewLeadDaily.<stage>``: the day's new leads that ever entered the stage;
* ``CohortReachDaily``: the same leads by the day of that first entry — the report
  subtracts those first reached at or after its end.

The stage-changed upkeep (``transition_facts_refresh``) hands the changed contacts' first
entries before and after the refresh to :func:`cohort_apply` (signed deltas); a rebuild
recounts both from the facts; :func:`cohort_reconcile` compares the two with a recount.
"""

from __future__ import annotations

import logging
from collections import Counter

from django.db import transaction
from django.db.models import Count
from django.db.models.functions import TruncDate

from crm.models import Stage

from .fact_writes import counts_upsert
from .models import CohortReachDaily, NewLeadDaily, TransitionFact
from .nurtured_facts import nurtured_apply_firsts, nurtured_reconcile
from .query import site_tz
from .rollups import snapshot_diff

log = logging.getLogger(__name__)

COHORT_STAGES = (Stage.MQL, Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER)
STAGE_FIELDS = [str(s) for s in COHORT_STAGES]

# (contact, stage) → (creation day, first-entry day) of a new lead
Firsts = dict[tuple[int, str], tuple]


def _local(dt):
    return dt.astimezone(site_tz()).date()


def firsts_stored(contact_ids, created: dict) -> Firsts:
    """The new leads' first entries as the stored facts have them (one query on the facts'
    contact index; ``created`` as in :func:`firsts_of`, already read by the caller)."""
    out = {}
    for contact_id, stage, at in TransitionFact.objects.filter(
        contact_id__in=contact_ids, to_stage__in=STAGE_FIELDS, prev_same_at__isnull=True
    ).values_list("contact_id", "to_stage", "at"):
        created_at, suppressed = created.get(contact_id, (None, True))
        if not suppressed:
            out[(contact_id, stage)] = (_local(created_at), _local(at))
    return out


def firsts_of(rows, created: dict) -> Firsts:
    """First entries among fact rows (``FACT_FIELDS`` tuples) of new leads; ``created``:
    contact → (created_at, created_suppressed)."""
    out = {}
    for _, contact_id, stage, at, prev_same_at, *_ in rows:
        if prev_same_at is None and stage in STAGE_FIELDS:
            created_at, suppressed = created.get(contact_id, (None, True))
            if not suppressed:
                out[(contact_id, stage)] = (_local(created_at), _local(at))
    return out


def _no_leads(key: tuple) -> dict:
    """Columns of a ``NewLeadDaily`` row the upsert creates (its new leads come from
    ``new_leads_refresh``, which the same stage change runs for created contacts)."""
    return {"new_leads": 0}


def cohort_apply(before: Firsts, after: Firsts) -> None:
    """Move the counts of the first entries that changed (−1 where they were, +1 where
    they are): one upsert per table, nothing when none changed. The enrolled leads whose
    first ``opportunity`` entry moved move in the nurtured rows too (reports.nurtured_facts).
    """
    nurtured_apply_firsts(before, after)
    totals: dict[tuple, Counter] = {}
    reach: dict[tuple, Counter] = {}
    for key in set(before) | set(after):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        stage = key[1]
        for days, sign in ((old, -1), (new, 1)):
            if days is None:
                continue
            day, reached = days
            totals.setdefault((day,), Counter())[stage] += sign
            reach.setdefault((stage, reached, day), Counter())["leads"] += sign
    if not reach:
        return
    counts_upsert(NewLeadDaily, key=["day"], rows=totals, fields=STAGE_FIELDS, insert=_no_leads)
    counts_upsert(
        CohortReachDaily, key=["stage", "reached_day", "day"], rows=reach, fields=["leads"]
    )


def _recount() -> tuple[dict, dict]:
    """Both tables' counts from the first-entry facts (grouped in the database)."""
    rows = (
        TransitionFact.objects.filter(
            to_stage__in=STAGE_FIELDS,
            prev_same_at__isnull=True,
            contact__created_suppressed=False,
        )
        .annotate(
            day=TruncDate("contact__created_at", tzinfo=site_tz()),
            reached_day=TruncDate("at", tzinfo=site_tz()),
        )
        .values("day", "to_stage", "reached_day")
        .annotate(n=Count("transition_id"))
        .values_list("day", "to_stage", "reached_day", "n")
        .order_by()
    )
    totals: dict = {}
    reach: dict = {}
    for day, stage, reached, n in rows:
        totals.setdefault(day, Counter())[stage] += n
        reach[(stage, reached, day)] = n
    return totals, reach


def _stored() -> tuple[dict, dict]:
    totals = {}
    for day, *counts in NewLeadDaily.objects.values_list("day", *STAGE_FIELDS):
        c = Counter({s: n for s, n in zip(STAGE_FIELDS, counts, strict=True) if n})
        if c:
            totals[day] = c
    reach = {
        (stage, reached, day): n
        for stage, reached, day, n in CohortReachDaily.objects.exclude(leads=0).values_list(
            "stage", "reached_day", "day", "leads"
        )
    }
    return totals, reach


def cohort_rebuild() -> None:
    """Recount both tables from the facts (after ``new_leads_rebuild``: it recreates the
    ``NewLeadDaily`` rows; a day with first entries but no new-lead row gets one). The
    nurtured rows have their own rebuild (``nurtured_rebuild``: migration 0010 calls this
    one before their tables exist)."""
    totals, reach = _recount()
    with transaction.atomic():
        NewLeadDaily.objects.update(**dict.fromkeys(STAGE_FIELDS, 0))
        counts_upsert(
            NewLeadDaily,
            key=["day"],
            rows={(d,): c for d, c in totals.items()},
            fields=STAGE_FIELDS,
            insert=_no_leads,
        )
        CohortReachDaily.objects.all().delete()
        CohortReachDaily.objects.bulk_create(
            [
                CohortReachDaily(stage=s, reached_day=r, day=d, leads=n)
                for (s, r, d), n in reach.items()
            ],
            batch_size=5000,
        )


def cohort_reconcile() -> dict:
    """Compare both tables with a recount from the facts; repair and report differences
    — and the nurtured rows' (reports.nurtured_facts), which the nightly check reaches
    through this one."""
    nurtured = nurtured_reconcile()
    stored, fresh = _stored(), _recount()
    diff = {}
    for name, have, want in zip(("totals", "reach"), stored, fresh, strict=True):
        diff.update({f"{name} {k}": v for k, v in snapshot_diff(have, want, "facts").items()})
    if diff:
        log.warning("Funnel cohort rows differ from the transition facts: %s", diff)
        cohort_rebuild()
    return {**diff, **nurtured}
