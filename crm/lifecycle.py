"""The only code that changes a contact's lifecycle stage.

Every change locks the contact row, checks the move is allowed, writes a
:class:`~crm.models.LifecycleTransition` with the time the change really happened, and
publishes "stage changed" to the handlers named in ``settings.STAGE_CHANGED_HANDLERS``.
Nothing else assigns ``Contact.stage``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, F, Value, When
from django.utils import timezone

from . import events
from .models import Activity, Contact, LifecycleTransition, Stage

S = Stage
# Which moves are allowed from each stage. Backward moves (recycle, churn, revive) are
# normal business; moving to the stage a contact is already in is not a move. An MQL leaves
# only by a sales decision — accepted (sql), rejected (recycled) or disqualified — so that
# every MQL counts in the acceptance rate (METRICS.md); a deal on an MQL accepts it first
# (crm.sales).
ALLOWED_MOVES: dict[str, frozenset[str]] = {
    S.LEAD: frozenset({S.MQL, S.SQL, S.OPPORTUNITY, S.CUSTOMER, S.DISQUALIFIED}),
    S.MQL: frozenset({S.SQL, S.RECYCLED, S.DISQUALIFIED}),
    S.SQL: frozenset({S.OPPORTUNITY, S.CUSTOMER, S.RECYCLED, S.DISQUALIFIED}),
    S.OPPORTUNITY: frozenset({S.CUSTOMER, S.RECYCLED, S.DISQUALIFIED}),
    S.CUSTOMER: frozenset({S.CHURNED, S.OPPORTUNITY}),
    S.RECYCLED: frozenset({S.MQL, S.SQL, S.OPPORTUNITY, S.CUSTOMER, S.DISQUALIFIED}),
    S.DISQUALIFIED: frozenset({S.LEAD}),
    S.CHURNED: frozenset({S.OPPORTUNITY, S.CUSTOMER}),
}


class StageChangeError(Exception):
    """A move the lifecycle does not allow; carries the contact's current stage."""

    def __init__(self, message: str, *, current_stage: str):
        super().__init__(message)
        self.current_stage = current_stage


def can_move(from_stage: str, to_stage: str) -> bool:
    return to_stage in ALLOWED_MOVES.get(from_stage, frozenset())


def stage_change(
    *,
    contact: Contact | int,
    to_stage: str,
    at: datetime | None = None,
    by_user=None,
    by_system: str = "",
    reason_code: str = "",
    note: str = "",
    activity: Activity | None = None,
    expected_from: Iterable[str] | None = None,
) -> LifecycleTransition:
    """Move one contact to ``to_stage`` and return the recorded transition.

    ``expected_from`` makes a decision conditional on the stage the actor saw (e.g. sales
    accepting an MQL): if another actor moved the contact first, :class:`StageChangeError`
    is raised instead of recording a second decision.
    """
    contact_id = contact.pk if isinstance(contact, Contact) else contact
    with transaction.atomic():
        locked = Contact.objects.select_for_update(no_key=True).get(pk=contact_id)
        if expected_from is not None and locked.stage not in set(expected_from):
            raise StageChangeError(
                f"The contact is no longer {'/'.join(sorted(expected_from))}: "
                f"it is {locked.get_stage_display()} now.",
                current_stage=locked.stage,
            )
        if not can_move(locked.stage, to_stage):
            raise StageChangeError(
                f"A contact in stage {locked.get_stage_display()} cannot move to "
                f"{Stage(to_stage).label}.",
                current_stage=locked.stage,
            )
        transition = _record(
            locked,
            to_stage,
            at=at,
            by_user=by_user,
            by_system=by_system,
            reason_code=reason_code,
            note=note,
            activity=activity,
        )
        Contact.objects.filter(pk=locked.pk).update(
            stage=locked.stage,
            stage_changed_at=locked.stage_changed_at,
            recycle_round=locked.recycle_round,
            updated_at=timezone.now(),
        )
        if isinstance(contact, Contact):
            contact.stage = locked.stage
            contact.stage_changed_at = locked.stage_changed_at
            contact.recycle_round = locked.recycle_round
        events.stage_changed([transition])
    return transition


# The stages a profile edit or a contact import may move a contact from: an MQL waits for
# sales to decide it (crm.sales), and an edit must not make that decision for them.
EDITABLE_FROM = frozenset(Stage) - {Stage.MQL}


def stage_edit(
    *, contact: Contact | int, to_stage: str, by_user=None, by_system: str = "", reason_code: str
) -> LifecycleTransition:
    """A stage set by editing a contact or importing it: a :func:`stage_change` that is
    refused for an MQL (checked under the row lock, so an MQL made meanwhile is refused too).
    """
    try:
        return stage_change(
            contact=contact,
            to_stage=to_stage,
            by_user=by_user,
            by_system=by_system,
            reason_code=reason_code,
            expected_from=EDITABLE_FROM,
        )
    except StageChangeError as exc:
        if exc.current_stage != Stage.MQL:
            raise
        raise StageChangeError(
            "This contact is an MQL waiting for a sales decision: accept or reject it in the "
            "MQL queue.",
            current_stage=Stage.MQL,
        ) from None


def stages_change_bulk(
    *,
    to_stage: str,
    at_by_contact: Mapping[int, datetime],
    by_system: str,
    reason_code: str = "",
    activity_by_contact: Mapping[int, int] | None = None,
    owner_by_contact: Mapping[int, int] | None = None,
) -> list[LifecycleTransition]:
    """Move many contacts to ``to_stage`` at once (e.g. scoring's MQL crossings).

    Contacts whose current stage does not allow the move are skipped silently: a batch
    decision never overrides one that sales made in the meantime. Set-based: one locking
    read, one insert, one update per distinct stage. ``owner_by_contact`` (scoring's owner
    assignment of new MQLs) is written by the same UPDATE: ``owner`` and ``stage`` are
    both indexed, so a second UPDATE would rewrite each row and its index entries again.
    """
    activity_by_contact = activity_by_contact or {}
    if not at_by_contact:
        return []
    allowed_from = [s for s, moves in ALLOWED_MOVES.items() if to_stage in moves]
    with transaction.atomic():
        locked = list(
            # FOR NO KEY UPDATE (here and for every contact lock taken to change a stage or
            # score): those writes never touch a key, and the weaker lock does not block
            # the FOR KEY SHARE that each concurrently ingested activity's foreign-key check
            # takes on its contact at commit — FOR UPDATE deadlocked concurrent batches.
            Contact.objects.select_for_update(no_key=True)
            .filter(pk__in=list(at_by_contact), stage__in=allowed_from)
            .only("id", "stage", "stage_changed_at", "recycle_round")
            .order_by("pk")
        )
        transitions = []
        for contact in locked:
            from_stage = contact.stage
            at = _clamp(at_by_contact[contact.pk], contact.stage_changed_at)
            transitions.append(
                LifecycleTransition(
                    contact_id=contact.pk,
                    from_stage=from_stage,
                    to_stage=to_stage,
                    at=at,
                    by_system=by_system,
                    reason_code=reason_code,
                    recycle_round=contact.recycle_round,
                    activity_id=activity_by_contact.get(contact.pk),
                )
            )
        LifecycleTransition.objects.bulk_create(transitions)
        _stage_times_set(
            to_stage, {t.contact_id: t.at for t in transitions}, owner_by_contact or {}
        )
        events.stage_changed(transitions)
    return transitions


# PostgreSQL: one UPDATE joined to two unnest()ed arrays, whatever the number of contacts;
# a CASE of one WHEN per contact costs more to build in Python than to run.
_STAGE_TIMES_SQL = (
    "UPDATE crm_contact SET stage = %s, stage_changed_at = v.at, updated_at = %s "
    "FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, at) WHERE crm_contact.id = v.id"
)
_STAGE_TIMES_OWNERS_SQL = (
    "UPDATE crm_contact SET stage = %s, stage_changed_at = v.at, updated_at = %s, "
    "owner_id = COALESCE(v.o, crm_contact.owner_id) "
    "FROM unnest(%s::bigint[], %s::timestamptz[], %s::bigint[]) AS v(id, at, o) "
    "WHERE crm_contact.id = v.id"
)


def _stage_times_set(
    to_stage: str, at_by_contact: Mapping[int, datetime], owners: Mapping[int, int]
) -> None:
    """Set the stage of these (locked) contacts, each with its own change time (and the
    owner, for contacts in ``owners``)."""
    if not at_by_contact:
        return
    now = timezone.now()
    ids = sorted(at_by_contact)  # id order: concurrent writers lock rows in the same order
    if connection.vendor == "postgresql":
        params = [to_stage, now, ids, [at_by_contact[i] for i in ids]]
        with connection.cursor() as cursor:
            if any(i in owners for i in ids):
                cursor.execute(_STAGE_TIMES_OWNERS_SQL, [*params, [owners.get(i) for i in ids]])
            else:
                cursor.execute(_STAGE_TIMES_SQL, params)
        return
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        owned = [When(pk=cid, then=Value(owners[cid])) for cid in part if cid in owners]
        extra = {}
        if owned:
            extra["owner_id"] = Case(*owned, default=F("owner_id"), output_field=BigIntegerField())
        Contact.objects.filter(pk__in=part).update(
            stage=to_stage,
            stage_changed_at=Case(*[When(pk=cid, then=Value(at_by_contact[cid])) for cid in part]),
            updated_at=now,
            **extra,
        )


def stage_import(
    *,
    contact: Contact,
    to_stage: str,
    at: datetime,
    by_user=None,
    reason_code: str = "import",
    note: str = "",
) -> LifecycleTransition:
    """Record a past stage change (history import) at its real time.

    History is appended, oldest first: the change must not be older than the contact's
    latest recorded change, so every transition's ``from_stage`` stays the stage the one
    before it reached and the recycle rounds stay numbered in order (nothing recorded is
    rewritten). A contact imported with its history is created with its original
    ``created_at`` first.
    """
    if timezone.is_naive(at):
        raise ValueError("A stage change needs a time with a time zone.")
    if at > timezone.now():
        raise StageChangeError(
            "A past stage change cannot be in the future.", current_stage=contact.stage
        )
    with transaction.atomic():
        locked = Contact.objects.select_for_update(no_key=True).get(pk=contact.pk)
        if locked.stage_changed_at is not None and at < locked.stage_changed_at:
            raise StageChangeError(
                f"This contact's latest stage change is at "
                f"{timezone.localtime(locked.stage_changed_at):%Y-%m-%d %H:%M %Z}; import its "
                f"history oldest first (a change cannot be inserted before a later one).",
                current_stage=locked.stage,
            )
        if not can_move(locked.stage, to_stage):
            raise StageChangeError(
                f"A contact in stage {locked.get_stage_display()} cannot move to "
                f"{Stage(to_stage).label}.",
                current_stage=locked.stage,
            )
        transition = _record(
            locked,
            to_stage,
            at=at,
            by_user=by_user,
            by_system="" if by_user else "import",
            reason_code=reason_code,
            note=note,
            activity=None,
        )
        Contact.objects.filter(pk=locked.pk).update(
            stage=locked.stage,
            stage_changed_at=locked.stage_changed_at,
            recycle_round=locked.recycle_round,
            updated_at=timezone.now(),
        )
        events.stage_changed([transition])
    return transition


# How far along the funnel a stage is, to pick a merged record's stage: the side stages
# rank with the step they leave from (a churned customer is still one that bought).
FUNNEL_RANK = {
    Stage.LEAD: 0,
    Stage.RECYCLED: 0,
    Stage.DISQUALIFIED: 0,
    Stage.MQL: 1,
    Stage.SQL: 2,
    Stage.OPPORTUNITY: 3,
    Stage.CUSTOMER: 4,
    Stage.CHURNED: 4,
}


def stage_resync(*, contact: Contact, duplicate: Contact) -> None:
    """After a merge moved ``duplicate``'s history onto the locked ``contact``: the merged
    record takes the duplicate's stage (with its time) when it is further along the funnel
    than its own — a customer merged with yesterday's web-form lead stays a customer —
    and the higher recycle round of the two, so round numbers never go back.

    No transition is written and no stage-changed handler runs: the history already holds
    every move of both records, and a transition for the merge itself would count a
    stage entry twice in the reports.
    """
    fields = {"recycle_round": max(contact.recycle_round, duplicate.recycle_round)}
    if FUNNEL_RANK.get(duplicate.stage, 0) > FUNNEL_RANK.get(contact.stage, 0):
        fields |= {"stage": duplicate.stage, "stage_changed_at": duplicate.stage_changed_at}
    if all(getattr(contact, name) == value for name, value in fields.items()):
        return
    Contact.objects.filter(pk=contact.pk).update(**fields, updated_at=timezone.now())
    for name, value in fields.items():
        setattr(contact, name, value)


def _clamp(at: datetime | None, last_change: datetime | None) -> datetime:
    """Keep history ordered: a change is never dated before the contact's previous one.

    An activity delivered late (e.g. a backfill) may carry an older time than the latest
    recorded stage change; the new change is then dated at that previous change.
    """
    at = at or timezone.now()
    if last_change is not None and at < last_change:
        return last_change
    return at


def _record(contact: Contact, to_stage: str, *, at, **fields) -> LifecycleTransition:
    """Write the transition and update the locked instance's stage fields in memory."""
    at = _clamp(at, contact.stage_changed_at)
    if to_stage == Stage.RECYCLED:
        contact.recycle_round += 1
    transition = LifecycleTransition.objects.create(
        contact=contact,
        from_stage=contact.stage,
        to_stage=to_stage,
        at=at,
        recycle_round=contact.recycle_round,
        **fields,
    )
    contact.stage = to_stage
    contact.stage_changed_at = at
    return transition


def stages_initial(*, contacts: Iterable[Contact], by_user=None, by_system: str = "") -> None:
    """Record the first stage of newly created contacts (``'' → stage`` at creation).

    Called by every path that creates contacts (UI, import, API, ingestion) inside the
    creating transaction, so the history always starts where the contact did.
    """
    transitions = [
        LifecycleTransition(
            contact_id=c.pk,
            from_stage="",
            to_stage=c.stage,
            at=c.created_at,
            by_user=by_user,
            by_system=by_system,
            reason_code="created",
        )
        for c in contacts
    ]
    LifecycleTransition.objects.bulk_create(transitions)
    events.stage_changed(transitions)


# --- Bulk history import (backfills and demo data) -------------------------------------

IMPORT_CHUNK = 2000  # ids per statement: stays under SQLite's bound-parameter limit


class HistoryImportError(ValueError):
    """Some contacts' histories are inconsistent; ``errors`` maps contact id to the reason."""

    def __init__(self, errors: dict[int, str]):
        super().__init__(f"{len(errors)} contact(s) with an inconsistent history")
        self.errors = errors


def history_import_bulk(*, rows: Iterable[Mapping], by_system: str = "import") -> int:
    """Append many contacts' past stage changes at once and set their current stages.

    ``rows`` are mappings with ``contact_id``, ``to_stage``, ``at`` (aware) and optionally
    ``from_stage``, ``by_user_id``, ``by_system``, ``reason_code``, ``note``,
    ``activity_id``; each contact's rows in time order. A contact's sequence starts at its
    current stage (or at ``''`` when it has no history yet, as for a new contact's first
    ``'' → lead``), every move must be in :data:`ALLOWED_MOVES`, times never go back, and
    ``recycle_round`` is counted here as :func:`stage_change` counts it. If any contact's
    sequence is inconsistent nothing is written and :class:`HistoryImportError` lists them.
    Returns the number of transitions written (``COPY`` on PostgreSQL).

    Unlike the other functions here this publishes no "stage changed" event, on purpose:
    it exists for loads of thousands to millions of past changes (demo data, migrations
    from another CRM), where per-change handlers would be both slow and wrong (they react
    as if the change happened now). Such loads are followed by the apps' full rebuilds —
    scoring's rescore, the segment refresh, the report rollup rebuild — which derive the
    same state set-based from the stored history.
    """
    from django.db.models import Exists, OuterRef, Subquery

    from . import bulkload

    by_contact: dict[int, list[Mapping]] = {}
    for row in rows:
        by_contact.setdefault(row["contact_id"], []).append(row)
    if not by_contact:
        return 0
    ids = list(by_contact)
    current: dict[int, dict] = {}
    for i in range(0, len(ids), IMPORT_CHUNK):
        for c in (
            Contact.objects.filter(pk__in=ids[i : i + IMPORT_CHUNK])
            .annotate(
                has_history=Exists(LifecycleTransition.objects.filter(contact=OuterRef("pk")))
            )
            .values("pk", "stage", "stage_changed_at", "recycle_round", "has_history")
        ):
            current[c["pk"]] = c

    errors: dict[int, str] = {}
    out: list[tuple] = []
    final: dict[tuple[str, int], list[int]] = {}
    now = timezone.now()
    for contact_id, seq in by_contact.items():
        state = current.get(contact_id)
        if state is None:
            errors[contact_id] = "no such contact"
            continue
        stage = state["stage"] if state["has_history"] else ""
        last_at = state["stage_changed_at"] if state["has_history"] else None
        round_ = state["recycle_round"]
        written: list[tuple] = []
        for row in seq:
            to_stage, at = row["to_stage"], row["at"]
            problem = _import_problem(stage, last_at, row)
            if problem:
                errors[contact_id] = problem
                break
            round_ += to_stage == Stage.RECYCLED
            written.append(
                (
                    contact_id,
                    stage,
                    to_stage,
                    at,
                    now,
                    row.get("by_user_id"),
                    row.get("by_system", "" if row.get("by_user_id") else by_system),
                    row.get("reason_code", ""),
                    row.get("note", ""),
                    round_,
                    row.get("activity_id"),
                )
            )
            stage, last_at = to_stage, at
        else:
            out.extend(written)
            final.setdefault((stage, round_), []).append(contact_id)
    if errors:
        raise HistoryImportError(errors)

    with transaction.atomic():
        written_count = bulkload.rows_load(
            model=LifecycleTransition,
            fields=[
                "contact",
                "from_stage",
                "to_stage",
                "at",
                "recorded_at",
                "by_user",
                "by_system",
                "reason_code",
                "note",
                "recycle_round",
                "activity",
            ],
            rows=out,
        )
        latest_at = Subquery(
            LifecycleTransition.objects.filter(contact=OuterRef("pk"))
            .order_by("-at", "-id")
            .values("at")[:1]
        )
        # One UPDATE per (final stage, round) group and id chunk: a handful of statements
        # per call however many contacts, each taking its time from the latest transition.
        for (stage, round_), contact_ids in final.items():
            for i in range(0, len(contact_ids), IMPORT_CHUNK):
                Contact.objects.filter(pk__in=contact_ids[i : i + IMPORT_CHUNK]).update(
                    stage=stage, recycle_round=round_, stage_changed_at=latest_at, updated_at=now
                )
    return written_count


def _import_problem(stage: str, last_at: datetime | None, row: Mapping) -> str:
    """Why ``row`` cannot follow a history that ends in ``stage`` at ``last_at`` ('' if fine)."""
    to_stage, at = row["to_stage"], row["at"]
    if "from_stage" in row and row["from_stage"] != stage:
        return f"from_stage {row['from_stage']!r} but the contact was {stage or 'new'!r}"
    if to_stage not in Stage.values:
        return f"unknown stage {to_stage!r}"
    if stage and not can_move(stage, to_stage):
        return f"{stage} → {to_stage} is not an allowed move"
    if at is None or timezone.is_naive(at):
        return "a stage change needs an aware time"
    if last_at is not None and at < last_at:
        return f"{to_stage} at {at.isoformat()} is before the previous change"
    return ""
