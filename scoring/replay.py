"""History replay of the score ledger: stored activities scored as live scoring would have
scored them as they came in (the demo data, ``seed_demo``).

A history load stores its activities at once, without the "activities recorded" handlers.
Scored by one full rescore, every entry would be dated at the rescore: every past score
(METRICS.md "Scores over time") would be 0, so would the month-end score profile of new
leads, and the MQLs would be dated before the points that qualified them. Here the history
is replayed through the engine's own paths, in weekly steps, each seeing only what had
happened by its end:

* a contact's fit points, dated at its creation, and its unsubscribe / hard-bounce
  penalty, dated at its email status change (``engine.reconcile``, mode ``fit``, as the
  "contacts changed" handler would have written them then): profile data has no other
  history, so the profile as it is now is taken as it was;
* the step's activities as one batch (``engine.batch_reconcile`` with ``now`` = the step's
  end, later activities left out): every gain dated at the activity that earned it, as
  ingestion's handler dates it (``engine.gain_split``);
* the step's recycles (``services.recycle_apply``): the policy takes back what the rules
  had given by each recycle's moment, dated there;
* the decay run (expiry, half-life, inactivity) at the step's end, dated there: up to a
  week later than the hourly task would have dated it — the replay's approximation.

So the ledger's sum at a past moment is the score as it stood then (but for that week of
decay lag), and the final ledger is what a full rescore at the end gives: nothing is left
for it to adjust (tests/scoring/test_demo.py). Cost: per step one read of its activities
and the batch's reads, and a decay pass over the activities of the contacts created by
then — about fifty passes over the activities in all: seconds for the demo's default 2,000
contacts, far too slow for the benchmarks' million (``SeedContext.history``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Max, Min, Q
from django.db.models.functions import Coalesce, Greatest

from crm.models import Activity, Contact, EmailStatus, LifecycleTransition, Stage
from crm.models.choices import ENGAGEMENT_KINDS

from . import engine, services
from .models import Rule

STEP = timedelta(days=7)  # a decay run per week: ~50 passes over a year's activities
# What engine.batch_matches and rules.activity_matches read of an activity.
ACTIVITY_FIELDS = (
    "id", "contact_id", "kind", "occurred_at", "campaign_id", "url", "details", "is_machine"
)  # fmt: skip


@dataclass
class ReplayStats:
    steps: int = 0
    entries: int = 0


def ledger_replay(
    *,
    end: datetime,
    start: datetime | None = None,
    id_range: tuple[int, int] | None = None,
    step: timedelta = STEP,
) -> ReplayStats:
    """Score the contacts with ids in ``id_range`` (``[first, last]``; all when None),
    whose ledgers must be empty, step by step from their first creation (or ``start``, if
    earlier) to ``end``, as incremental scoring would have. Hands nobody off: the caller's
    history holds the stage changes (``backfill.mqls_catch_up`` then hands off the leads
    left over the threshold)."""
    contacts = Contact.objects.all()
    if id_range is not None:
        contacts = contacts.filter(pk__gte=id_range[0], pk__lte=id_range[1])
    first = contacts.aggregate(t=Min("created_at"))["t"]
    if first is None:
        return ReplayStats()
    start = min(start or first, first)
    rules = engine.rules_enabled()
    stats = ReplayStats()
    # Profile points first, each dated at its moment: no later step reads them (a batch,
    # the decay and a recycle read engagement and inactivity points only).
    with transaction.atomic():
        stats.entries += _profiles_score(contacts, rules, end)
    previous: datetime | None = None  # the first step takes everything before its end
    for cut in _cuts(start, end, step):
        # The last step takes every activity left, at or after ``end`` too: the rescore
        # that follows counts them, and must find nothing to add.
        bound = cut if cut < end else None
        # A transaction per step: SQLite would otherwise commit (and sync) every write.
        with transaction.atomic():
            stats.entries += _activities_score(contacts, rules, previous, cut, bound)
            stats.entries += _recycles_apply(contacts, previous, cut, bound)
            stats.entries += _decay(contacts, rules, cut, bound, last_run=previous)
        previous = cut
        stats.steps += 1
    return stats


def _cuts(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Every ``step`` from ``start``, then ``end``: where the decay runs."""
    cuts = []
    t = start + step
    while t < end:
        cuts.append(t)
        t += step
    return [*cuts, end]


def _in(field: str, lo: datetime | None, hi: datetime | None) -> Q:
    """``lo <= field < hi``, a bound None meaning none (the first and the last step)."""
    q = Q() if hi is None else Q(**{f"{field}__lt": hi})
    return q if lo is None else q & Q(**{f"{field}__gte": lo})


def _profiles_score(contacts, rules, now: datetime) -> int:
    """Fit points, dated at each contact's creation; unsubscribe / hard-bounce penalties,
    dated at its email status change (as the "contacts changed" handler would have dated
    them). A rule with an active-from date is left to the decay run that finds it coming
    into force, as live."""
    rules = [r for r in rules if engine.is_flag(r) and r.active_from is None]
    fit = [r for r in rules if r.kind == Rule.Kind.FIT]
    status = [r for r in rules if r.kind != Rule.Kind.FIT]
    n = 0
    if fit:
        n += _reconcile_at(dict(contacts.values_list("pk", "created_at")), fit, now)
    if status:
        # One change per contact is known: to the status it has now, at its recorded time.
        changed_at = Greatest(Coalesce("email_status_changed_at", "created_at"), "created_at")
        changed = (
            contacts.exclude(email_status=EmailStatus.ACTIVE)
            .annotate(status_at=changed_at)
            .values_list("pk", "status_at")
        )
        n += _reconcile_at(dict(changed), status, now)
    return n


def _reconcile_at(at_by_contact: dict[int, datetime], rules, now: datetime) -> int:
    """Profile rules for these contacts, each contact's entries dated at its moment."""
    ids = sorted(at_by_contact)
    n = 0
    for i in range(0, len(ids), services.RESCORE_CHUNK):
        outcome = engine.reconcile(
            id_range=(ids[i], ids[min(i + services.RESCORE_CHUNK, len(ids)) - 1] + 1),
            rules=rules,
            now=now,
            mode="fit",
            at_by_contact=at_by_contact,
        )
        n += len(outcome.entries)
    return n


def _activities_score(contacts, rules, lo, now, hi) -> int:
    """The activities of ``[lo, hi)`` as one batch scored at ``now`` (as the "activities
    recorded" handler scores a batch: engagement and inactivity rules)."""
    rules = [r for r in rules if r.kind == Rule.Kind.ENGAGEMENT or not engine.is_flag(r)]
    kinds = {r.activity_kind for r in rules if r.kind == Rule.Kind.ENGAGEMENT}
    if any(r.kind == Rule.Kind.NEGATIVE for r in rules):
        kinds |= set(ENGAGEMENT_KINDS)  # an engagement ends an inactivity penalty
    if not kinds:
        return 0
    batch = list(
        Activity.objects.filter(
            _in("occurred_at", lo, hi),
            contact__in=contacts,
            kind__in=sorted(kinds),
            is_machine=False,  # never scored (engine.batch_matches skips them too)
        )
        .order_by("occurred_at", "pk")
        .only(*ACTIVITY_FIELDS)
    )
    matches = engine.batch_matches(batch, rules, now)
    if not matches:
        return 0
    outcome = engine.batch_reconcile(
        matches=matches, rules=rules, now=now, scores={}, batch=batch, before=hi
    )
    return len(outcome.entries)


def _recycles_apply(contacts, lo, now, hi) -> int:
    """The recycle policy for the step's moves to ``recycled``, each on the points its
    contact's rules had given by its moment (``recycle_apply(up_to_each=True)``): the
    step's activities are scored already, each entry dated at its own. A contact recycled
    twice in one step gets one call per recycle, in time order."""
    moves = LifecycleTransition.objects.filter(
        _in("at", lo, hi), contact__in=contacts, to_stage=Stage.RECYCLED
    ).order_by("at", "pk")
    n, rounds = 0, [[]]
    for t in moves:
        if any(t.contact_id == other.contact_id for other in rounds[-1]):
            rounds.append([])
        rounds[-1].append(t)
    for transitions in rounds:
        n += services.recycle_apply(transitions=transitions, up_to_each=True)
    return n


def _decay(contacts, rules, now: datetime, hi: datetime | None, *, last_run) -> int:
    """The decay run at ``now`` (``services.decay_run`` without its hand-off and clock),
    over the contacts created by then, counting the activities before ``hi``."""
    rules = engine.time_dependent(rules, now=now, last_run=last_run)
    bounds = contacts.filter(created_at__lt=now).aggregate(lo=Min("pk"), hi=Max("pk"))
    if not rules or bounds["lo"] is None:
        return 0
    n = 0
    for lo in range(bounds["lo"], bounds["hi"] + 1, services.RESCORE_CHUNK):
        top = min(lo + services.RESCORE_CHUNK, bounds["hi"] + 1)
        outcome = engine.reconcile(
            id_range=(lo, top), rules=rules, now=now, mode="decay", before=hi
        )
        n += len(outcome.entries)
    return n
