"""How a report table is drawn on its page (templates/reports/_table.html): each figure
formatted, linked to its drill-down and, with compare on, given its change."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from .export import total_line
from .tables import Column, Table, kind_of


def fmt(value, kind: str) -> str:
    """Display a figure: rates as percentages, money with cents, missing as "—"."""
    if value is None or value == "":
        return "—"
    if kind == "rate":
        return f"{float(value) * 100:.1f}%"
    if kind == "money":
        return f"{Decimal(value):,.2f}"
    if kind == "count":
        return f"{value:,}" if isinstance(value, int) else str(value)
    return str(value)


def _drill_href(q, table: Table, col: Column, row: dict) -> str | None:
    if not col.drill or not row.get(col.key):
        return None
    params = q.as_params()
    # A column may name its metric by the row ("{group_key}": nurtured vs non-nurtured).
    params["metric"] = col.drill.format_map(row)
    pins = table.drill_params(row)
    if pins is None:  # a row no filter can pin down ("(other)", "(no campaign)" groups)
        return None
    params.update(pins)
    return "/reports/drilldown/?" + urlencode(params)


def signed(value, kind: str) -> str:
    """A change: signed, a rate's in percentage points, "—" when undefined."""
    if value is None:
        return "—"
    if kind == "rate":
        return f"{float(value) * 100:+.1f} pp"
    if kind == "money":
        return f"{Decimal(value):+,.2f}"
    return f"{value:+,}"


def change_text(ch: dict | None, kind: str) -> str:
    """A figure's change against the previous period: "+3 (+25.0%)", "+2.0 pp (+10.0%)"."""
    if not ch or ch.get("absolute") is None:
        return "—"
    rel = ch.get("relative")
    return signed(ch["absolute"], kind) + (f" ({rel * 100:+.1f}%)" if rel is not None else "")


def _text(key: str, value, kind: str) -> str:
    if key == "change":
        return signed(value, kind)
    if key == "relative_change":
        return "—" if value is None else f"{value * 100:+.1f}%"
    return fmt(value, kind)


def _cell(q, table: Table, col: Column, row: dict) -> dict:
    kind = _row_kind(col, row)
    value = row.get(col.key)
    cell = {
        # The dashboard's and the totals' rows mix counts, rates and money in one column.
        "text": _text(col.key, value, kind),
        "href": _drill_href(q, table, col, row),
        "flag": col.key == "unsubscribe_rate" and row.get("unsubscribe_flag"),
        "num": col.kind != "text",
    }
    if q.compare and table.compared:
        if col.key == table.month_key:
            cell["change"] = f"vs {row.get('compared_with') or '—'}"
        elif col.kind != "text":
            cell["change"] = change_text((row.get("change") or {}).get(col.key), kind)
    return cell


def shown_table(q, table: Table, body: dict) -> dict:
    """A table as the template draws it (reports/_table.html)."""
    return {
        "title": table.title,
        "headers": [c.label for c in table.columns],
        "rows": [[_cell(q, table, c, r) for c in table.columns] for r in table.rows(body)],
        "total": _total_cells(q, table, body),
        "empty": table.empty,
        "note": table.note,
    }


def _total_cells(q, table: Table, body: dict) -> list[dict] | None:
    total = total_line(table, body.get("totals") or {})
    if total is None:
        return None
    changes = body["previous"]["change"] if q.compare else {}
    cells = [{"text": "Total"}]
    for c in table.columns[1:]:
        cell = {"text": fmt(total[c.key], c.kind) if c.key in total else "", "num": True}
        if c.key in total and c.key in changes:
            cell["change"] = change_text(changes[c.key], c.kind)
        cells.append(cell)
    return cells


def _row_kind(col: Column, row: dict) -> str:
    if col.kind == "number" and "metric" in row:
        return kind_of(row["metric"])
    return col.kind
