"""How the core tells the other apps what happened.

Settings hold ordered lists of dotted paths (``ACTIVITIES_RECORDED_HANDLERS``,
``STAGE_CHANGED_HANDLERS``, ``CONTACTS_CHANGED_HANDLERS``), the way Django chains
middleware. The core calls them in that order, once per batch, never per row. Each
handler declares with :func:`handler` whether it runs inside the core's transaction
(its writes commit or roll back with the batch) or after the commit (it may enqueue
tasks or send mail). No ``post_save`` receivers drive domain flow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Literal

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from .models import Activity, LifecycleTransition

Phase = Literal["in_transaction", "on_commit"]


@dataclass(frozen=True)
class ActivitiesRecorded:
    """A batch of activities that was just stored (duplicates already dropped)."""

    activities: list[Activity]
    created_contact_ids: frozenset[int] = frozenset()

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


def publish(setting_name: str, event: object) -> None:
    """Call every handler named in ``setting_name`` for ``event``, in order.

    Must be called inside the transaction that wrote the event's rows, so in-transaction
    handlers share its fate; on-commit handlers are deferred until it commits.
    """
    for func in handlers_for(setting_name):
        if getattr(func, "phase", "in_transaction") == "on_commit":
            transaction.on_commit(lambda func=func: func(event))
        else:
            func(event)


def activities_recorded(activities: Iterable[Activity], created_contact_ids=()) -> None:
    activities = list(activities)
    if activities:
        publish(
            "ACTIVITIES_RECORDED_HANDLERS",
            ActivitiesRecorded(activities, frozenset(created_contact_ids)),
        )


def stage_changed(transitions: Iterable[LifecycleTransition]) -> None:
    transitions = list(transitions)
    if transitions:
        publish("STAGE_CHANGED_HANDLERS", StageChanged(transitions))


def contacts_changed(contact_ids: Iterable[int], fields: Iterable[str] = (), at=None) -> None:
    ids = frozenset(contact_ids)
    if ids:
        publish("CONTACTS_CHANGED_HANDLERS", ContactsChanged(ids, frozenset(fields), at))
