"""Loading many rows at once: PostgreSQL ``COPY`` where available, ``executemany`` elsewhere.

Used by the demo seeder and the bulk history import, which load millions of rows and
bypass per-batch handlers on purpose (the apps rebuild their derived data afterwards).
Rows are tuples in the order of ``fields``; JSON fields are given as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import islice

from django.core.management.color import no_style
from django.db import connection, models


def uses_copy() -> bool:
    """Whether the default database can take ``COPY … FROM STDIN`` (PostgreSQL)."""
    return connection.vendor == "postgresql"


def rows_load(
    *,
    model: type[models.Model],
    fields: Sequence[str],
    rows: Iterable[tuple],
    batch_size: int = 2000,
) -> int:
    """Insert ``rows`` into ``model``'s table; return how many were written.

    On PostgreSQL one ``COPY`` streams the rows (several times faster than INSERT); on
    other databases batches of plain INSERTs (``executemany``) write them. Field
    defaults and ``auto_now`` are not applied by ``COPY``: give every NOT NULL column.
    """
    meta = model._meta
    if uses_copy():
        qn = connection.ops.quote_name
        columns = ", ".join(qn(meta.get_field(f).column) for f in fields)
        count = 0
        sql = f"COPY {qn(meta.db_table)} ({columns}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    # Elsewhere one executemany per batch, values adapted as the ORM would (aware times
    # to the backend's format, dicts to JSON text): many times faster than bulk_create.
    convert = [_adapter(meta.get_field(f)) for f in fields]
    qn = connection.ops.quote_name
    # Identifiers come from model metadata, quoted by the backend; values are bound.
    columns = ", ".join(qn(meta.get_field(f).column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({marks})"  # noqa: S608
    count = 0
    iterator = iter(rows)
    with connection.cursor() as cursor:
        while batch := list(islice(iterator, batch_size)):
            cursor.executemany(
                sql,
                [
                    tuple(
                        v if c is None or v is None else c(v)
                        for c, v in zip(convert, row, strict=True)
                    )
                    for row in batch
                ],
            )
            count += len(batch)
    return count


def _adapter(field: models.Field):
    """How to turn a Python value into what the (non-COPY) backend's driver takes."""
    ops = connection.ops
    if isinstance(field, models.DateTimeField):
        return ops.adapt_datetimefield_value
    if isinstance(field, models.DateField):
        return ops.adapt_datefield_value
    if isinstance(field, models.DecimalField):
        return lambda v: ops.adapt_decimalfield_value(v, field.max_digits, field.decimal_places)
    if isinstance(field, models.JSONField):
        return lambda v: v if isinstance(v, str) else json.dumps(v)
    return None


def next_id(model: type[models.Model]) -> int:
    """The first free primary key (rows loaded with explicit ids start here)."""
    top = model.objects.aggregate(top=models.Max("pk"))["top"]
    return (top or 0) + 1


def sequences_reset(*model_list: type[models.Model]) -> None:
    """Move id sequences past explicitly loaded ids, so ordinary inserts keep working."""
    statements = connection.ops.sequence_reset_sql(no_style(), list(model_list))
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def statistics_refresh(*model_list: type[models.Model]) -> None:
    """``ANALYZE`` the tables just loaded, so the planner knows their sizes and spreads.

    SQLite never gathers statistics by itself: without them a segment condition such as
    "visited in the last 30 days" walks the whole (kind, time) index once per contact
    instead of the contact's own rows (the demo's segment replay: ~600 ms a week → ~30 ms).
    PostgreSQL's autovacuum would get there, later than a seeder's next query."""
    with connection.cursor() as cursor:
        for model in model_list:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
