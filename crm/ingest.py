"""Recording activities: validation, idempotency, batch fan-out.

Every way an activity arrives (REST API, CSV import, tracking pixel and redirect, mail
provider webhooks, the demo seeder) ends here. A batch is validated as a whole,
duplicates are dropped by ``external_id`` (a retried delivery is a no-op, and so is a
concurrent one: PostgreSQL inserts with ``ON CONFLICT DO NOTHING``), the rest is stored
in one transaction with one INSERT and the "activities recorded" event is published once
for the batch with the activities actually stored — its handlers run from the activity
queue after the commit (crm.activity_queue), or inside this transaction when
``ACTIVITY_HANDLERS_QUEUED`` is off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import connection, transaction
from django.db.models.base import ModelState
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import campaign_members, events, reopenings, services
from .models import (
    Activity,
    ActivityKind,
    Campaign,
    Contact,
    EmailStatus,
    Source,
    Stage,
)
from .models.activities import is_program_unsubscribe, is_suppressing_bounce
from .models.choices import SELF_IDENTIFYING_KINDS

MAX_DETAILS_BYTES = 8 * 1024
CONTACT_FIELDS = ("first_name", "last_name", "job_title", "phone", "country")
KINDS = frozenset(ActivityKind.values)
_url = URLValidator(schemes=["http", "https"])

# Activities that change whether a contact may be emailed, and to what status.
SUPPRESSING = {
    ActivityKind.EMAIL_UNSUBSCRIBED: EmailStatus.UNSUBSCRIBED,
    ActivityKind.EMAIL_COMPLAINED: EmailStatus.COMPLAINED,
}


class BatchTooLarge(Exception):
    pass


class IngestError(Exception):
    """The batch was refused; ``errors`` maps item index to field messages."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]):
        super().__init__(f"{len(errors)} invalid item(s)")
        self.errors = errors


@dataclass
class IngestResult:
    created: int = 0
    duplicates: int = 0
    contacts_created: int = 0
    activities: list[Activity] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "created": self.created,
            "duplicates": self.duplicates,
            "contacts_created": self.contacts_created,
        }


@dataclass
class _Item:
    index: int
    kind: str
    occurred_at: datetime
    contact_id: int | None
    email: str
    contact_fields: dict[str, str]
    campaign_id: int | None
    external_id: str | None
    message_id: str
    url: str
    is_machine: bool
    details: dict


def activities_record(
    *, items: Sequence[dict[str, Any]], source: str = Source.API, by_user=None
) -> IngestResult:
    """Validate and store a batch; raise :class:`IngestError` if any item is invalid.

    An invalid item rejects the whole batch so a client can fix and resend it; nothing is
    written. Items are dicts with ``kind``, ``occurred_at`` (aware datetime or ISO 8601 with
    a zone), ``contact`` (id) or ``email``, and optionally ``campaign``, ``external_id``,
    ``message_id``, ``url``, ``is_machine``, ``details`` and contact fields (``first_name``
    …) used when a self-identifying activity creates a new contact.
    """
    if len(items) > settings.ACTIVITY_BATCH_LIMIT:
        raise BatchTooLarge(
            f"A batch holds at most {settings.ACTIVITY_BATCH_LIMIT} activities; "
            f"this one has {len(items)}. Split it and send the parts separately."
        )
    parsed, errors = _parse(items)
    if errors:
        raise IngestError(errors)
    return _store(parsed, source=source, by_user=by_user)


def validate_items(items: Sequence[dict[str, Any]]) -> dict[int, dict[str, list[str]]]:
    """Return the per-index errors of a batch without storing anything."""
    return _parse(items)[1]


def _parse(items: Sequence[dict[str, Any]]) -> tuple[list[_Item], dict[int, dict[str, list[str]]]]:
    errors: dict[int, dict[str, list[str]]] = {}
    parsed: list[_Item] = []
    latest = timezone.now() + timedelta(minutes=5)
    for index, raw in enumerate(items):
        if not isinstance(raw, dict):
            errors[index] = {"non_field_errors": ["Each activity must be a JSON object."]}
            continue
        item_errors: dict[str, list[str]] = {}
        get = raw.get
        kind = get("kind")
        if kind not in KINDS:
            _fail(item_errors, "kind", f"Unknown activity kind {str(kind)[:40]!r}.")
        occurred_at = _parse_time(get("occurred_at"), latest, item_errors)
        contact_id = get("contact")
        if contact_id is not None and not _is_int(contact_id):
            _fail(item_errors, "contact", "A contact id is a whole number below 2^63.")
            contact_id = None
        email = get("email")
        email = Contact.normalise_email(str(email)) if email else ""
        if email and not _email_ok(email):
            _fail(item_errors, "email", "Enter a valid email address.")
        if contact_id is None and not email and "contact" not in item_errors:
            _fail(item_errors, "contact", "Give the contact's id or email.")
        campaign_id = get("campaign")
        if campaign_id is not None and not _is_int(campaign_id):
            _fail(item_errors, "campaign", "A campaign id is a whole number below 2^63.")
        external_id = get("external_id")
        if external_id is not None:
            external_id = str(external_id)
            if not external_id or len(external_id) > 200:
                _fail(item_errors, "external_id", "external_id must be 1 to 200 characters.")
        url = get("url")
        url = str(url) if url else ""
        if url and not _url_ok(url):
            _fail(item_errors, "url", "Enter a valid http(s) URL.")
        details = get("details") or {}
        if not isinstance(details, dict):
            _fail(item_errors, "details", "details must be a JSON object.")
        elif details and len(repr(details)) > MAX_DETAILS_BYTES:
            _fail(item_errors, "details", f"details must be under {MAX_DETAILS_BYTES} bytes.")
        if item_errors:
            errors[index] = item_errors
            continue
        message_id = get("message_id")
        parsed.append(
            _Item(
                index=index,
                kind=kind,
                occurred_at=occurred_at,
                contact_id=int(contact_id) if contact_id is not None else None,
                email=email,
                # Only a self-identifying activity by email can create a contact.
                # Stripped as the contact forms, serializers and CSV import store names.
                contact_fields={
                    name: value
                    for name in CONTACT_FIELDS
                    if get(name) is not None and (value := str(raw[name]).strip()[:100])
                }
                if contact_id is None
                else {},
                campaign_id=int(campaign_id) if campaign_id is not None else None,
                external_id=external_id,
                message_id=str(message_id)[:200] if message_id else "",
                url=url,
                is_machine=bool(get("is_machine", False)),
                details=details,
            )
        )
    if parsed:
        # The items with no format error are checked too, so one answer lists every error.
        _check_references(parsed, errors)
    return parsed, errors


def _fail(item_errors: dict[str, list[str]], name: str, message: str) -> None:
    item_errors.setdefault(name, []).append(message)


def _check_references(parsed: list[_Item], errors: dict) -> None:
    """Unknown contacts, unknown campaigns and email events for unknown addresses
    (one query each, only for what the batch references)."""
    ids = {i.contact_id for i in parsed if i.contact_id is not None}
    known_ids = _existing(Contact, "id", ids, int) if ids else set()
    campaign_ids = {i.campaign_id for i in parsed if i.campaign_id is not None}
    known_campaigns = _existing(Campaign, "id", campaign_ids, int) if campaign_ids else set()
    emails = {i.email for i in parsed if i.contact_id is None}
    known_emails = _existing(Contact, "email", emails, str) if emails else set()
    for item in parsed:
        if item.contact_id is not None and item.contact_id not in known_ids:
            errors.setdefault(item.index, {}).setdefault("contact", []).append(
                f"No contact with id {item.contact_id}."
            )
        if item.campaign_id is not None and item.campaign_id not in known_campaigns:
            errors.setdefault(item.index, {}).setdefault("campaign", []).append(
                f"No campaign with id {item.campaign_id}."
            )
        if (
            item.contact_id is None
            and item.email not in known_emails
            and item.kind not in SELF_IDENTIFYING_KINDS
        ):
            errors.setdefault(item.index, {}).setdefault("email", []).append(
                f"No contact with this email; a {item.kind} activity cannot create one."
            )


_PG_ARRAY_TYPES = {int: "bigint[]", str: "text[]"}


def _existing(model, column: str, values: set, type_: type) -> set:
    """Which of ``values`` occur in ``model.column``.

    PostgreSQL gets the set as one binary array parameter bound server-side (``= ANY``):
    Django's ``__in`` with 1,000 values builds, quotes and parses 1,000 placeholders
    client-side, which profiled at ~15 ms per query. Elsewhere the ORM's ``__in``.
    """
    if connection.vendor != "postgresql":
        return set(model.objects.filter(**{f"{column}__in": values}).values_list(column, flat=True))
    table = model._meta.db_table
    sql = f"SELECT {column} FROM {table} WHERE {column} = ANY(%b::{_PG_ARRAY_TYPES[type_]})"  # noqa: S608
    with _pg_cursor() as cursor:
        cursor.execute(sql, [list(values)])
        return {row[0] for row in cursor.fetchall()}


@contextmanager
def _pg_cursor():
    """A Django cursor (query logging and counting intact) over a psycopg cursor that
    binds parameters server-side: the project's connections use client-side binding,
    which quotes every array element in Python."""
    import psycopg  # only on PostgreSQL

    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    cursor = connection._prepare_cursor(raw)
    try:
        yield cursor
    finally:
        cursor.close()


def _store(parsed: list[_Item], *, source: str, by_user) -> IngestResult:
    result = IngestResult()
    with transaction.atomic():
        # Known duplicates are dropped before contacts are resolved, so a replayed
        # self-identifying activity never creates a contact; a concurrent batch may still
        # insert the same external_id after this read, which the insert below absorbs.
        # On PostgreSQL that insert also drops every other duplicate, so only the items
        # that may create a contact (given by email) need the check.
        pg = connection.vendor == "postgresql"
        ext_ids = {i.external_id for i in parsed if i.external_id and not (pg and i.contact_id)}
        seen = (
            set(
                Activity.objects.filter(external_id__in=ext_ids).values_list(
                    "external_id", flat=True
                )
            )
            if ext_ids
            else set()
        )
        fresh: list[_Item] = []
        for item in parsed:
            if item.external_id:
                if item.external_id in seen:
                    result.duplicates += 1
                    continue
                seen.add(item.external_id)
            fresh.append(item)
        if not fresh:
            return result

        created_ids = _resolve_contacts(fresh, source=source, by_user=by_user)
        result.contacts_created = len(created_ids)
        recycled = contacts_lock({i.contact_id for i in fresh})
        activities = _insert(fresh)
        result.duplicates += len(fresh) - len(activities)
        result.created = len(activities)
        result.activities = activities
        if not activities:
            return result
        campaign_members.members_touch(activities)
        # Handlers of the suppression's "contacts changed" event may move stages: then the
        # stages read under the lock are stale and crm.reopenings reads them again.
        suppressed = _apply_suppression(activities)
        reopenings.reopenings_mark(activities, None if suppressed else recycled)
        _set_first_touch(activities, created_ids)
        events.activities_recorded(activities, created_ids)
    return result


# The lock's statement also returns the locked contacts that are recycled (what
# crm.reopenings needs), saving a second read of the same 1,000 rows. The CTE is evaluated
# in full (MATERIALIZED, and a locking subquery is never flattened), so every row is
# locked, in id order, whatever the outer filter keeps.
_PG_LOCK = (
    "WITH locked AS MATERIALIZED ("  # noqa: S608
    f"SELECT id, stage, recycle_round, stage_changed_at FROM {Contact._meta.db_table} "
    "WHERE id = ANY(%b::bigint[]) ORDER BY id FOR NO KEY UPDATE) "
    "SELECT id, recycle_round, stage_changed_at FROM locked WHERE stage = %s"
)


def contacts_lock(contact_ids: set[int]) -> dict[int, dict] | None:
    """Lock the batch's contacts up front, in id order (PostgreSQL; SQLite serialises
    writers anyway), and return the recycled ones among them (``None`` where nothing was
    locked: :func:`crm.reopenings.reopenings_mark` reads them itself).

    The handlers write rows keyed by these contacts in several places — scores, stages,
    segment memberships, report facts — each in its own order. Two overlapping batches
    that took those locks piecemeal could each hold what the other waits for (seen as
    "deadlock detected" under concurrent ingestion); taking them all first, in one order,
    makes the second batch wait before it holds anything. FOR NO KEY UPDATE: nothing here
    changes a key, and it does not block other transactions' foreign-key checks.
    """
    if connection.vendor != "postgresql" or not contact_ids:
        return None
    with _pg_cursor() as cursor:
        cursor.execute(_PG_LOCK, [sorted(contact_ids), Stage.RECYCLED.value])
        return {
            pk: {"pk": pk, "recycle_round": rnd, "stage_changed_at": at}
            for pk, rnd, at in cursor.fetchall()
        }


_COLUMNS = (
    "contact_id",
    "kind",
    "occurred_at",
    "recorded_at",
    "campaign_id",
    "external_id",
    "message_id",
    "url",
    "is_machine",
    "details",
)
# One statement for the whole batch: the arrays arrive as 9 parameters (no per-row
# placeholders to build or parse; %b sends them in binary, which psycopg dumps several
# times faster than text for timestamps and JSON), and ON CONFLICT makes a racing
# duplicate a skipped row instead of an IntegrityError. Identifiers are module constants.
_PG_INSERT = (
    f"INSERT INTO {Activity._meta.db_table} ({', '.join(_COLUMNS)}) "  # noqa: S608
    "SELECT c, k, o, %s, cp, e, m, u, im, d FROM unnest("
    "%b::bigint[], %b::varchar[], %b::timestamptz[], %b::bigint[], %b::varchar[], "
    "%b::varchar[], %b::varchar[], %b::boolean[], %b::jsonb[]"
    ") AS t(c, k, o, cp, e, m, u, im, d) "
    "ON CONFLICT (external_id) DO NOTHING RETURNING id, external_id"
)


def _insert(items: list[_Item]) -> list[Activity]:
    """Insert the batch; return the stored activities (racing duplicates left out).

    PostgreSQL: one ``INSERT … SELECT FROM unnest(…) ON CONFLICT (external_id) DO
    NOTHING RETURNING``; rows are inserted in ``external_id`` order so two overlapping
    batches take the unique-index locks in the same order and cannot deadlock. Elsewhere
    (SQLite) writers are serialised by IMMEDIATE transactions, so the duplicate check in
    :func:`_store` already saw every committed row and ``bulk_create`` cannot collide.
    """
    now = timezone.now()
    if connection.vendor != "postgresql":
        activities = [
            Activity(
                contact_id=i.contact_id,
                kind=i.kind,
                occurred_at=i.occurred_at,
                campaign_id=i.campaign_id,
                external_id=i.external_id,
                message_id=i.message_id,
                url=i.url,
                is_machine=i.is_machine,
                details=i.details,
            )
            for i in items
        ]
        Activity.objects.bulk_create(activities)
        return activities

    keyed = sorted((i for i in items if i.external_id), key=lambda i: i.external_id)
    ordered = keyed + [i for i in items if not i.external_id]
    params = [
        now,
        [i.contact_id for i in ordered],
        [i.kind for i in ordered],
        [i.occurred_at for i in ordered],
        [i.campaign_id for i in ordered],
        [i.external_id for i in ordered],
        [i.message_id for i in ordered],
        [i.url for i in ordered],
        [i.is_machine for i in ordered],
        _details_json(ordered),
    ]
    with _pg_cursor() as cursor:
        cursor.execute(_PG_INSERT, params)
        returned = cursor.fetchall()
    by_external = {ext: pk for pk, ext in returned if ext is not None}
    # Rows without an external_id cannot conflict: they come back in insertion order.
    anonymous = iter([pk for pk, ext in returned if ext is None])
    alias = connection.alias
    activities = []
    for i in items:
        if i.external_id:
            pk = by_external.get(i.external_id)
            if pk is None:
                continue  # a concurrent batch stored it first
        else:
            pk = next(anonymous)
        activities.append(_stored_activity(i, pk, now, alias))
    return activities


def _details_json(items: list[_Item]) -> list[str]:
    """JSON text of each item's details. A batch repeats a few small shapes ({},
    {"form": "contact-us"} …), so flat ones are encoded once per batch."""
    dumps = json.dumps
    memo: dict[tuple, str] = {}
    out = []
    for i in items:
        try:
            key = tuple(i.details.items())
            text = memo.get(key)
            if text is None:
                text = memo[key] = dumps(i.details)
        except TypeError:  # a nested (unhashable) value: encode it on its own
            text = dumps(i.details)
        out.append(text)
    return out


def _stored_activity(item: _Item, pk: int, recorded_at: datetime, alias: str) -> Activity:
    """An ``Activity`` for a row just inserted, built like ``Model.from_db`` but without
    ``__init__``'s per-field signal and default handling (profiled: the costliest part of
    handing 1,000 rows to the handlers). Every concrete field is set."""
    obj = Activity.__new__(Activity)
    obj._state = ModelState()
    obj._state.adding = False
    obj._state.db = alias
    obj.__dict__.update(
        id=pk,
        contact_id=item.contact_id,
        kind=item.kind,
        occurred_at=item.occurred_at,
        recorded_at=recorded_at,
        campaign_id=item.campaign_id,
        external_id=item.external_id,
        message_id=item.message_id,
        url=item.url,
        is_machine=item.is_machine,
        details=item.details,
    )
    return obj


def _resolve_contacts(items: list[_Item], *, source: str, by_user) -> set[int]:
    """Fill ``contact_id`` from emails, creating contacts for self-identifying activities."""
    by_email = {i.email for i in items if i.contact_id is None}
    if not by_email:
        return set()
    existing = dict(Contact.objects.filter(email__in=by_email).values_list("email", "pk"))
    # A new contact is created at its earliest activity of the batch (whatever the items'
    # order), with each profile field from the earliest item that gives it.
    new_rows: dict[str, dict] = {}
    for item in sorted(items, key=lambda i: (i.occurred_at, i.index)):
        if item.contact_id is not None or item.email in existing:
            continue
        row = new_rows.setdefault(
            item.email,
            {
                "email": item.email,
                "source": source if source in Source.values else Source.OTHER,
                "created_at": item.occurred_at,
            },
        )
        for name, value in item.contact_fields.items():
            row.setdefault(name, value)
    created = services.contacts_create_bulk(
        rows=new_rows.values(), by_user=by_user, by_system="ingest"
    )
    existing.update({c.email: c.pk for c in created})
    for item in items:
        if item.contact_id is None:
            item.contact_id = existing[item.email]
    return {c.pk for c in created}


def _apply_suppression(activities: list[Activity]) -> bool:
    """Unsubscribes, complaints and hard bounces suppress the address at once; return
    whether the batch had any (and so published "contacts changed"). An unsubscribe from
    one program only does not (``crm.models.activities``)."""
    changes: dict[str, set[int]] = {}
    for a in activities:
        status = SUPPRESSING.get(a.kind)
        if status and is_program_unsubscribe(a.kind, a.details):
            continue
        if is_suppressing_bounce(a.kind, a.details):
            status = EmailStatus.HARD_BOUNCED
        if status:
            changes.setdefault(status, set()).add(a.contact_id)
    now = timezone.now()
    for status, contact_ids in changes.items():
        Contact.objects.filter(pk__in=contact_ids, email_status=EmailStatus.ACTIVE).update(
            email_status=status, email_status_changed_at=now, updated_at=now
        )
    if changes:
        events.contacts_changed(set().union(*changes.values()), fields={"email_status"}, at=now)
    return bool(changes)


def _set_first_touch(activities: list[Activity], created_ids: set[int]) -> None:
    """A contact created by a campaign-tagged activity was acquired by that campaign."""
    first: dict[int, Activity] = {}
    for a in sorted(activities, key=lambda a: a.occurred_at):
        if a.contact_id in created_ids and a.campaign_id:
            first.setdefault(a.contact_id, a)
    for campaign_id in {a.campaign_id for a in first.values()}:
        Contact.objects.filter(
            pk__in=[cid for cid, a in first.items() if a.campaign_id == campaign_id],
            acquired_by__isnull=True,
        ).update(acquired_by_id=campaign_id)


def _parse_time(value: Any, latest: datetime, item_errors: dict) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            # What parse_datetime tries first; its regex fallback only for other shapes.
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            _fail(
                item_errors, "occurred_at", "Use an ISO 8601 date-time, e.g. 2026-05-01T14:30:00Z."
            )
            return None
    else:
        _fail(
            item_errors,
            "occurred_at",
            "This field is required (ISO 8601 date-time with a time zone).",
        )
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        _fail(
            item_errors,
            "occurred_at",
            "Give the time zone (e.g. Z or +02:00); a naive time is ambiguous.",
        )
        return None
    if parsed > latest:
        _fail(item_errors, "occurred_at", "An activity cannot be in the future.")
        return None
    return parsed


# A batch repeats the same few page URLs and addresses; the validators' regexes are the
# most expensive part of parsing (profiled), so their verdicts are memoised.
@lru_cache(maxsize=4096)
def _url_ok(url: str) -> bool:
    try:
        _url(url)
    except ValidationError:
        return False
    return True


@lru_cache(maxsize=4096)
def _email_ok(email: str) -> bool:
    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


def _is_int(value: Any) -> bool:
    """A row id: a JSON integer or a string of digits, within the database's bigint (a
    larger one would overflow in the query: a 500 instead of the item's error)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return 0 <= value < 2**63
    return isinstance(value, str) and value.isdigit() and len(value) < 19
