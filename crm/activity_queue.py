"""The activity queue: "activities recorded" handlers applied off the request, in bulk.

Recording a batch (crm.ingest) stores its activities and the core's own consequences —
suppression, re-opening, campaign members, first touch — in one transaction, and adds one
:class:`~crm.models.QueuedBatch` row naming the stored activities. When that transaction
commits, a Celery task drains the queue: it takes the oldest batches (up to
``ACTIVITY_QUEUE_DRAIN_SIZE`` activities at a time, several batches merged into one
event), calls the handlers that declared the "queued" phase (scoring, nurture, segments,
reports) once for the merged event, and deletes the rows, all in one transaction. So:

* a batch is applied exactly once: its row is written with its activities and deleted with
  the handlers' writes; a drain that fails or dies leaves it queued;
* batches are applied oldest queued first, one drain at a time (a PostgreSQL advisory
  lock; SQLite serialises writers anyway). Batches that share contacts are queued in the
  order they were recorded (ingestion locks the contacts before it stores), so each
  contact's batches apply in recording order — except that a batch waiting out a back-off
  after a failure is overtaken. A drain task that finds another drain running returns at
  once instead of holding a worker slot: the running one loops until nothing is due, and
  looks once more after releasing its turn;
* the request does not wait for scoring, segments or reports, and a failing handler does
  not refuse a mail provider's webhook — the batch waits, is retried, and after
  ``ACTIVITY_QUEUE_MAX_ATTEMPTS`` failures is parked (visible in the admin and /healthz);
  it never holds up the batches behind it;
* the beat schedule drains every minute too, in case a task message was lost;
* a contact merge re-points the queued rows that name the duplicate, and the nightly
  report check waits while batches are queued (reports.tasks).

Scores, segment membership, enrollments and report figures therefore follow an activity
by the drain's delay (well under a second on an idle worker), not inside its request.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from . import events
from .models import Activity, QueuedBatch

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the drain ("leadcycle activity queue" → a fixed bigint).
_DRAIN_LOCK = 0x1EADC7C1E


@dataclass
class DrainResult:
    batches: int = 0
    activities: int = 0
    failed: int = 0
    parked: int = 0


def batch_queue(event: events.ActivitiesRecorded) -> None:
    """Queue a recorded batch; must run inside the transaction that stored it."""
    QueuedBatch.objects.create(
        activity_ids=[a.pk for a in event.activities],
        contact_ids=[a.contact_id for a in event.activities],
        created_contact_ids=sorted(event.created_contact_ids),
        size=len(event.activities),
    )
    # robust: the batch is committed whatever the broker says; the beat drain finds it.
    transaction.on_commit(_drain_soon, robust=True)


def _drain_soon() -> None:
    from .tasks import drain_activity_queue

    drain_activity_queue.delay()


def queue_drain(
    *,
    size: int | None = None,
    max_rounds: int | None = None,
    max_seconds: float | None = None,
) -> DrainResult:
    """Apply queued batches, oldest first, until none is due (or the round or time budget
    is spent).

    Each round is one transaction over up to ``size`` activities. A batch that fails waits
    out a back-off (later drains retry it) and is parked after too many attempts. A drain
    that finds another drain running returns: that one loops until nothing is due, and
    after finding nothing it looks once more with the turn released, so a batch committed
    while it was finishing (whose own task gave way to it) is not left for the minute's
    drain.
    """
    size = size or settings.ACTIVITY_QUEUE_DRAIN_SIZE
    result = DrainResult()
    pending = _PendingIndex()
    started = time.monotonic()
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
        rounds += 1
        outcome = _drain_round(size=size, result=result, pending=pending)
        if outcome == _BUSY:
            break
        if outcome == _EMPTY and not QueuedBatch.objects.due(timezone.now()).exists():
            break
    return result


def queue_status() -> dict:
    """What /healthz and the admin show: pending and parked batches, the oldest's age."""
    pending = QueuedBatch.objects.pending()
    oldest = pending.order_by("pk").values_list("queued_at", flat=True).first()
    return {
        "pending_batches": pending.count(),
        "parked_batches": QueuedBatch.objects.filter(parked_at__isnull=False).count(),
        "oldest_pending_seconds": (
            round((timezone.now() - oldest).total_seconds(), 1) if oldest else 0
        ),
    }


def queued_activity_ids(*, contact_range: tuple[int, int]) -> set[int]:
    """Activities of the batches still queued (pending or parked) whose contacts have ids
    in ``[lo, hi)``: what scoring's decay leaves out until the batch's turn. Read under the
    range's contact locks, it cannot miss a batch recorded meanwhile (recording locks its
    contacts too) nor keep one a drain has just applied (a drain deletes its rows in the
    transaction that applies them)."""
    lo, hi = contact_range
    index = _PendingIndex()
    index.refresh()
    return {a for c, ids in index.by_contact.items() if lo <= c < hi for a in ids}


def batches_repoint(*, duplicate_id: int, keep_id: int) -> int:
    """A merge moved ``duplicate_id``'s activities to ``keep_id``: re-point the queued
    rows that name it (in the merge's transaction). The rows are re-created, not updated,
    so a drain's cached index (which reads each row once) sees them as new."""
    moved = 0
    for batch in QueuedBatch.objects.select_for_update().order_by("pk"):
        if duplicate_id not in batch.contact_ids:
            continue
        contact_ids = [keep_id if c == duplicate_id else c for c in batch.contact_ids]
        old_pk = batch.pk
        batch.pk = None
        batch.contact_ids = contact_ids
        batch.created_contact_ids = [
            keep_id if c == duplicate_id else c for c in batch.created_contact_ids
        ]
        batch.save(force_insert=True)
        QueuedBatch.objects.filter(pk=old_pk).delete()
        moved += 1
    return moved


def batches_retry(*, batch_ids: Sequence[int]) -> int:
    """Un-park batches (after the handler's fault is fixed); the next drain applies them."""
    count = QueuedBatch.objects.filter(pk__in=batch_ids).update(
        parked_at=None, retry_at=None, attempts=0, last_error=""
    )
    if count:
        transaction.on_commit(_drain_soon, robust=True)
    return count


_APPLIED, _EMPTY, _BUSY = "applied", "empty", "busy"
# Failures of the database itself (a lost connection, a deadlock) are not the batch's
# fault: the drain stops and a later one retries, without counting an attempt.
_TRANSIENT = (OperationalError, InterfaceError)


def _drain_round(*, size: int, result: DrainResult, pending: _PendingIndex) -> str:
    """One transaction: take the oldest due batches and apply them merged.

    If the merged apply fails, the whole round rolls back and each of its batches is then
    applied in a transaction of its own, so one faulty batch does not hold up the others;
    the faulty one records the error (no savepoint in the common path: the handlers' row
    locks and writes stay in the top-level transaction).
    """
    taken: list[int] = []
    try:
        with transaction.atomic():
            if not _serialise():
                return _BUSY  # another drain is running; it loops until nothing is due
            batches = _take(size=size)
            if not batches:
                return _EMPTY
            taken = [b.pk for b in batches]
            applied = _apply(batches, pending)
    except _TRANSIENT:
        raise
    except Exception:
        if not taken:
            raise  # reading the queue failed: nothing to retry batch by batch
        logger.warning("activity queue: drain of batches %s failed; one by one", taken)
        for pk in taken:
            _drain_one(pk, result=result, pending=pending)
        return _APPLIED
    _done(batches, applied, result)
    return _APPLIED


def _drain_one(pk: int, *, result: DrainResult, pending: _PendingIndex) -> None:
    """Apply one batch in its own transaction, or record its failure in another."""
    batch = None
    try:
        with transaction.atomic():
            if not _serialise():
                return  # another drain took over; it applies the batch
            # Due only: another drain may have recorded this batch's failure meanwhile.
            batch = QueuedBatch.objects.due(timezone.now()).filter(pk=pk).first()
            if batch is None:
                return
            applied = _apply([batch], pending)
    except _TRANSIENT:
        raise
    except Exception:
        if batch is None:
            raise
        with transaction.atomic():
            _failed(batch, result)
    else:
        _done([batch], applied, result)


def _serialise() -> bool:
    """Drains run one at a time, so batches are applied in the order they were queued;
    False when another drain holds the turn (PostgreSQL's transaction-level advisory lock,
    released at commit; SQLite's IMMEDIATE transactions already serialise writers)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_DRAIN_LOCK])
        return cursor.fetchone()[0]


def _take(*, size: int) -> list[QueuedBatch]:
    """The oldest due batches holding up to ``size`` activities (at least one).

    Sizes first, then only the chosen rows: a backlog of small batches (tracking hits) must
    not cost reading every row's id list."""
    due = QueuedBatch.objects.due(timezone.now()).order_by("pk")
    chosen: list[int] = []
    total = 0
    for pk, n in due.values_list("pk", "size")[: max(1, size)]:
        if chosen and total + n > size:
            break
        chosen.append(pk)
        total += n
    return list(QueuedBatch.objects.filter(pk__in=chosen).order_by("pk"))


def _apply(batches: list[QueuedBatch], pending: _PendingIndex) -> int:
    """Run the queued handlers once for the batches' activities, then drop the batches;
    return how many activities the handlers saw.

    The contacts are locked up front in id order, as ingestion does (crm.ingest), and the
    activities read after the lock (then a contact merge cannot move one under the
    handlers' feet; one moved before it is locked too, under its new contact). Activities
    deleted since they were queued (a contact erased) are left out. Other batches still
    queued are read after the lock as well: ingestion locks the same contact rows before it
    stores an activity, and a merge re-points the queued rows it touches, so every stored
    activity of these contacts is by then either applied, in these batches, or in a queued
    row read here (the event's ``unapplied_ids``, only those of these contacts).
    """
    from .ingest import contacts_lock

    locked = {c for batch in batches for c in batch.contact_ids}
    contacts_lock(locked)
    activities = _activities([pk for batch in batches for pk in batch.activity_ids])
    moved = {a.contact_id for a in activities} - locked
    if moved:  # merged since they were queued (or a row queued without its contacts)
        contacts_lock(moved)
    created = frozenset(pk for batch in batches for pk in batch.created_contact_ids)
    if activities:
        contact_ids = {a.contact_id for a in activities}
        pending.refresh()
        unapplied = pending.unapplied(contact_ids, exclude={b.pk for b in batches})
        event = events.ActivitiesRecorded(activities, created, unapplied)
        for func in events.queued_handlers("ACTIVITIES_RECORDED_HANDLERS"):
            func(event)
    QueuedBatch.objects.filter(pk__in=[b.pk for b in batches]).delete()
    return len(activities)


class _PendingIndex:
    """The queued activities by contact, kept up to date across one drain's rounds.

    Each round needs the still-queued activities of the contacts it applies. Re-reading every
    queued row each round would cost O(backlog) per round — O(backlog²) to catch up after a
    worker was down; this reads the new rows' id lists once and forgets drained rows.
    """

    def __init__(self) -> None:
        self._rows: dict[int, list[tuple[int, int]]] = {}  # batch → [(contact, activity)]
        self.by_contact: dict[int, set[int]] = defaultdict(set)  # contact → activities

    def refresh(self) -> None:
        present = set(QueuedBatch.objects.values_list("pk", flat=True))
        for pk in self._rows.keys() - present:
            for contact, activity in self._rows.pop(pk):
                self.by_contact[contact].discard(activity)
        new = sorted(present - self._rows.keys())
        for start in range(0, len(new), 500):
            rows = QueuedBatch.objects.filter(pk__in=new[start : start + 500])
            for pk, activities, contacts in rows.values_list("pk", "activity_ids", "contact_ids"):
                if len(contacts) != len(activities):  # not recorded with the row: look up
                    found = dict(
                        Activity.objects.filter(pk__in=activities).values_list("pk", "contact_id")
                    )
                    contacts = [found.get(a, 0) for a in activities]
                pairs = list(zip(contacts, activities, strict=True))
                self._rows[pk] = pairs
                for contact, activity in pairs:
                    self.by_contact[contact].add(activity)

    def unapplied(self, contact_ids: set[int], *, exclude: set[int]) -> frozenset[int]:
        """Queued activities of ``contact_ids`` outside the batches ``exclude``."""
        mine = {a for pk in exclude for _, a in self._rows.get(pk, ())}
        return frozenset(
            a for c in contact_ids for a in self.by_contact.get(c, ()) if a not in mine
        )


def _activities(ids: list[int]) -> list[Activity]:
    """The activities by id, in id order: one array parameter on PostgreSQL, chunks of
    SQLite's parameter limit elsewhere."""
    if connection.vendor == "postgresql":
        rows = Activity.objects.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [ids]))
        return list(rows.order_by("pk"))
    found = []
    for start in range(0, len(ids), 500):
        found += Activity.objects.filter(pk__in=ids[start : start + 500])
    return sorted(found, key=lambda a: a.pk)


def _done(batches: list[QueuedBatch], applied: int, result: DrainResult) -> None:
    result.batches += len(batches)
    result.activities += applied


def _failed(batch: QueuedBatch, result: DrainResult) -> None:
    """Record the failure (the transaction around still commits): the batch is retried
    after a back-off that doubles from a minute, and parked after too many attempts."""
    logger.exception("activity queue: batch %s failed", batch.pk)
    attempts = batch.attempts + 1
    park = attempts >= settings.ACTIVITY_QUEUE_MAX_ATTEMPTS
    now = timezone.now()
    result.failed += 1
    result.parked += park
    QueuedBatch.objects.filter(pk=batch.pk).update(
        attempts=attempts,
        last_error=traceback.format_exc(limit=5)[-4000:],
        retry_at=now + timedelta(minutes=2 ** (attempts - 1)),
        parked_at=now if park else None,
    )
    if park:
        _parked_notify(batch, attempts)


def _parked_notify(batch: QueuedBatch, attempts: int) -> None:
    """Tell every admin in the app: a parked batch waits for one of them (its activities
    are stored but not scored, segmented or counted, and the nightly report check waits
    for it), and a log line is easy to miss."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q
    from django.urls import reverse

    from .models import Notification
    from .roles import Role

    admins = (
        get_user_model()
        .objects.filter(Q(groups__name=Role.ADMIN) | Q(is_superuser=True), is_active=True)
        .distinct()
    )
    text = (
        f"Activity batch {batch.pk} was parked after {attempts} failed attempts: its "
        f"{batch.size} activities are stored but not yet scored, segmented or counted in "
        "reports. Fix the cause (its last error is on the batch), then retry it."
    )
    url = reverse("admin:crm_queuedbatch_change", args=[batch.pk])
    Notification.objects.bulk_create(Notification(user=u, text=text, url=url) for u in admins)
