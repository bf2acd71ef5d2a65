"""Compare with the previous period (METRICS.md "Short-term trend"): every figure of a
report with its absolute and relative change against the previous period of equal length.

The totals compare key by key. A table's rows compare with the previous period's row of
the same key (``reports.tables.Table.key``: campaign, step and campaign, url, stage,
program, channel). Month rows compare by place counted from the end: the last month with
the previous period's last month, the one before with the one before, and so on — so a
quarter's April, May and June meet January, February and March, where counting from the
start would pair April with the day of December that the previous 91 days begin on. The
month compared with is given as ``compared_with``.
"""

from __future__ import annotations

from decimal import Decimal

from .query import money, ratio
from .tables import Table

NO_CHANGE = {"absolute": None, "relative": None}


def change(current, previous) -> dict:
    """METRICS.md "Short-term trend": absolute and relative change (None when undefined).

    For a rate the absolute change is the difference of the two fractions (0.02 is two
    percentage points); the relative change is None on a zero base (METRICS.md: a rate
    whose denominator is zero), as it is when either figure is None.
    """
    if current is None or previous is None or isinstance(current, (str, bool, dict, list)):
        return dict(NO_CHANGE)
    absolute = current - previous
    if isinstance(absolute, Decimal):
        absolute = money(absolute)
    elif isinstance(absolute, float):
        absolute = round(absolute, 6)
    return {"absolute": absolute, "relative": ratio(current - previous, previous)}


def _is_figure(key: str, value) -> bool:
    # ids are row keys, not figures; booleans are flags
    if key == "id" or key.endswith("_id") or isinstance(value, bool):
        return False
    return isinstance(value, (int, float, Decimal))


def row_change(row: dict, previous: dict | None) -> dict:
    """The change of every figure of ``row`` that is a number in either period; a dict of
    figures (the score histogram) changes figure by figure. Without a previous row (the
    campaign, page … had none) every change is null."""
    previous = previous or {}
    out = {}
    for key, value in row.items():
        before = previous.get(key)
        if key == "change":
            continue
        if isinstance(value, dict):
            out[key] = row_change(value, before if isinstance(before, dict) else None)
        elif _is_figure(key, value) or _is_figure(key, before):
            out[key] = change(value, before) if previous else dict(NO_CHANGE)
    return out


def _join_by_key(table: Table, rows: list[dict], previous: list[dict]) -> None:
    before = {table.key(r): r for r in previous}
    for row in rows:
        row["change"] = row_change(row, before.get(table.key(row)))


def _join_by_month(table: Table, rows: list[dict], previous: list[dict]) -> None:
    for back, row in enumerate(reversed(rows), start=1):
        before = previous[-back] if back <= len(previous) else None
        row["compared_with"] = before[table.month_key] if before else None
        row["change"] = row_change(row, before)


def join_previous(tables: list[Table], body: dict, previous: dict) -> None:
    """Give every compared row of ``body`` its ``change`` against ``previous`` (the previous
    period's body), in place. A table derived from another source (the score profile from
    the month rows) reads the change its source rows carry."""
    done = set()
    for table in tables:
        rows, before = body.get(table.source), previous.get(table.source)
        if table.source in done:
            continue
        done.add(table.source)
        if isinstance(rows, dict):  # one row: the funnel's nurtured vs non-nurtured
            rows["change"] = row_change(rows, before)
        elif table.month_key:
            _join_by_month(table, rows or [], before or [])
        elif table.key:
            _join_by_key(table, rows or [], before or [])
