"""The sender's set-based writes and reads, one statement each for a whole batch.

On PostgreSQL the batch's values travel as a few binary array parameters bound
server-side (``= ANY(%b)``, ``INSERT … SELECT FROM unnest(%b, …)``): the project's
connections bind client-side, where Django's ``__in`` and ``bulk_create`` with 1,000
rows build, quote and parse one placeholder per value in Python (a third of the
sender's database time, profiled). Elsewhere (SQLite) the ORM does the same work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime

from django.db import connection
from django.db.models import BooleanField, CharField, Count, F, Func, Q, Value
from django.db.models.functions import Cast, Coalesce, Concat, NullIf

from crm.models import Activity, ActivityKind

from ..models import EmailSend

_SEND_COLUMNS = (
    "enrollment_id", "step_id", "contact_id", "program_id", "template_id", "message_id",
    "esp_message_id", "status", "skip_reason", "error", "attempts", "subject", "links",
    "sent_at", "to_digest",
)  # fmt: skip
# Rows go in (enrollment, step) order, so two batches that ever overlap take the unique
# index's locks in the same order; a duplicate (enrollment, step) still raises
# IntegrityError (no ON CONFLICT): the claim rolls back before any mail is handed over.
# Identifiers are module constants.
_SEND_INSERT = (
    f"INSERT INTO {EmailSend._meta.db_table} ({', '.join(_SEND_COLUMNS)}, created_at) "  # noqa: S608
    f"SELECT {', '.join(_SEND_COLUMNS)}, %b FROM unnest("
    "%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::varchar[], "
    "%b::varchar[], %b::varchar[], %b::varchar[], %b::varchar[], %b::smallint[], "
    "%b::varchar[], %b::jsonb[], %b::timestamptz[], %b::varchar[]"
    f") AS t({', '.join(_SEND_COLUMNS)}) "
    "ORDER BY enrollment_id, step_id RETURNING id, enrollment_id, step_id"
)


@contextmanager
def _pg_cursor():
    """A Django cursor (query logging and counting intact) over a psycopg cursor that
    binds its parameters server-side."""
    import psycopg  # only on PostgreSQL

    connection.ensure_connection()
    cursor = connection._prepare_cursor(psycopg.Cursor(connection.connection))
    try:
        yield cursor
    finally:
        cursor.close()


def _pg() -> bool:
    return connection.vendor == "postgresql"


def sends_insert(sends: list[EmailSend], *, now: datetime) -> None:
    """Insert new ``EmailSend`` rows and set their primary keys."""
    for s in sends:
        s.created_at = now  # auto_now_add, as bulk_create would set it
    if not _pg():
        EmailSend.objects.bulk_create(sends)
        return
    if not sends:
        return
    columns = [[getattr(s, c) for s in sends] for c in _SEND_COLUMNS]
    columns[_SEND_COLUMNS.index("links")] = [json.dumps(s.links) for s in sends]
    with _pg_cursor() as cursor:
        cursor.execute(_SEND_INSERT, [now, *columns])
        pks = {(e, st): pk for pk, e, st in cursor.fetchall()}
    for s in sends:
        s.pk = pks[(s.enrollment_id, s.step_id)]
        s._state.adding = False
        s._state.db = connection.alias


# What the hand-over learns about each send.
_OUTCOME_COLUMNS = ("status", "skip_reason", "error", "sent_at", "esp_message_id")
_SET = ", ".join(f"{c} = t.{c}" for c in _OUTCOME_COLUMNS)
_SEND_UPDATE = (
    f"UPDATE {EmailSend._meta.db_table} AS s SET {_SET} FROM unnest("  # noqa: S608
    "%b::bigint[], %b::varchar[], %b::varchar[], %b::varchar[], %b::timestamptz[], "
    f"%b::varchar[]) AS t(id, {', '.join(_OUTCOME_COLUMNS)}) WHERE s.id = t.id"
)


def sends_update(sends: list[EmailSend]) -> None:
    """Store the hand-over's outcome of these sends (status, times, errors, provider id)."""
    if not sends:
        return
    if not _pg():
        EmailSend.objects.bulk_update(sends, list(_OUTCOME_COLUMNS))
        return
    columns = [[getattr(s, c) for s in sends] for c in ("pk", *_OUTCOME_COLUMNS)]
    with _pg_cursor() as cursor:
        cursor.execute(_SEND_UPDATE, columns)


class AnyOf(Func):
    """``column = ANY(%s)``: the ids as one array parameter (PostgreSQL)."""

    output_field = BooleanField()

    def __init__(self, column: str, values: Iterable[int]):
        super().__init__(F(column))
        self.values = list(values)

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        return f"{column} = ANY(%s)", [*params, self.values]


def in_ids(column: str, ids: Iterable[int]) -> Q | AnyOf:
    """A filter ``column IN ids``: ``= ANY(array)`` on PostgreSQL, ``__in`` elsewhere."""
    return AnyOf(column, ids) if _pg() else Q(**{f"{column}__in": list(ids)})


def contacts_soft_bounced(contact_ids: Iterable[int], *, since: datetime, limit: int) -> set:
    """Contacts with soft bounces of at least ``limit`` different messages since ``since``.

    Messages, not events: a provider may report one message's trouble several times. An
    event that names no message (legacy payloads) counts on its own.
    """
    message = Coalesce(NullIf("message_id", Value("")), Concat(Value("#"), Cast("id", CharField())))
    return set(
        Activity.objects.filter(
            in_ids("contact_id", contact_ids),
            kind=ActivityKind.EMAIL_BOUNCED,
            details__bounce_type="soft",
            occurred_at__gte=since,
        )
        .values("contact_id")
        .annotate(n=Count(message, distinct=True))
        .filter(n__gte=limit)
        .values_list("contact_id", flat=True)
    )
