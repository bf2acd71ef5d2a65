"""Counts of lifecycle stages from day rows: ``StageEntryDaily`` and ``StagePopulationDaily``.

Both are sums of per-contact contributions that follow from the contact's creation time and
its transitions in (time, id) order (:func:`contributions`):

* every transition adds one entry on its site-time-zone day, keyed by from → to stage and
  the day of the contact's previous entry into the same stage (:data:`NO_PREV` if none):
  entries over a period are a sum, unique contacts the sum of the rows whose previous
  entry is before the period (reports.metrics.leads, funnel flow, customers);
* every transition puts the contact in its stage from its day (or the creation day, if
  later: a contact counts only once created) to the day of the contact's next transition;
  a contact created before its first transition is untouched (stage ``""``) until it. The
  contacts in each stage at the start of a day are the days before it summed.

Upkeep (the stage-changed handler, :func:`stage_facts_apply_transitions`): per batch, one
read of the batch's contacts' histories; the contributions with and without the batch's
transitions give signed deltas (a back-dated change moves its neighbours' counts too), one
upsert per table. A contact with no transition at all contributes nothing: every path that
creates a contact records its first transition in the same transaction
(``crm.lifecycle.stages_initial``), and bulk loads are followed by :func:`stage_facts_rebuild`.
A merge moves them by its own difference (:func:`stage_facts_apply_merge`, from the
"contacts merging" handler); erasures publish no stage change; the daily
:func:`stage_facts_reconcile` rebuilds a day's rows from raw data and reports what differed
(as the other facts do).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, timedelta

from django.db import transaction
from django.db.models import Max, Q, Sum
from django.db.models.functions import TruncDate

from crm.models import Contact, LifecycleTransition

from .fact_writes import _in, counts_upsert
from .models import StageEntryDaily, StagePopulationDaily
from .query import ReportQuery, day_start, site_tz

log = logging.getLogger(__name__)

NO_PREV = date(1, 1, 1)  # ``StageEntryDaily.prev_day`` of a contact's first entry into a stage
UNTOUCHED = ""  # ``StagePopulationDaily.stage`` of a created contact with no transition yet
ENTRY_KEY = ["day", "from_stage", "to_stage", "prev_day"]
POPULATION_KEY = ["day", "stage"]
CHUNK = 2000  # contacts per statement (SQLite's bound-parameter limit)

# A transition of a contact's history: (id, from_stage, to_stage, site-time-zone day).
Transition = tuple[int, str, str, date]


def contributions(created: date, history: list[Transition]) -> Counter:
    """What one contact adds to both tables: ``("e", day, from, to, prev_day)`` → entries and
    ``("p", day, stage, "entered"|"left")`` → contacts, from its creation day and its
    transitions sorted by (time, id). See the module docstring and the models."""
    out: Counter = Counter()
    if not history:
        return out
    last_day: dict[str, date] = {}
    for _, from_stage, to_stage, day in history:
        out[("e", day, from_stage or "", to_stage, last_day.get(to_stage, NO_PREV))] += 1
        last_day[to_stage] = day
    first = history[0][3]
    if created < first:
        out[("p", created, UNTOUCHED, "entered")] += 1
        out[("p", first, UNTOUCHED, "left")] += 1
    last = len(history) - 1
    for i, (_, _, stage, day) in enumerate(history):
        since = max(day, created)
        if i == last:
            out[("p", since, stage, "entered")] += 1
        elif since < history[i + 1][3]:
            out[("p", since, stage, "entered")] += 1
            out[("p", history[i + 1][3], stage, "left")] += 1
    return out


def _histories(contact_ids=None, *, id_range=None) -> dict[int, tuple[date, list[Transition]]]:
    """Contact → (creation day, transitions in (time, id) order) for these contacts (two
    queries through the contact indexes, ``= ANY(array)`` on PostgreSQL: an IN list or a
    join to the contacts was planned as a hash of a whole table; the database turns times
    into site days). ``id_range``: the contacts with ids in ``[lo, hi)`` instead."""
    tz = site_tz()
    if id_range is None:
        contacts, transitions = _in("id", contact_ids), _in("contact_id", contact_ids)
    else:
        lo, hi = id_range
        contacts = Q(id__gte=lo, id__lt=hi)
        transitions = Q(contact_id__gte=lo, contact_id__lt=hi)
    created = dict(
        Contact.objects.filter(contacts).values_list("id", TruncDate("created_at", tzinfo=tz))
    )
    out: dict[int, tuple[date, list]] = {}
    for contact_id, *t in (
        LifecycleTransition.objects.filter(transitions)
        .order_by("contact_id", "at", "id")
        .values_list("contact_id", "id", "from_stage", "to_stage", TruncDate("at", tzinfo=tz))
    ):
        out.setdefault(contact_id, (created[contact_id], []))[1].append(tuple(t))
    return out


def _totals(histories, *, without: set[int] = frozenset()) -> Counter:
    total: Counter = Counter()
    for created, history in histories.values():
        if without:
            history = [t for t in history if t[0] not in without]
        total.update(contributions(created, history))
    return total


def _split(counts: Counter) -> tuple[dict, dict]:
    """Counter of contribution keys → rows for :func:`counts_upsert` of both tables."""
    entries: dict[tuple, Counter] = {}
    population: dict[tuple, Counter] = {}
    for key, n in counts.items():
        if not n:
            continue
        if key[0] == "e":
            entries.setdefault(key[1:], Counter())["entries"] += n
        else:
            population.setdefault(key[1:3], Counter())[key[3]] += n
    return entries, population


def _write(counts: Counter) -> None:
    entries, population = _split(counts)
    counts_upsert(StageEntryDaily, key=ENTRY_KEY, rows=entries, fields=["entries"])
    counts_upsert(
        StagePopulationDaily, key=POPULATION_KEY, rows=population, fields=["entered", "left"]
    )


def stage_facts_apply_transitions(*, transitions) -> None:
    """Stage changed (stored transitions): move both tables by the difference the batch
    makes to its contacts' contributions. Queries: the histories (per 2,000 contacts),
    then one upsert per table that has a delta (+ a delete of rows a negative delta
    emptied: a back-dated change)."""
    transitions = list(transitions)
    if not transitions:
        return
    batch = {t.pk for t in transitions}
    contacts = sorted({t.contact_id for t in transitions})
    delta: Counter = Counter()
    for i in range(0, len(contacts), CHUNK):
        histories = _histories(contacts[i : i + CHUNK])
        delta.update(_totals(histories))
        delta.subtract(_totals(histories, without=batch))
    _write(delta)


def stage_facts_apply_merge(*, keep_id: int, duplicate_id: int, moved: set[int]) -> None:
    """A merge moved the duplicate's transitions (``moved``) to the kept contact: move both
    tables by the merged history's contributions less the two histories' before the move
    (each from its own creation day). Called in the merge, before the duplicate is gone."""
    tz = site_tz()
    histories = _histories([keep_id])
    created = dict(
        Contact.objects.filter(pk__in=[keep_id, duplicate_id]).values_list(
            "id", TruncDate("created_at", tzinfo=tz)
        )
    )
    merged = histories.get(keep_id, (created.get(keep_id), []))[1]
    if not merged or keep_id not in created:
        return
    delta = contributions(created[keep_id], merged)
    delta.subtract(contributions(created[keep_id], [t for t in merged if t[0] not in moved]))
    if duplicate_id in created:
        delta.subtract(contributions(created[duplicate_id], [t for t in merged if t[0] in moved]))
    _write(delta)


# --- rebuild and reconciliation ----------------------------------------------------------


def _recount(chunk: int = 5 * CHUNK) -> Counter:
    """Both tables' counts from raw data, contact-id range by contact-id range."""
    top = LifecycleTransition.objects.aggregate(m=Max("contact_id"))["m"] or 0
    total: Counter = Counter()
    for lo in range(0, top + 1, chunk):
        total.update(_totals(_histories(id_range=(lo, lo + chunk))))
    return total


def _replace(entries: dict, population: dict, *, day: date | None = None) -> None:
    """Replace the rows (of ``day``, or all) by these counts."""
    e_qs, p_qs = StageEntryDaily.objects.all(), StagePopulationDaily.objects.all()
    if day is not None:
        e_qs, p_qs = e_qs.filter(day=day), p_qs.filter(day=day)
    e_qs.delete()
    p_qs.delete()
    StageEntryDaily.objects.bulk_create(
        [StageEntryDaily(**dict(zip(ENTRY_KEY, k, strict=True)), **c) for k, c in entries.items()],
        batch_size=5000,
    )
    StagePopulationDaily.objects.bulk_create(
        [
            StagePopulationDaily(day=d, stage=s, entered=c["entered"], left=c["left"])
            for (d, s), c in population.items()
            if c["entered"] or c["left"]
        ],
        batch_size=5000,
    )


def stage_facts_rebuild() -> None:
    """Recount both tables from the transitions and contacts (demo seeding, migrations,
    after bulk history loads)."""
    entries, population = _split(_recount())
    with transaction.atomic():
        _replace(entries, population)


def _stored(day: date) -> Counter:
    out: Counter = Counter()
    for d, f, t, p, n in StageEntryDaily.objects.filter(day=day).values_list(*ENTRY_KEY, "entries"):
        out[("e", d, f, t, p)] = n
    for d, s, entered, left in StagePopulationDaily.objects.filter(day=day).values_list(
        "day", "stage", "entered", "left"
    ):
        out[("p", d, s, "entered")] = entered
        out[("p", d, s, "left")] = left
    return out


def stage_facts_reconcile(*, day: date) -> dict:
    """Rebuild ``day``'s rows from raw data and report (and log) what differed.

    A day's rows come only from contacts with a transition or their creation on that day,
    so their histories are enough to recount it.
    """
    start, end = day_start(day), day_start(day + timedelta(days=1))
    ids = set(
        LifecycleTransition.objects.filter(at__gte=start, at__lt=end).values_list(
            "contact_id", flat=True
        )
    ) | set(
        Contact.objects.filter(created_at__gte=start, created_at__lt=end).values_list(
            "pk", flat=True
        )
    )
    ids = sorted(ids)
    fresh: Counter = Counter()
    for i in range(0, len(ids), CHUNK):
        fresh.update(_totals(_histories(ids[i : i + CHUNK])))
    fresh = Counter({k: n for k, n in fresh.items() if k[1] == day and n})
    stored = +_stored(day)
    diff = {
        str(k[1:]): {"facts": stored.get(k), "raw": fresh.get(k)}
        for k in set(stored) | set(fresh)
        if stored.get(k) != fresh.get(k)
    }
    if diff:
        log.warning("Stage day rows for %s differ from the transitions: %s", day, diff)
        with transaction.atomic():
            _replace(*_split(fresh), day=day)
    return {"stage_facts": diff}


# --- reads (unfiltered reports) ------------------------------------------------------------


def first_in(start: date) -> Q:
    """``StageEntryDaily`` rows that are their contact's first entry into the stage within a
    period starting on ``start``."""
    return Q(prev_day__lt=start)


def entry_counts(q: ReportQuery, stages) -> dict[str, dict]:
    """Per stage: entries in the period and unique contacts entering (one read)."""
    rows = (
        StageEntryDaily.objects.filter(to_stage__in=stages, day__gte=q.start, day__lt=q.end)
        .values("to_stage")
        .annotate(n=Sum("entries"), contacts=Sum("entries", filter=first_in(q.start)))
        .values_list("to_stage", "n", "contacts")
        .order_by()
    )
    return {s: {"entries": e or 0, "contacts": c or 0} for s, e, c in rows}


def population_at(day: date) -> dict[str, int]:
    """Contacts in each stage (``""``: created, no transition yet) at the start of ``day``."""
    rows = (
        StagePopulationDaily.objects.filter(day__lt=day)
        .values("stage")
        .annotate(entered=Sum("entered"), left=Sum("left"))
        .values_list("stage", "entered", "left")
        .order_by()
    )
    return {s: (e or 0) - (lft or 0) for s, e, lft in rows}
