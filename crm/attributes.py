"""Conditions on a contact's custom attributes (``Contact.attributes``, a JSON object).

One builder for every feature that filters on an attribute — segment definitions
(``crm.segments``) and scoring's fit rules (``scoring.rules``) — so that a segment and a
rule reading ``attributes.employees > 1000`` select the same contacts, on SQLite and
PostgreSQL alike. The two ways JSON reaches SQL differ per database (a JSON number vs
its text, ``JSON_EXTRACT`` vs ``->``), so comparing the raw JSON value compares
different things on each; here numbers compare as numbers, dates as days and text as text.

The key is always an expression (:func:`_json`), never spelled into a lookup path
(``attributes__<key>``): any key is a valid attribute name, and one named like a lookup
or transform (``range``, ``contains``, ``isnull``, ``exact`` …) would be read as that
lookup — a crash or a different condition — and one holding ``__`` as a nested path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db.models import (
    Case,
    CharField,
    ExpressionWrapper,
    F,
    FloatField,
    JSONField,
    Q,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Lower, Substr
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
)
from django.utils import timezone

# A number written as text ("150" from a CSV import) or as a JSON number: what a custom
# attribute compares as a number.
NUMBER_TEXT = r"^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$"
# An ISO 8601 date ("2026-05-17") or date-time ("2026-05-17T09:30", with seconds, a
# fraction, "Z" or an offset, "T" or a space between): what a custom attribute compares as
# a day. Its day is the date as written (the first ten characters), as nurture's date
# triggers read it: no time-zone conversion. Trailing white space is allowed as for numbers
# (Python's "$", SQLite's REGEXP, also matches before a final newline; PostgreSQL's not).
DATE_TEXT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?\s*$"
)
NUMBER_OPERATORS = {
    "gt": GreaterThan,
    "gte": GreaterThanOrEqual,
    "lt": LessThan,
    "lte": LessThanOrEqual,
}
TEXT_LOOKUPS = {"contains": "icontains", "starts_with": "istartswith", "ends_with": "iendswith"}
NEGATIONS = {"not_equals": "equals", "not_in": "in", "not_contains": "contains"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _local_day_ago(days: int) -> str:
    return (timezone.localdate() - timedelta(days=days)).isoformat()


def attribute_q(
    key: str, op: str, value: Any = None, *, day_ago: Callable[[int], Any] = _local_day_ago
) -> Q:
    """A condition on the attribute ``key``, two-valued.

    A contact without the key (or with a JSON null) matches no positive condition — the
    condition is false there, never NULL — so every negation (``not_equals``, ``not_in``,
    ``not_contains``, a segment's ``not``) includes it, as a negation of an empty profile
    field does. Numbers compare as numbers whether stored as JSON numbers or as text (a
    CSV import stores text): ``"150"`` equals 150 and is above 100; text that is no number
    is neither above nor below one. Dates compare as days (:data:`DATE_TEXT`); a value
    that is no date is neither before nor after one. Text compares case-insensitively,
    ``in`` too.

    ``value``: a number for ``gt``/``gte``/``lt``/``lte``; a list for ``in``/``not_in``;
    ``[low, high]`` for ``between`` — two numbers, or two ``YYYY-MM-DD`` days — both
    included; a ``YYYY-MM-DD`` day for ``before``/``after`` (the day itself excluded);
    a number of days for ``within_last_days`` (from that many days before today up to
    today, both included); for ``equals`` text, a number (compared as a number) or
    true/false; text for the others; nothing for ``is_empty``/``is_not_empty``.
    ``day_ago(n)``: the site-local day ``n`` days before today as ``YYYY-MM-DD`` (or an
    expression standing for it, for a query compiled ahead of time).
    """
    if op in NEGATIONS:
        return ~attribute_q(key, NEGATIONS[op], value, day_ago=day_ago)
    if op in ("is_empty", "is_not_empty"):
        q = (
            ~Q(attributes__has_key=key)
            | _key_lookup(key, "exact", None)
            | _key_lookup(key, "exact", "")
        )
        return q if op == "is_empty" else ~q
    # Every positive condition is false, never NULL, for a missing key or a JSON null, so
    # a NOT of it is true there (SQL's NOT NULL would drop the contact from both sides).
    present = Q(attributes__has_key=key) & ~_key_lookup(key, "exact", None)
    if op == "equals":
        return present & _same(key, value)
    if op == "in":
        words = sorted({v.lower() for v in value if isinstance(v, str)})
        q = Q(In(Lower(_text(key)), words)) if words else Q(pk__in=[])
        for v in value:
            if not isinstance(v, str):
                q |= _same(key, v)
        return present & q
    if op in TEXT_LOOKUPS:
        return present & _key_lookup(key, TEXT_LOOKUPS[op], value)
    if op in NUMBER_OPERATORS:
        return present & _compared(_as_number(key), NUMBER_OPERATORS[op], float(value))
    if op == "between":
        low, high = value  # validated: two numbers or two days
        if _is_number(low):
            return present & _within(_as_number(key), float(low), float(high))
        return present & _within(_as_day(key), low, high)
    if op == "before":
        return present & _compared(_as_day(key), LessThan, value)
    if op == "after":
        return present & _compared(_as_day(key), GreaterThan, value)
    if op == "within_last_days":
        return present & _within(_as_day(key), day_ago(value), day_ago(0))
    raise KeyError(op)


def _column() -> ExpressionWrapper:
    """``Contact.attributes`` with its type known before the query resolves it: a lookup
    built as an expression prepares its value by its left side's field (a JSON value for
    ``exact``), and would take it as a plain SQL parameter if that were still unknown."""
    return ExpressionWrapper(F("attributes"), output_field=JSONField())


def _json(key: str) -> KeyTransform:
    """The attribute as JSON (see the module docstring on why an expression)."""
    return KeyTransform(key, _column())


def _text(key: str) -> KeyTextTransform:
    """The attribute as text (``->>`` on PostgreSQL)."""
    return KeyTextTransform(key, _column())


def _key_lookup(key: str, lookup: str, value: Any) -> Q:
    """``attributes__<key>__<lookup>=value`` with ``key`` read as a key, whatever its name:
    the JSON key lookups Django registers (``exact`` of a JSON value, ``iexact`` and
    ``icontains`` of its text …), which compile alike on both databases."""
    lhs = _json(key)
    return Q(lhs.get_lookup(lookup)(lhs, value))


def _compared(expression, lookup, value) -> Q:
    """``expression <lookup> value``, false (never NULL) where the expression is NULL."""
    return Q(IsNull(expression, False)) & Q(lookup(expression, value))


def _within(expression, low, high) -> Q:
    """``low <= expression <= high``, false (never NULL) where the expression is NULL."""
    return _compared(expression, GreaterThanOrEqual, low) & Q(LessThanOrEqual(expression, high))


def _as_number(key: str) -> Case:
    """The attribute as a float when its text is a number, else NULL (never a cast error:
    the regular expression guards the cast)."""
    return Case(
        When(_key_lookup(key, "regex", NUMBER_TEXT), then=Cast(_text(key), FloatField())),
        default=Value(None),
        output_field=FloatField(),
    )


def _as_day(key: str) -> Case:
    """The attribute's day as ``YYYY-MM-DD`` text when it is an ISO date or date-time, else
    NULL. Compared as text: days of that one shape sort as their dates do (in any
    collation — every hyphen is at the same place), and no cast can fail on a value the
    pattern lets through but the calendar does not (``2026-02-30``, which then sorts
    between the 28th and 1 March)."""
    return Case(
        When(_key_lookup(key, "regex", DATE_TEXT), then=Substr(_text(key), 1, 10)),
        default=Value(None),
        output_field=CharField(),
    )


def _same(key: str, value: Any) -> Q:
    """``equals`` for one value: true/false as JSON or as its text, a number as a number,
    text case-insensitively."""
    if isinstance(value, bool):
        return _key_lookup(key, "exact", value) | _key_lookup(key, "iexact", str(value).lower())
    if _is_number(value):  # text that is no number ("abc") is not equal, rather than NULL
        return _compared(_as_number(key), Exact, float(value))
    return _key_lookup(key, "iexact", value)
