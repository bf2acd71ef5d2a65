"""Placeholders that let a segment's evaluation SQL be compiled once and run many times.

The incremental refresh evaluates the same few definitions for a different handful of
contacts after every ingest batch; building and compiling the Django query each time cost
more than running it. A definition compiled with :data:`SYMBOLIC_NOW` and a contact-id
placeholder yields SQL whose parameters still hold *markers* — :class:`Ago` (a cut-off
"N days before now"), :class:`DayAgo` (the site-local day N days before today, as
``YYYY-MM-DD`` text, for date attributes) and :class:`Ids` (a list of ids) — which
:func:`bind` replaces with values for one run. The SQL text itself is Django's compiler
output; values stay query parameters.

A list of ids is one parameter (an array on PostgreSQL, a JSON array read by ``json_each``
on SQLite) rather than ``IN (%s, …)`` with one parameter per id: the statement text does
not grow with the batch, and PostgreSQL's planner does not estimate each element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import NotSupportedError
from django.db.models import CharField, DateTimeField, Expression, F, Lookup
from django.utils import timezone


class _SymbolicNow:
    """Stands for "the evaluation's now" in a definition compiled ahead of time."""

    def __repr__(self) -> str:
        return "SYMBOLIC_NOW"


SYMBOLIC_NOW = _SymbolicNow()


@dataclass(frozen=True)
class Ago:
    """Parameter marker: ``now - days`` (bound per run)."""

    days: int


@dataclass(frozen=True)
class DayAgo:
    """Parameter marker: the site-local day ``days`` before now's, ``YYYY-MM-DD`` (bound per
    run)."""

    days: int


@dataclass(frozen=True)
class Ids:
    """Parameter marker: a list of ids named ``name`` (bound per run)."""

    name: str


CONTACTS = Ids("contacts")  # contacts to look at either way
LEAVERS = Ids("leavers")  # contacts to look at only if members (the event can only remove)
EVERYONE = Ids("everyone")  # both of the above


class AgoValue(Expression):
    """``now - N days`` as a query parameter marker (see :func:`bind`)."""

    output_field = DateTimeField()

    def __init__(self, days: int):
        super().__init__()
        self.days = days

    def as_sql(self, compiler, connection):
        return "%s", [Ago(self.days)]


class DayAgoValue(Expression):
    """The site-local day N days before now's, as ISO text, as a parameter marker (see
    :func:`bind`): what a date attribute's "within the last N days" compares with."""

    output_field = CharField()

    def __init__(self, days: int):
        super().__init__()
        self.days = days

    def as_sql(self, compiler, connection):
        return "%s", [DayAgo(self.days)]


def day_ago(now: datetime, days: int) -> str:
    """The site-local day ``days`` before ``now``'s, as ``YYYY-MM-DD``."""
    return (timezone.localdate(now) - timedelta(days=days)).isoformat()


class InIds(Lookup):
    """``column`` is one of the ids bound to ``marker`` — one parameter whatever the count."""

    lookup_name = "in_ids"
    prepare_rhs = False

    def __init__(self, column: str, marker: Ids = CONTACTS):
        super().__init__(F(column), marker)

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)  # a compiled column reference
        if connection.vendor == "postgresql":
            # A set to join, not a literal list to estimate element by element.
            return f"{lhs} IN (SELECT unnest(%s::bigint[]))", [*params, self.rhs]
        if connection.vendor == "sqlite":
            return f"{lhs} IN (SELECT value FROM json_each(%s))", [*params, self.rhs]  # noqa: S608
        raise NotSupportedError("id-list parameters need PostgreSQL or SQLite")


class InIdsOrLeavingMembers(InIds):
    """``column`` is one of CONTACTS, or one of LEAVERS that is a stored member of the
    segment: the contacts an incremental evaluation looks at, as one set to join (a leaver
    that is not a member cannot change, so it is not even probed)."""

    def __init__(self, column: str, segment_id: int):
        super().__init__(column, CONTACTS)
        self.segment_id = segment_id

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)  # a compiled column reference
        if connection.vendor == "postgresql":
            ids = "SELECT unnest(%s::bigint[])"
        elif connection.vendor == "sqlite":
            ids = "SELECT value FROM json_each(%s)"
        else:
            raise NotSupportedError("id-list parameters need PostgreSQL or SQLite")
        members = f"SELECT contact_id FROM crm_segmentmembership WHERE segment_id = %s AND contact_id IN ({ids})"  # noqa: E501, S608
        sql = f"{lhs} IN ({ids} UNION ALL {members})"
        return sql, [*params, CONTACTS, self.segment_id, LEAVERS]


def int_array(values) -> str:
    """A PostgreSQL array literal of whole numbers, for a ``%s::bigint[]`` parameter.

    psycopg's generic list dumper inspects every element (a regex each, to decide on
    quoting); ids are ints, so one ``join`` does it."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


def bind(params, *, connection, now: datetime, ids: dict[str, list[int]]) -> list:
    """Replace the markers in compiled parameters with this run's values."""
    out = []
    for p in params:
        if isinstance(p, Ago):
            out.append(connection.ops.adapt_datetimefield_value(now - timedelta(days=p.days)))
        elif isinstance(p, DayAgo):
            out.append(day_ago(now, p.days))
        elif isinstance(p, Ids):
            values = ids[p.name]
            if connection.vendor == "postgresql":
                out.append(int_array(values))
            else:
                out.append(json.dumps(list(values)))
        else:
            out.append(p)
    return out


def has_markers(params) -> bool:
    return any(isinstance(p, Ago | DayAgo | Ids) for p in params)
