"""Writing fact and day rows for the upkeep (reports.*_facts, rollups): inserting
recomputed rows, adding signed counts to day rows, and array parameters on PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date

from django.db import connection
from django.db.models import BooleanField, F, Func, Q

from crm.bulkload import rows_load


def facts_insert(model, rows, *, fields=None) -> None:
    """Insert fact rows (``COPY`` on PostgreSQL, ``executemany`` elsewhere): unsaved
    instances, or tuples in the order of ``fields`` (names) when they are given.

    The upkeep writes a few hundred rows per batch; ``bulk_create`` spends more Python on
    compiling them (a placeholder and ``get_db_prep_save`` per value, then RETURNING the
    ids nobody reads) than the database spends storing them. Every concrete column but an
    auto primary key is written, so defaults need no special handling.
    """
    if not rows:
        return
    if fields is not None:
        rows_load(model=model, fields=fields, rows=rows)
        return
    concrete = [f for f in model._meta.concrete_fields if not f.auto_created]
    rows_load(
        model=model,
        fields=[f.name for f in concrete],
        rows=[tuple(getattr(r, f.attname) for f in concrete) for r in rows],
    )


def pg_array(values, *, text: bool = False) -> str:
    """A PostgreSQL array literal (``{1,2,3}``) for one ``%s::type[]`` parameter, built by
    ``str.join``: psycopg dumps a list element by element in Python (profiled at a few ms
    per 1,000 values), Django's ``__in`` makes one placeholder per value. Text elements
    are double-quoted with ``\\`` and ``"`` escaped (PostgreSQL array literal syntax)."""
    if text:
        return (
            "{"
            + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
            + "}"
        )
    return "{" + ",".join(map(str, values)) + "}"


def _pg() -> bool:
    return connection.vendor == "postgresql"


class AnyOf(Func):
    """``column = ANY(%s)``: the values as one array literal (PostgreSQL, :func:`pg_array`)
    instead of ``__in``'s one placeholder per value (built and parsed in Python)."""

    output_field = BooleanField()

    def __init__(self, column: str, values, sql_type: str):
        super().__init__(F(column))
        self.values, self.sql_type = pg_array(values, text=sql_type == "text"), sql_type

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        return f"{column} = ANY(%s::{self.sql_type}[])", [*params, self.values]


def _in(column: str, values, sql_type: str = "bigint") -> Q:
    """A filter ``column IN values``: ``= ANY(array)`` on PostgreSQL, ``__in`` elsewhere."""
    return Q(AnyOf(column, values, sql_type)) if _pg() else Q(**{f"{column}__in": values})


def counts_upsert(
    model,
    *,
    key: list[str],
    rows: dict[tuple, Counter],
    fields: list[str],
    insert: Callable[[tuple], dict] | None = None,
) -> None:
    """Add signed counts to the rows of ``model`` named by ``key`` values.

    ``INSERT … ON CONFLICT (key) DO UPDATE SET f = f + excluded.f`` on PostgreSQL (one
    statement, rows as arrays) and SQLite (≥ 3.24, multi-row VALUES per chunk) instead of
    insert-missing / lock / update.
    Rows go in key order, so concurrent batches lock shared rows in the same order (no
    deadlock) and never lose a count. ``insert`` gives columns set only on a new row (the
    campaign's channel). A row a moved first event empties is deleted: a rebuild would not
    have it (reconciliation agrees).
    """
    rows = {k: c for k, c in rows.items() if any(c.values())}
    if not rows:
        return
    if _pg():
        _counts_upsert_pg(model, key=key, rows=rows, fields=fields, insert=insert)
    else:
        _counts_upsert_values(model, key=key, rows=rows, fields=fields, insert=insert)
    negative = [k for k, counts in rows.items() if any(n < 0 for n in counts.values())]
    if negative:
        model.objects.filter(
            **{f"{name}__in": {k[i] for k in negative} for i, name in enumerate(key)},
            **dict.fromkeys(fields, 0),
        ).delete()


def _counts_upsert_pg(model, *, key, rows, fields, insert) -> None:
    """PostgreSQL: the whole upsert in one statement, each column one binary array
    parameter (``INSERT … SELECT FROM unnest(…)``, rows in key order as they come): the
    multi-row VALUES of :func:`_counts_upsert_values` built and quoted one placeholder per
    value in Python, most of the upsert's cost for the landing upkeep's thousand span rows
    (profiled)."""
    from crm.ingest import _pg_cursor  # binary array parameters, see there

    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    ordered = sorted(rows.items())
    extra = list(insert(ordered[0][0])) if insert else []
    columns = [*key, *extra, *fields]
    types = [model._meta.get_field(c).db_type(connection) for c in columns]
    values = []
    for k, counts in ordered:
        values.append(
            (*k, *(insert(k).values() if insert else ()), *(counts.get(f, 0) for f in fields))
        )
    used = [f for f in fields if any(counts.get(f) for _, counts in ordered)]
    sql = (
        f"INSERT INTO {table} ({', '.join(qn(c) for c in columns)}) "  # noqa: S608
        f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in types)}) "
        f"ON CONFLICT ({', '.join(qn(c) for c in key)}) DO UPDATE SET "
        + ", ".join(f"{qn(f)} = {table}.{qn(f)} + excluded.{qn(f)}" for f in used)
    )
    with _pg_cursor() as cursor:
        cursor.execute(sql, [list(col) for col in zip(*values, strict=True)])


def _counts_upsert_values(model, *, key, rows, fields, insert) -> None:
    """Elsewhere (SQLite): multi-row ``VALUES`` in chunks (the bound-parameter limit)."""
    ops = connection.ops
    qn = ops.quote_name
    table = qn(model._meta.db_table)
    extra = list(insert(next(iter(rows)))) if insert else []
    columns = [*key, *extra, *fields]
    per_row = len(columns)
    size = max(1, min(500, (connection.features.max_query_params or 10**6) // per_row))
    ordered = sorted(rows.items())
    for chunk in (ordered[i : i + size] for i in range(0, len(ordered), size)):
        used = [f for f in fields if any(counts.get(f) for _, counts in chunk)]
        params: list = []
        for values, counts in chunk:
            params += [ops.adapt_datefield_value(v) if isinstance(v, date) else v for v in values]
            if insert:
                params += insert(values).values()
            params += [counts.get(f, 0) for f in fields]
        row_sql = "(" + ", ".join(["%s"] * per_row) + ")"
        sql = (
            f"INSERT INTO {table} ({', '.join(qn(c) for c in columns)}) "  # noqa: S608
            f"VALUES {', '.join([row_sql] * len(chunk))} "
            f"ON CONFLICT ({', '.join(qn(c) for c in key)}) DO UPDATE SET "
            + ", ".join(f"{qn(f)} = {table}.{qn(f)} + excluded.{qn(f)}" for f in used)
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
