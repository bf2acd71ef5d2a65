"""Keeping ``ReopenedDayFact`` current (see its docstring in reports.models).

Only contacts that were ever recycled can have rows. A batch of activities or stage
changes first asks which of its contacts have a transition into ``recycled`` (one indexed
query; normally few or none), then recomputes those contacts' rows from their raw
transitions and engagement activities (idempotent, out-of-order safe).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from crm.models import Activity, LifecycleTransition, Stage
from crm.models.choices import ENGAGEMENT_KINDS

from .fact_writes import _in, facts_insert
from .models import ReopenedDayFact
from .query import site_tz

CHUNK = 2000


def _rows(contact_ids) -> list[ReopenedDayFact]:
    """Rows of these contacts: days with an engagement (``crm.models.activities.
    engagement_q``: not a machine's, not an unsubscribe-link click) while recycled.

    The stage at an activity is the stage of the latest transition strictly before it
    (ties by id), as in ``reports.metrics.leads.reopened_qs`` (see there why).
    """
    history: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
    for contact_id, at, stage in (
        LifecycleTransition.objects.filter(contact_id__in=contact_ids)
        .order_by("contact_id", "at", "id")
        .values_list("contact_id", "at", "to_stage")
    ):
        times, stages = history[contact_id]
        times.append(at)
        stages.append(stage)
    days: dict[int, set] = defaultdict(set)
    for contact_id, occurred_at in (
        Activity.objects.filter(contact_id__in=contact_ids)
        .engagements()
        .values_list("contact_id", "occurred_at")
    ):
        times, stages = history.get(contact_id, ([], []))
        i = bisect_left(times, occurred_at)  # the transitions strictly before it
        if i and stages[i - 1] == Stage.RECYCLED:
            days[contact_id].add(occurred_at.astimezone(site_tz()).date())
    out = []
    for contact_id, ds in days.items():
        prev = None
        for day in sorted(ds):
            out.append(ReopenedDayFact(contact_id=contact_id, day=day, prev_day=prev))
            prev = day
    return out


def reopened_facts_rebuild(*, contact_ids) -> None:
    """Recompute the rows of these contacts from raw data (3 queries per 2,000)."""
    contact_ids = sorted(set(contact_ids))
    for i in range(0, len(contact_ids), CHUNK):
        chunk = contact_ids[i : i + CHUNK]
        ReopenedDayFact.objects.filter(contact_id__in=chunk).delete()
        facts_insert(ReopenedDayFact, _rows(chunk))


def _ever_recycled(contact_ids) -> list[int]:
    """Which of these contacts ever entered ``recycled``: one read through the transitions'
    contact index, the ids as one array on PostgreSQL (an ``IN`` list of a batch's ~900
    contacts cost ~7 ms of Python to build, profiled)."""
    return list(
        LifecycleTransition.objects.filter(_in("contact_id", contact_ids), to_stage=Stage.RECYCLED)
        .values_list("contact_id", flat=True)
        .distinct()
        .order_by()
    )


def reopened_facts_apply_activities(*, activities) -> None:
    """Activities recorded: recompute the ever-recycled contacts that engaged."""
    contacts = {a.contact_id for a in activities if a.kind in ENGAGEMENT_KINDS}
    if contacts:
        ids = _ever_recycled(list(contacts))
        if ids:
            reopened_facts_rebuild(contact_ids=ids)


def reopened_facts_apply_transitions(*, transitions) -> None:
    """Stage changed: a change can start or end a recycled spell (also in the past)."""
    contacts = {t.contact_id for t in transitions}
    if contacts:
        ids = _ever_recycled(list(contacts))
        if ids:
            reopened_facts_rebuild(contact_ids=ids)


def reopened_facts_snapshot(contact_ids) -> dict:
    return {
        r[:2]: r[2:]
        for r in ReopenedDayFact.objects.filter(contact_id__in=contact_ids).values_list(
            "contact_id", "day", "prev_day"
        )
    }
