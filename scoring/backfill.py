"""Hand-off of leads a history load left over the threshold (demo data, migrations).

A history load scores contacts with a full rescore that hands nobody off (its stage
history is recorded already, see ``services.rescore_execute``). Leads the rules put over
the threshold are then handed off here, through the same path as a live crossing
(``handoff._move``: crm.lifecycle's bulk move, every app's stage-changed handler, owner
assignment), each dated at the activity that would have pushed it over had the activities
arrived live: the first activity after the contact's last stage change at which the
current rules, evaluated at that moment (caps, buckets, expiry, half-life, inactivity),
give the contact the threshold. Work per chunk: three reads (candidates, their fit
points, their scored activities), one replay in Python over those activities, one bulk
move — proportional to the candidates, not to the contact table.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import NamedTuple

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from crm.models import Activity, Contact
from crm.models.activities import is_engagement, unsubscribe_link_prefix
from crm.models.choices import ENGAGEMENT_KINDS

from . import engine, handoff
from .models import LedgerEntry, Rule, ScoringSettings
from .rules import activity_matches, in_force

CHUNK = 5_000  # contacts per transaction: bounded memory and lock time


class _Act(NamedTuple):
    """The fields :func:`scoring.rules.activity_matches` reads, without a model instance."""

    pk: int
    contact_id: int
    kind: str
    occurred_at: datetime
    campaign_id: int | None
    url: str
    details: dict
    is_machine: bool


def mqls_catch_up(
    *,
    now: datetime | None = None,
    chunk: int = CHUNK,
    notify: bool = True,
    at: datetime | None = None,
    unless_met: tuple[int, int | None] | None = None,
    ledger_dated: bool = False,
) -> int:
    """Hand off every lead or recycled contact at or over the threshold; returns how many.

    ``notify=False`` assigns owners without the "new MQL" notices and emails (a history
    load: the hand-offs it dates in the past are not news to anyone). ``at`` dates every
    hand-off at that moment instead of at the replayed crossing, and ``unless_met``
    (a threshold and minimum fit) leaves out the contacts that already met those: a
    settings change hands off the leads it qualifies, when it qualifies them — a recycled
    lead kept over the old threshold by the recycle policy waits for a new gain, as it did.
    ``ledger_dated``: the ledger is a dated history already (scoring.replay), so each
    crossing is read from it (:func:`ledger_crossings`) rather than replayed from the
    activities — the MQL then never precedes the points its ledger shows.
    """
    conf = ScoringSettings.load()
    now = now or timezone.now()
    rules = engine.rules_enabled() if at is None else []
    ids = list(_catch_up_candidates(conf, unless_met).order_by("pk").values_list("pk", flat=True))
    moved = 0
    for i in range(0, len(ids), chunk):
        with transaction.atomic():
            part = list(
                Contact.objects.select_for_update(no_key=True)
                .filter(pk__in=ids[i : i + chunk])
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            found = handoff._candidates(Q(pk__in=part), conf=conf)
            contact_ids = [row["pk"] for row in found]
            if at is not None:
                at_by_contact, activity_by_contact = dict.fromkeys(contact_ids, at), {}
            elif ledger_dated:
                crossing = ledger_crossings(
                    contact_ids=contact_ids, threshold=conf.mql_threshold, now=now
                )
                at_by_contact = {c: when for c, (when, _) in crossing.items()}
                activity_by_contact = {c: a for c, (_, a) in crossing.items() if a}
            else:
                crossing = crossings_find(
                    contact_ids=contact_ids, rules=rules, threshold=conf.mql_threshold, now=now
                )
                at_by_contact = {c: when for c, (when, _) in crossing.items()}
                activity_by_contact = {c: a for c, (_, a) in crossing.items() if a}
            moved += len(handoff._move(found, at_by_contact, activity_by_contact, notify=notify))
    return moved


def _catch_up_candidates(conf: ScoringSettings, unless_met: tuple[int, int | None] | None):
    """Leads and recycled contacts at or over the threshold (the minimum fit is checked
    under the lock, by ``handoff._candidates``), but not those meeting ``unless_met``."""
    qs = Contact.objects.filter(
        stage__in=handoff.MQL_FROM, scorecard__score__gte=conf.mql_threshold
    )
    if unless_met is None:
        return qs
    threshold, min_fit = unless_met
    met = Q(scorecard__score__gte=threshold)
    if min_fit is not None:
        qs = qs.annotate(fit=handoff.fit_points())
        met &= Q(fit__gte=min_fit)
    return qs.exclude(met)


def crossings_find(
    *, contact_ids: list[int], rules: list[Rule], threshold: int, now: datetime
) -> dict[int, tuple[datetime, int | None]]:
    """``{contact: (when, activity)}``: the first activity after the contact's last stage
    change at which its score, as the rules value it at that moment, reaches
    ``threshold`` (else its latest scored activity; else ``now``).

    Fit and unsubscribe/bounce points are taken as they stand (profile data has no
    history); engagement points are replayed from the contact's activities.
    """
    if not contact_ids:
        return {}
    flags = [r.pk for r in rules if engine.is_flag(r)]
    engagement = [r for r in rules if r.kind == Rule.Kind.ENGAGEMENT]
    inactive = [
        r for r in rules if r.kind == Rule.Kind.NEGATIVE and r.negative == Rule.Negative.INACTIVE
    ]
    base: dict[int, int] = defaultdict(int)
    if flags:
        for cid, s in (
            LedgerEntry.objects.filter(contact_id__in=contact_ids, rule_id__in=flags)
            .order_by()
            .values_list("contact_id")
            .annotate(s=Sum("points"))
        ):
            base[cid] = s or 0
    contacts = {
        pk: (changed or created, created)
        for pk, changed, created in Contact.objects.filter(pk__in=contact_ids).values_list(
            "pk", "stage_changed_at", "created_at"
        )
    }
    by_kind: dict[str, list[Rule]] = defaultdict(list)
    for r in engagement:
        by_kind[r.activity_kind].append(r)
    kinds = set(by_kind) | (set(ENGAGEMENT_KINDS) if inactive else set())
    acts = defaultdict(list)
    if kinds:
        for row in (
            Activity.objects.filter(
                contact_id__in=contact_ids, kind__in=sorted(kinds), occurred_at__lte=now
            )
            .order_by("contact_id", "occurred_at", "pk")
            .values_list(*_Act._fields)
        ):
            acts[row[1]].append(_Act(*row))
    out = {}
    for cid in contact_ids:
        since, created = contacts[cid]
        out[cid] = _replay(
            acts.get(cid, []),
            by_kind=by_kind,
            inactive=inactive,
            base=base[cid],
            since=since,
            created=created,
            threshold=threshold,
            now=now,
        )
    return out


def ledger_crossings(
    *, contact_ids: list[int], threshold: int, now: datetime
) -> dict[int, tuple[datetime, int | None]]:
    """``{contact: (when, activity)}`` from a dated ledger: the first gain after the
    contact's last stage change that left its score (the running sum of its entries, those
    of one instant together) at or over ``threshold`` — when the live hand-off, which a
    gain triggers, would have moved it. A contact kept over the threshold by a recycle
    with no gain since gets its latest gain (crm.lifecycle dates no move before the last
    stage change); one without any gain, ``now``. Two reads."""
    if not contact_ids:
        return {}
    since = dict(Contact.objects.filter(pk__in=contact_ids).values_list("pk", "stage_changed_at"))
    rows = (
        LedgerEntry.objects.filter(contact_id__in=contact_ids)
        .order_by("contact_id", "at", "pk")
        .values_list("contact_id", "at", "points", "activity_id")
    )
    out: dict[int, tuple[datetime, int | None]] = {}
    for contact_id, ledger in groupby(rows, key=itemgetter(0)):
        running, found, latest = 0, None, None
        changed = since.get(contact_id)
        for at, same_time in groupby(ledger, key=itemgetter(1)):
            same_time = list(same_time)
            running += sum(points for _, _, points, _ in same_time)
            gains = [activity for _, _, points, activity in same_time if points > 0]
            if not gains:
                continue
            latest = (at, next((a for a in gains if a), None))
            if running >= threshold and (changed is None or at >= changed):
                found = latest
                break
        out[contact_id] = found or latest or (now, None)
    for contact_id in contact_ids:
        out.setdefault(contact_id, (now, None))
    return out


def _bucket(rule: Rule, at: datetime):
    """The bucket the engine counts an activity in (its TruncDate / TruncWeek)."""
    if rule.frequency == Rule.Frequency.ONCE_PER_DAY:
        return timezone.localtime(at).date()
    if rule.frequency == Rule.Frequency.ONCE_PER_WEEK:
        day = timezone.localtime(at).date()
        return day - timedelta(days=day.weekday())
    return None  # every time: each activity counts


class _Window:
    """One rule's matched activities up to the replay time, minus the expired ones."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.times: list[datetime] = []
        self.buckets: list = []
        self.lo = 0
        self.counts: Counter = Counter()

    def add(self, at: datetime) -> None:
        bucket = _bucket(self.rule, at)
        self.times.append(at)
        self.buckets.append(bucket)
        self.counts[bucket] += 1

    def value(self, t: datetime) -> int:
        rule = self.rule
        if rule.expire_after_days:
            cutoff = t - timedelta(days=rule.expire_after_days)
            while self.lo < len(self.times) and self.times[self.lo] <= cutoff:
                bucket = self.buckets[self.lo]
                self.counts[bucket] -= 1
                if not self.counts[bucket]:
                    del self.counts[bucket]
                self.lo += 1
        if self.lo == len(self.times):
            return 0
        n = len(self.times) - self.lo if self.buckets[-1] is None else len(self.counts)
        return engine.rule_value(rule, count=n, last=self.times[-1], now=t)


def _replay(acts, *, by_kind, inactive, base, since, created, threshold, now):
    """The contact's crossing: activities in time order, those of one instant together."""
    windows: dict[int, _Window] = {}
    prefix = unsubscribe_link_prefix()
    last_engaged = None
    latest = None
    i = 0
    while i < len(acts):
        t = acts[i].occurred_at
        first = None
        while i < len(acts) and acts[i].occurred_at == t:
            a = acts[i]
            i += 1
            if is_engagement(a.kind, a.is_machine, a.url, prefix):
                last_engaged = t
            for r in by_kind.get(a.kind, ()):
                if activity_matches(r, a, now=t, link_prefix=prefix):
                    windows.setdefault(r.pk, _Window(r)).add(t)
                    first = first or a.pk
                    latest = (t, a.pk)
        if first is None or t < since:
            continue
        total = base + sum(w.value(t) for w in windows.values())
        for r in inactive:
            if not in_force(r, t):
                continue
            cutoff = t - timedelta(days=r.inactive_days or 0)
            if (last_engaged < cutoff) if last_engaged is not None else (created < cutoff):
                total += r.points
        if total >= threshold:
            return t, first
    return latest or (now, None)
