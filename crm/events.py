"""How the core tells the other apps what happened.

Settings hold ordered lists of dotted paths (``ACTIVITIES_RECORDED_HANDLERS``,
``STAGE_CHANGED_HANDLERS``, ``CONTACTS_CHANGED_HANDLERS``, ``CONTACTS_MERGING_HANDLERS``),
the way Django chains
middleware. The core calls them in that order, once per batch, never per row. Each
handler declares with :func:`handler` whether it runs inside the core's transaction
(its writes commit or roll back with the batch), after the commit (it may enqueue
tasks or send mail), or — "activities recorded" handlers only — from the activity queue:
the batch is queued in the recording transaction and a worker applies queued batches in
bulk right after (:mod:`crm.activity_queue`). No ``post_save`` receivers drive domain flow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from .models import Activity, LifecycleTransition

Phase = Literal["in_transaction", "on_commit", "queued"]


@dataclass(frozen=True)
class ActivitiesRecorded:
    """A batch of activities that was just stored (duplicates already dropped).

    ``unapplied_ids``: stored activities of *other* batches still waiting in the activity
    queue (crm.activity_queue) when this one is applied. A handler that keeps running
    totals by comparing the batch with what was stored before it (reports.upkeep's first
    opens and clicks) must not count those as "before": their own turn comes later; nor
    may one that dates what it computes at the batch's activities (scoring leaves them out
    of its aggregate, or their points would be dated at this batch's). A handler that
    recomputes from everything stored and dates nothing by it (segments) may ignore it.
    """

    activities: list[Activity]
    created_contact_ids: frozenset[int] = frozenset()
    unapplied_ids: frozenset[int] = frozenset()

    @property
    def contact_ids(self) -> set[int]:
        return {a.contact_id for a in self.activities}


@dataclass(frozen=True)
class StageChanged:
    """One or more lifecycle transitions that were just recorded."""

    transitions: list[LifecycleTransition]

    @property
    def contact_ids(self) -> set[int]:
        return {t.contact_id for t in self.transitions}


@dataclass(frozen=True)
class ContactsChanged:
    """Profile data of these contacts changed (created, edited, imported, merged)."""

    contact_ids: frozenset[int]
    fields: frozenset[str] = field(default_factory=frozenset)
    at: datetime | None = None


@dataclass(frozen=True)
class ContactsMerging:
    """Two records of one person are being merged, inside the merge's transaction.

    Published after the core moved its own rows and before the duplicate's remaining
    rows are re-pointed generically and it is deleted: an app whose rows have rules per
    contact that a plain re-point would break (one live enrollment per program) moves
    them itself here.
    """

    keep_id: int
    duplicate_id: int
    at: datetime
    # The duplicate's lifecycle transitions, now the kept contact's: what the histories
    # were before the move, for handlers that count per-contact histories.
    moved_transition_ids: frozenset[int] = frozenset()


def handler(phase: Phase = "in_transaction") -> Callable:
    """Declare when a domain-event handler runs relative to the core's transaction."""

    def decorate(func: Callable) -> Callable:
        func.phase = phase
        return func

    return decorate


@cache
def _load(paths: tuple[str, ...]) -> tuple[Callable, ...]:
    return tuple(import_string(path) for path in paths)


def handlers_for(setting_name: str) -> tuple[Callable, ...]:
    return _load(tuple(getattr(settings, setting_name, ())))


def queued_handlers(setting_name: str) -> tuple[Callable, ...]:
    """The handlers of ``setting_name`` that declared the "queued" phase, in order."""
    return tuple(f for f in handlers_for(setting_name) if getattr(f, "phase", "") == "queued")


def publish(
    setting_name: str, event: object, *, queue: Callable[[object], None] | None = None
) -> None:
    """Call every handler named in ``setting_name`` for ``event``, in order.

    Must be called inside the transaction that wrote the event's rows, so in-transaction
    handlers share its fate; on-commit handlers are deferred until it commits. With
    ``queue``, "queued" handlers are not called: ``queue(event)`` is, once, and a drain
    calls them later (without it they run in the transaction like the others).
    """
    queued = False
    for func in handlers_for(setting_name):
        phase = getattr(func, "phase", "in_transaction")
        if phase == "on_commit":
            # robust: the transaction is committed by then; a failing after-commit handler
            # (a broker that is down) is logged and must not fail the caller nor drop the
            # handlers and callbacks after it.
            transaction.on_commit(partial(func, event), robust=True)
        elif phase == "queued" and queue is not None:
            queued = True
        else:
            func(event)
    if queued:
        queue(event)


def activities_recorded(activities: Iterable[Activity], created_contact_ids=()) -> None:
    """Publish a stored batch; its "queued" handlers go through the activity queue when
    ``ACTIVITY_HANDLERS_QUEUED`` is on (the default), else they run in this transaction."""
    activities = list(activities)
    if not activities:
        return
    queue = None
    if settings.ACTIVITY_HANDLERS_QUEUED:
        from .activity_queue import batch_queue as queue
    publish(
        "ACTIVITIES_RECORDED_HANDLERS",
        ActivitiesRecorded(activities, frozenset(created_contact_ids)),
        queue=queue,
    )


def stage_changed(transitions: Iterable[LifecycleTransition]) -> None:
    _check_not_queued("STAGE_CHANGED_HANDLERS")
    transitions = list(transitions)
    if transitions:
        publish("STAGE_CHANGED_HANDLERS", StageChanged(transitions))


def contacts_changed(contact_ids: Iterable[int], fields: Iterable[str] = (), at=None) -> None:
    _check_not_queued("CONTACTS_CHANGED_HANDLERS")
    ids = frozenset(contact_ids)
    if ids:
        publish("CONTACTS_CHANGED_HANDLERS", ContactsChanged(ids, frozenset(fields), at))


def contacts_merging(
    *, keep_id: int, duplicate_id: int, at: datetime, moved_transition_ids: Iterable[int] = ()
) -> None:
    _check_not_queued("CONTACTS_MERGING_HANDLERS")
    event = ContactsMerging(keep_id, duplicate_id, at, frozenset(moved_transition_ids))
    publish("CONTACTS_MERGING_HANDLERS", event)


def _check_not_queued(setting_name: str) -> None:
    """Only activity batches have a queue; a "queued" handler elsewhere is a mistake."""
    if queued_handlers(setting_name):
        raise ImproperlyConfigured(
            f"{setting_name} lists a handler with the 'queued' phase; only "
            "ACTIVITIES_RECORDED_HANDLERS may (crm.activity_queue stores activity batches)."
        )
