"""Segments: definitions compiled to one database query; stored membership kept current.

Modules: :mod:`.definition` (the language: validation and compilation) and :mod:`.services`
(save, refresh, static lists). The core's event handlers below keep membership current for
the contacts each ingest batch, profile change and stage change touched.

Extension conditions (the contract other apps implement)
--------------------------------------------------------
``settings.SEGMENT_CONDITION_PROVIDERS`` is a list of dotted paths, each to a dict
``{type_name: provider}``. A condition object whose single key is ``type_name`` (e.g.
``{"program": {"id": 5, "state": "in"}}``) is dispatched to that provider, which has:

- ``validate(condition: dict) -> None`` — raise ``ValueError("message")`` for bad input;
  the message is shown with the condition's path (``all[2].program: message``);
- ``build(condition: dict) -> Q`` — a filter on ``Contact`` (use ``Exists(OuterRef("pk"))``
  subqueries, never raw SQL), evaluated inside the segment's one query.

Provider-backed membership is re-evaluated by the contact events and the periodic refresh
(``crm.tasks.refresh_segments``); a provider whose state changes without such an event may
call :func:`segments_refresh_for_contacts` itself.
"""

from django.utils import timezone

from crm.events import handler

from .definition import (
    FIELDS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    OPS_BY_TYPE,
    DefinitionError,
    compile_definition,
    condition_providers,
    field_for,
    validate_definition,
)
from .services import (
    SegmentInUse,
    contact_ids_for_emails,
    dynamic_segments_in_order,
    segment_delete,
    segment_members,
    segment_members_add,
    segment_members_remove,
    segment_queryset,
    segment_refresh,
    segment_save,
    segments_refresh_all,
    segments_refresh_for_activities,
    segments_refresh_for_contacts,
    segments_refresh_reading,
    why_in_segment,
)


@handler("queued")
def on_activities_recorded(event) -> None:
    """Re-evaluate dynamic segments the batch can change, for the contacts it touched."""
    segments_refresh_for_activities(
        activities=event.activities,
        created_contact_ids=event.created_contact_ids,
        at=timezone.now(),
    )


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Re-evaluate dynamic segments for contacts whose stage changed."""
    segments_refresh_for_contacts(contact_ids=event.contact_ids, at=timezone.now())


@handler("in_transaction")
def on_contacts_changed(event) -> None:
    """Re-evaluate dynamic segments for contacts whose profile changed."""
    segments_refresh_for_contacts(contact_ids=event.contact_ids, at=event.at or timezone.now())


__all__ = [
    "FIELDS",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "OPS_BY_TYPE",
    "DefinitionError",
    "SegmentInUse",
    "compile_definition",
    "condition_providers",
    "contact_ids_for_emails",
    "dynamic_segments_in_order",
    "field_for",
    "on_activities_recorded",
    "on_contacts_changed",
    "on_stage_changed",
    "segment_delete",
    "segment_members",
    "segment_members_add",
    "segment_members_remove",
    "segment_queryset",
    "segment_refresh",
    "segment_save",
    "segments_refresh_all",
    "segments_refresh_reading",
    "segments_refresh_for_activities",
    "segments_refresh_for_contacts",
    "validate_definition",
    "why_in_segment",
]
