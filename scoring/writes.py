"""Set-based writes of the engine: ledger appends and cached-score updates.

On PostgreSQL each write is one statement joined to ``unnest()``ed arrays, whatever the
number of rows. The arrays travel as array *literals* built here (``'{1,2,3}'``): the
driver's client-side binding otherwise adapts every element in Python, which for a rescore
chunk (~30k entries × 6 columns) cost seconds of CPU for a statement PostgreSQL runs in
well under that. Elsewhere (SQLite) the ORM does the same work in batches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from django.db import connection
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.db.models.expressions import RawSQL

from crm.models import ContactScore

from .models import LedgerEntry


class Entry(NamedTuple):
    """A ledger entry to append: the fields of :class:`LedgerEntry`, without the cost of
    a model instance (a rescore builds one per changed (contact, rule), ~60k per 100k
    contacts in the benchmark)."""

    contact_id: int
    rule_id: int | None
    activity_id: int | None
    points: int
    at: datetime
    reason: str


def int_array(values: Iterable[int | None]) -> str:
    """A PostgreSQL array literal of integers (``None`` → ``NULL``)."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def time_array(values: Iterable[datetime]) -> str:
    """A PostgreSQL array literal of aware datetimes (ISO 8601 with offset)."""
    return "{" + ",".join(f'"{v.isoformat()}"' for v in values) + "}"


def word_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of identifiers (choice values: letters, digits, _ -)."""
    words = list(values)
    for w in words:
        if not w.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"not a plain word: {w!r}")
    return "{" + ",".join(f'"{w}"' for w in words) + "}"


def ids_q(field: str, ids: Iterable[int]) -> Q:
    """``field IN ids``; on PostgreSQL with the ids as ONE array parameter.

    A batch's reads name its ~1,000 contacts: as 1,000 placeholders, Django builds a
    lookup per id and the driver re-splits the SQL around each of them on every query
    (~10 ms of CPU per query per batch); one ``unnest``ed array literal costs neither.
    """
    ids = list(ids)
    if connection.vendor == "postgresql":
        return Q(**{f"{field}__in": RawSQL("SELECT unnest(%s::bigint[])", [int_array(ids)])})
    return Q(**{f"{field}__in": ids})


_INSERT_SQL = (
    "INSERT INTO scoring_ledgerentry (contact_id, rule_id, activity_id, points, at, reason) "
    "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::integer[], "
    "%s::timestamptz[], %s::varchar[])"
)


def entries_append(entries: Sequence[Entry]) -> None:
    """Append entries: one ``INSERT … SELECT FROM unnest`` on PostgreSQL, else bulk_create."""
    if not entries:
        return
    if connection.vendor == "postgresql":
        contacts, rules, activities, points, ats, reasons = zip(*entries, strict=True)
        params = [
            int_array(contacts),
            int_array(rules),
            int_array(activities),
            int_array(points),
            time_array(ats),
            word_array(reasons),
        ]
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_SQL, params)
        return
    LedgerEntry.objects.bulk_create([LedgerEntry(**e._asdict()) for e in entries], batch_size=2000)


SCORE_UPDATE_BATCH = 2000

# PostgreSQL: one UPDATE joined to two unnest()ed arrays, whatever the number of contacts —
# two parameters instead of a CASE of thousands of ids, which Django took longer to build
# than PostgreSQL took to run (rescore at 100k contacts: ~16 s of Python for 57k scores).
_SET_SQL = (
    "UPDATE crm_contactscore SET score = v.s "
    "FROM unnest(%s::bigint[], %s::integer[]) AS v(id, s) WHERE contact_id = v.id"
)
_ADD_SQL = (
    "UPDATE crm_contactscore SET score = crm_contactscore.score + v.s "
    "FROM unnest(%s::bigint[], %s::integer[]) AS v(id, s) WHERE contact_id = v.id"
)


def _grouped_case(values: dict[int, int]) -> list[When]:
    by_value: dict[int, list[int]] = defaultdict(list)
    for cid, v in values.items():
        by_value[v].append(cid)
    return [When(pk__in=ids, then=Value(v)) for v, ids in by_value.items()]


def _scores_unnest(sql: str, values: dict[int, int]) -> None:
    ids = sorted(values)  # id order: concurrent writers take row locks in the same order
    with connection.cursor() as cursor:
        cursor.execute(sql, [int_array(ids), int_array(values[i] for i in ids)])


def scores_set(values: dict[int, int]) -> None:
    """Set scores to known values: one UPDATE (PostgreSQL), else one per 2,000 contacts.

    Callers pass only contacts whose score changes: every row written is a non-HOT update
    (``score`` is indexed for the score-sorted lists), so an unchanged row is pure cost.
    The rows are ``crm.ContactScore``'s, narrow on purpose (see its docstring).
    """
    if not values:
        return
    if connection.vendor == "postgresql":
        _scores_unnest(_SET_SQL, values)
        return
    items = list(values.items())
    for i in range(0, len(items), SCORE_UPDATE_BATCH):
        part = dict(items[i : i + SCORE_UPDATE_BATCH])
        ContactScore.objects.filter(pk__in=list(part)).update(
            score=Case(*_grouped_case(part), output_field=IntegerField())
        )


def scores_add(deltas: dict[int, int]) -> None:
    """Add aggregated deltas to the cached scores (the contacts are locked by the caller);
    contacts whose delta is zero are not written."""
    items = {c: d for c, d in deltas.items() if d}
    if not items:
        return
    if connection.vendor == "postgresql":
        _scores_unnest(_ADD_SQL, items)
        return
    pairs = list(items.items())
    for i in range(0, len(pairs), SCORE_UPDATE_BATCH):
        part = dict(pairs[i : i + SCORE_UPDATE_BATCH])
        ContactScore.objects.filter(pk__in=list(part)).update(
            score=F("score") + Case(*_grouped_case(part), output_field=IntegerField())
        )
