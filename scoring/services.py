"""Writes of the scoring app: rules, settings and assignment rules with their history,
rescoring and decay."""

from __future__ import annotations

import logging
import operator
import threading
from datetime import timedelta
from functools import partial, reduce
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Max, Min, Q, Sum
from django.forms.models import model_to_dict
from django.utils import timezone

from crm.activity_queue import queued_activity_ids
from crm.models import Contact
from crm.segments import segments_refresh_reading

from . import backfill, engine, handoff, rescore_pass, rescore_slices, rescore_sql
from .models import (
    AssignmentRule,
    AssignmentRuleChange,
    LedgerEntry,
    RescoreRun,
    Rule,
    RuleVersion,
    ScoringSettings,
    SettingsVersion,
)
from .rules import rule_errors

log = logging.getLogger(__name__)
RULE_FIELDS = [
    "name",
    "kind",
    "field",
    "operator",
    "value",
    "activity_kind",
    "campaign",
    "url_contains",
    "form",
    "content_type",
    "frequency",
    "cap",
    "expire_after_days",
    "half_life_days",
    "negative",
    "inactive_days",
    "points",
    "active_from",
    "enabled",
]
# A run still queued this long after it was asked for has lost its task (the broker was
# down when it was sent, or the message was lost): the minute's pick-up starts it.
RESCORE_PICK_UP_AFTER = timedelta(minutes=2)
# Contacts per rescore/decay transaction: few round trips (one aggregate, one ledger sum,
# one insert per chunk) while memory stays well under the worker's 500 MB at 1M contacts.
RESCORE_CHUNK = 50_000


def _snapshot(rule: Rule) -> dict[str, Any]:
    data = model_to_dict(rule, fields=RULE_FIELDS)
    if data.get("active_from"):
        data["active_from"] = data["active_from"].isoformat()
    return data


def rule_check(*, data: dict[str, Any]) -> None:
    """Raise ``ValidationError`` (a message per field) unless ``data`` is a valid rule."""
    errors = rule_errors(data)
    if not (data.get("name") or "").strip():
        errors.setdefault("name", []).append("Give the rule a name.")
    if errors:
        raise ValidationError(errors)


def rule_save(*, rule: Rule | None = None, data: dict[str, Any], by=None) -> Rule:
    """Create or change a rule and record a version (who, what changed, when)."""
    rule = rule or Rule()
    # "Before" is the stored row, not the instance: a ModelForm (the rule page) has already
    # written the submitted values into it, which left every UI edit with nothing changed.
    before = _snapshot(Rule.objects.get(pk=rule.pk)) if rule.pk else {}
    for name in RULE_FIELDS:
        if name in data:
            setattr(rule, "campaign_id" if name == "campaign" else name, _fk(data[name]))
    merged = {**_snapshot(rule), "campaign": rule.campaign_id}
    rule_check(data=merged)
    with transaction.atomic():
        rule.updated_by = by
        rule.save()
        after = _snapshot(rule)
        changed = sorted(k for k in after if before.get(k) != after[k])
        number = (rule.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        RuleVersion.objects.create(rule=rule, number=number, snapshot=after, changed=changed, by=by)
    return rule


def _fk(value):
    return value.pk if hasattr(value, "pk") else value


SETTINGS_FIELDS = ["mql_threshold", "min_fit", "recycle_policy"]


def settings_update(*, data: dict[str, Any], by=None) -> ScoringSettings:
    """Change the threshold, minimum fit or recycle policy (admin) and record the change
    (``SettingsVersion``: who, what from what, when) when anything changed.

    Settings less strict than before qualify the leads they now let through: those are
    handed off at once, dated at the change (a hand-off otherwise waits for a score gain,
    which such a lead may never get)."""
    pk = ScoringSettings.load().pk
    with transaction.atomic():
        # Locked from the read on: a field this call leaves out keeps its stored value, and
        # the recorded "before" is the one this change replaced, even with two admins saving.
        conf = ScoringSettings.objects.select_for_update().get(pk=pk)
        before = _settings_snapshot(conf)
        threshold, min_fit, policy = _settings_check(data, conf)
        conf.mql_threshold, conf.min_fit, conf.recycle_policy = threshold, min_fit, policy
        conf.updated_by = by
        # Never the decay run's clock: a run may move it while this form is open.
        conf.save(
            update_fields=["mql_threshold", "min_fit", "recycle_policy", "updated_by", "updated_at"]
        )
        after = _settings_snapshot(conf)
        changed = [name for name in SETTINGS_FIELDS if before[name] != after[name]]
        if changed:
            SettingsVersion.objects.create(
                snapshot=after,
                changed=changed,
                previous={name: before[name] for name in changed},
                by=by,
            )
    old = (before["mql_threshold"], before["min_fit"])
    if _less_strict(old, (threshold, min_fit)):
        backfill.mqls_catch_up(at=timezone.now(), unless_met=old)
    return conf


def _settings_snapshot(conf: ScoringSettings) -> dict[str, Any]:
    return {name: getattr(conf, name) for name in SETTINGS_FIELDS}


def _settings_check(data: dict[str, Any], conf: ScoringSettings) -> tuple[int, int | None, str]:
    """The new (threshold, minimum fit, policy), a field missing from ``data`` unchanged;
    ``ValidationError`` (a message per field) when one is not valid."""
    errors: dict[str, list[str]] = {}
    threshold = data.get("mql_threshold", conf.mql_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
        errors["mql_threshold"] = ["The MQL threshold must be a whole number above zero."]
    min_fit = data.get("min_fit", conf.min_fit)
    if min_fit is not None and (isinstance(min_fit, bool) or not isinstance(min_fit, int)):
        errors["min_fit"] = ["The minimum fit must be a whole number or empty."]
    policy = data.get("recycle_policy", conf.recycle_policy)
    if policy not in ScoringSettings.RecyclePolicy.values:
        errors["recycle_policy"] = ["Choose keep, halve or reset."]
    if errors:
        raise ValidationError(errors)
    return threshold, min_fit, policy


def _less_strict(before: tuple[int, int | None], after: tuple[int, int | None]) -> bool:
    """Whether the (threshold, minimum fit) ``after`` lets through a lead ``before`` held."""
    (old_threshold, old_fit), (threshold, fit) = before, after
    fit_lowered = old_fit is not None and (fit is None or fit < old_fit)
    return threshold < old_threshold or fit_lowered


ASSIGNMENT_RULE_FIELDS = ["order", "name", "countries", "industry", "size_band", "user", "enabled"]


def assignment_rule_save(
    *, rule: AssignmentRule | None = None, data: dict[str, Any], by=None
) -> AssignmentRule:
    """Create or change a lead-assignment rule and record it (``AssignmentRuleChange``:
    who, what changed, when); a save that changes nothing records nothing."""
    rule = rule or AssignmentRule()
    # "Before" is the stored row, not the instance: a ModelForm may already have written
    # the submitted values into it (as with rule_save).
    before = _assignment_snapshot(AssignmentRule.objects.get(pk=rule.pk)) if rule.pk else {}
    for name in ASSIGNMENT_RULE_FIELDS:
        if name in data:
            setattr(rule, "user_id" if name == "user" else name, _fk(data[name]))
    rule.full_clean()
    with transaction.atomic():
        rule.save()
        after = _assignment_snapshot(rule)
        if not before:
            action, changed = AssignmentRuleChange.Action.CREATED, []
        else:
            action = AssignmentRuleChange.Action.CHANGED
            changed = [name for name in ASSIGNMENT_RULE_FIELDS if before[name] != after[name]]
        if action == AssignmentRuleChange.Action.CREATED or changed:
            AssignmentRuleChange.objects.create(
                rule=rule, action=action, snapshot=after, changed=changed, by=by
            )
    return rule


def assignment_rule_delete(*, rule: AssignmentRule, by=None) -> None:
    """Delete a lead-assignment rule, keeping a record of it and of who deleted it."""
    with transaction.atomic():
        stored = AssignmentRule.objects.select_for_update().filter(pk=rule.pk).first()
        if stored is None:  # deleted meanwhile (a double submit): recorded once, by the first
            return
        # The record names no rule: the rule is gone, its snapshot says what it was.
        AssignmentRuleChange.objects.create(
            action=AssignmentRuleChange.Action.DELETED, snapshot=_assignment_snapshot(stored), by=by
        )
        stored.delete()


def _assignment_snapshot(rule: AssignmentRule) -> dict[str, Any]:
    return {
        name: getattr(rule, "user_id" if name == "user" else name)
        for name in ASSIGNMENT_RULE_FIELDS
    }


def rescore_start(*, by=None) -> RescoreRun:
    """Queue a full rescore; the task is sent after this transaction commits.

    The run is committed whatever the broker says: when the task cannot be sent, the run
    stays queued and ``rescores_pick_up`` (beat, every minute) starts it.
    """
    with transaction.atomic():
        run = RescoreRun.objects.create(requested_by=by, total=Contact.objects.count())
        transaction.on_commit(partial(_enqueue, run.pk), robust=True)
    return run


def _enqueue(run_id: int) -> None:
    from .tasks import rescore

    try:
        result = rescore.delay(run_id)
    except Exception:
        # The caller's work is committed: a broker that is down must not turn it into a
        # 500. The run waits, queued, for the minute's pick-up.
        log.warning(
            "rescore %s could not be queued; it stays queued until the minute's pick-up "
            "starts it (scoring.tasks.rescores_pick_up)",
            run_id,
            exc_info=True,
        )
        return
    RescoreRun.objects.filter(pk=run_id, task_id="").update(task_id=result.id or "")


def rescores_pick_up(*, now=None, task_id: str = "") -> RescoreRun | None:
    """Run the oldest rescore still queued ``RESCORE_PICK_UP_AFTER`` after it was asked for
    (its task could not be sent, or its message was lost); None when there is none.

    One run per call: beat calls it every minute, and a run queued a moment ago is left to
    its own task. Its own task may still arrive, late: the claim in ``rescore_execute``
    lets only one of them run it.
    """
    now = now or timezone.now()
    due = Q(status=RescoreRun.Status.QUEUED, created_at__lte=now - RESCORE_PICK_UP_AFTER)
    if task_id:  # this very task's run, when its message is redelivered after a worker died
        due |= Q(status=RescoreRun.Status.RUNNING, task_id=task_id)
    stale = (
        RescoreRun.objects.filter(due)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    if stale is None:
        return None
    log.warning("rescore %s: its task never started it; the pick-up runs it now", stale)
    return rescore_execute(run_id=stale, task_id=task_id)


def _rescore_claim(run_id: int, task_id: str) -> bool:
    """Take the run for this execution: one conditional UPDATE, so two executions (its own
    task and the pick-up, or a duplicated message) never run it concurrently.

    A queued run is taken by anyone. A running one only by the task that took it, under the
    same task id: the message redelivered after its worker died (late acks) resumes it.
    """
    mine = Q(status=RescoreRun.Status.QUEUED)
    if task_id:
        mine |= Q(status=RescoreRun.Status.RUNNING, task_id=task_id)
    fields = {"status": RescoreRun.Status.RUNNING, "started_at": timezone.now()}
    if task_id:
        fields["task_id"] = task_id
    return RescoreRun.objects.filter(mine, pk=run_id).update(**fields) == 1


def rescore_execute(
    *,
    run_id: int,
    chunk: int = RESCORE_CHUNK,
    hand_off: bool = True,
    now=None,
    portable: bool = False,
    task_id: str = "",
) -> RescoreRun:
    """Recompute every contact's score, chunk by chunk of contact ids.

    Contacts the new rules lift over the threshold are handed off to sales (dated at the
    rescore), as when an activity pushes them over; ``hand_off=False`` is for loading
    history (the demo), whose stage history is already recorded.

    Each chunk is its own transaction and locks its contacts, so ingestion (which locks
    the contacts of its batch in the scoring handler) waits for at most one chunk and then
    scores against the adjusted ledger: nothing is counted twice. Memory stays bounded by
    the chunk size, whatever the number of contacts.

    On PostgreSQL one parallel pass over the activities computes every contact's
    adjustments first (scoring.rescore_pass), and a chunk is one statement (check and writes);
    elsewhere, or with ``portable=True`` (tests check both give the same ledger), the
    engine's reconcile.
    ``now`` dates the adjustments (default: the start of the run).
    ``task_id``: the Celery task executing it (see ``_rescore_claim``). A run that another
    execution has taken, or that is finished, is returned as it is.
    """
    if not _rescore_claim(run_id, task_id):
        log.info("rescore %s is taken by another execution or finished; skipped", run_id)
        return RescoreRun.objects.get(pk=run_id)
    try:
        rules = engine.rules_enabled()
        now = now or timezone.now()
        totals = {"processed": 0, "contacts_changed": 0, "entries_created": 0}
        if connection.vendor == "postgresql" and not portable:
            _rescore_postgresql(run_id, chunk, rules, now, totals, hand_off)
        else:
            _rescore_portable(run_id, chunk, rules, now, totals, hand_off)
        processed = totals["processed"]
        # Segments on the score follow the new scores now, not at the next hourly refresh.
        segments_refresh_reading("score")
        RescoreRun.objects.filter(pk=run_id).update(
            status=RescoreRun.Status.DONE, finished_at=timezone.now(), total=processed
        )
    except Exception as exc:
        log.exception("rescore %s failed", run_id)
        RescoreRun.objects.filter(pk=run_id).update(
            status=RescoreRun.Status.FAILED, finished_at=timezone.now(), error=str(exc)[:2000]
        )
        raise
    return RescoreRun.objects.get(pk=run_id)


def _rescore_postgresql(run_id, chunk, rules, now, totals, hand_off) -> None:
    """Per slice of contact ids (several connections at once, scoring.rescore_slices):
    one pass computes its contacts' adjustments (scoring.rescore_pass); then each chunk:
    lock its contacts, and in one statement check them against the pass and append the
    unchanged ones' adjustments and set their changed scores (those changed since are
    rescored exactly, scoring.rescore_sql)."""
    bounds = Contact.objects.aggregate(lo=Min("pk"), hi=Max("pk"))
    lo, hi = bounds["lo"] or 0, (bounds["hi"] or -1) + 1
    if lo >= hi:
        return
    n = rescore_slices.connections_wanted()
    progress = _Progress(run_id, totals)
    slices = rescore_slices.slice_bounds(lo, hi, n)
    work = partial(
        _rescore_slice, chunk=chunk, rules=rules, now=now, hand_off=hand_off, progress=progress
    )
    if len(slices) == 1:
        work(slices[0], parallel=True)
        return
    rescore_slices.in_threads([partial(_slice_thread, work, ids) for ids in slices])


def _slice_thread(work, ids, stop) -> None:
    work(ids, parallel=False, stop=stop)


class _Progress:
    """A rescore's running totals, shared by its slices' threads; each chunk adds its
    own to the run's row (in the chunk's transaction)."""

    def __init__(self, run_id, totals):
        self.run_id, self.totals = run_id, totals
        self._lock = threading.Lock()
        RescoreRun.objects.filter(pk=run_id).update(**dict.fromkeys(totals, 0))

    def add(self, **counts) -> None:
        with self._lock:
            for name, n in counts.items():
                self.totals[name] += n
        RescoreRun.objects.filter(pk=self.run_id).update(
            **{name: F(name) + n for name, n in counts.items()}
        )


def _rescore_slice(ids, *, chunk, rules, now, hand_off, progress, parallel, stop=None) -> None:
    """Rescore the contacts with ids in ``ids`` = ``[lo, hi)``: their pass, then chunk by
    chunk (``stop`` set: another slice failed, end at the next chunk)."""
    lo, hi = ids
    built = rescore_pass.pass_build(rules=rules, now=now, lo=lo, hi=hi, parallel=parallel)
    try:
        while lo < hi and not (stop and stop.is_set()):
            top = min(lo + chunk, hi)
            with transaction.atomic():
                locked = rescore_sql.chunk_lock(lo, top)
                outcome = None
                if locked:
                    threshold = ScoringSettings.load().mql_threshold if hand_off else None
                    if built is None:  # the pass gave up waiting: read chunk by chunk
                        outcome = rescore_sql.chunk_rescore(
                            lo=lo, hi=top, rules=rules, now=now, threshold=threshold
                        )
                    else:
                        outcome = rescore_pass.chunk_apply(
                            lo=lo, hi=top, rules=rules, built=built, now=now, threshold=threshold
                        )
                    if hand_off and outcome.handoff_entries:
                        handoff.mqls_hand_off(
                            entries=outcome.handoff_entries, scores=outcome.handoff_scores
                        )
                progress.add(
                    processed=locked,
                    contacts_changed=outcome.contacts_changed if outcome else 0,
                    entries_created=outcome.entries_created if outcome else 0,
                )
            lo = top
    finally:
        rescore_pass.pass_drop()


def _rescore_portable(run_id, chunk, rules, now, totals, hand_off) -> None:
    """Each chunk: lock, reconcile through the engine (values diffed in Python)."""

    def work(id_range, locked):
        if locked:
            outcome = engine.reconcile(
                id_range=id_range,
                rules=rules,
                now=now,
                mode="rescore",
                all_rules=True,
                cached_scores=locked,
            )
            totals["contacts_changed"] += len(outcome.contacts)
            totals["entries_created"] += len(outcome.entries)
            if hand_off:
                handoff.mqls_hand_off(entries=outcome.entries, scores=outcome.scores)
        totals["processed"] += len(locked)
        RescoreRun.objects.filter(pk=run_id).update(**totals)

    _each_locked_chunk(chunk, work)


def scores_rescore_all(*, by=None, hand_off: bool = True, now=None) -> RescoreRun:
    """Rescore now (or as of ``now``: a history load's end), in this process (demo
    seeder, management use, tests)."""
    run = RescoreRun.objects.create(requested_by=by, total=Contact.objects.count())
    return rescore_execute(run_id=run.pk, hand_off=hand_off, now=now)


def decay_run(*, now=None, chunk: int = RESCORE_CHUNK) -> int:
    """Apply expiry, half-life decay and inactivity penalties: dated entries, set-based.

    Only the rules whose worth changes with the clock are evaluated, in id-range chunks
    (a fit rule whose active-from date comes is one: the run applies it then).
    The clock can lift a lead too — a negative rule's points expiring or decaying — so
    each chunk's gains go through the hand-off, as a batch's do (dated at the run: the
    lead qualifies when the penalty ends). Returns the number of entries appended.
    """
    now = now or timezone.now()
    conf = ScoringSettings.load()
    rules = engine.time_dependent(engine.rules_enabled(), now=now, last_run=conf.decay_ran_at)
    if not rules:
        _decay_ran(conf, now)
        return 0
    created = []

    def work(id_range, locked):
        if locked:
            # Activities still queued count from their own turn, as incremental scoring
            # has them (read per chunk, under its lock: a drain holds its contacts' locks).
            queued = queued_activity_ids(contact_range=id_range)
            outcome = engine.reconcile(
                id_range=id_range, rules=rules, now=now, mode="decay", queued=queued
            )
            created.append(len(outcome.entries))
            handoff.mqls_hand_off(entries=outcome.entries)

    _each_locked_chunk(chunk, work)
    _decay_ran(conf, now)
    return sum(created)


def _decay_ran(conf: ScoringSettings, now) -> None:
    """Record a completed decay run's time (only forward: a run with an earlier clock
    never moves it back); rules coming into force after it are the next run's."""
    ScoringSettings.objects.filter(
        Q(decay_ran_at__isnull=True) | Q(decay_ran_at__lt=now), pk=conf.pk
    ).update(decay_ran_at=now)


def _each_locked_chunk(chunk: int, work) -> None:
    """Call ``work((lo, hi), locked)`` for every chunk of contact ids, in id order.

    Each call runs in its own transaction with the chunk's contacts locked, so ingestion
    (which locks its batch's contacts in the scoring handler) waits for one chunk at most.
    ``locked`` maps each locked contact id to its cached score (read by the lock itself).
    """
    bounds = Contact.objects.aggregate(lo=Min("pk"), hi=Max("pk"))
    lo, hi = bounds["lo"] or 0, (bounds["hi"] or -1) + 1
    while lo < hi:
        with transaction.atomic():
            locked = dict(
                Contact.objects.select_for_update(no_key=True, of=("self",))
                .filter(pk__gte=lo, pk__lt=lo + chunk)
                .order_by("pk")
                .values_list("pk", "scorecard__score")
            )
            work((lo, lo + chunk), locked)
        lo += chunk


def recycle_apply(*, transitions, up_to_each: bool = False) -> int:
    """Apply the recycle policy to the engagement points of contacts just recycled.

    Choice: the policy takes back what each engagement rule *gave* — a rule with a
    positive total loses all of it (reset) or half, rounded down per rule (halve; the
    lead keeps the odd point). A rule whose points are negative (a careers-page visit at
    −10) keeps them: recycling forgives no negative signal, so after a reset the
    engagement total is the penalties alone, not zero.

    ``up_to_each`` (a history replay applying a week's recycles at the week's end,
    scoring.replay): only the entries dated up to each contact's recycle count — what the
    rules had given at that moment. One transition per contact."""
    recycled = {t.contact_id: t.at for t in transitions if t.to_stage == "recycled"}
    if not recycled:
        return 0
    policy = ScoringSettings.load().recycle_policy
    if policy == ScoringSettings.RecyclePolicy.KEEP:
        return 0
    given = LedgerEntry.objects.filter(
        contact_id__in=list(recycled), rule__kind=Rule.Kind.ENGAGEMENT
    )
    if up_to_each:
        given = given.filter(
            reduce(operator.or_, (Q(contact_id=c, at__lte=at) for c, at in recycled.items()))
        )
    sums = given.order_by().values_list("contact_id", "rule_id").annotate(s=Sum("points"))
    entries = []
    for contact_id, rule_id, total in sums:
        if total <= 0:
            continue
        take = total if policy == ScoringSettings.RecyclePolicy.RESET else total // 2
        if take:
            entries.append(
                LedgerEntry(
                    contact_id=contact_id,
                    rule_id=rule_id,
                    points=-take,
                    at=recycled[contact_id],
                    reason=LedgerEntry.Reason.RECYCLE_RESET,
                )
            )
    LedgerEntry.objects.bulk_create(entries)
    engine.scores_refresh(contact_ids={e.contact_id for e in entries})
    return len(entries)
