"""Writing the lifecycle fact rows that the upkeep recomputes (reports.*_facts)."""

from __future__ import annotations

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
