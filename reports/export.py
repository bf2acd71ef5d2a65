"""CSV/XLSX export of every table a report page shows (``reports.tables``), in page order.

Layout: XLSX has one sheet per table, named after it; CSV has the tables one after
another, each as a title row, its header row and its rows, then an empty row. The main
table ends with a "Total" line (the report's totals that are columns of it), as on the page.
With compare on, every figure column of a compared table is followed by its change and
relative change columns, and a month column by "Compared with" (``reports.compare``).

Cells are written by ``crm.exports``, so report and contact exports behave alike: a figure
the page shows as "—" (a rate over a zero denominator) is an empty cell; text starting like
a formula (``= + - @``, tab, CR) gets a leading ``'`` in CSV and is a quote-prefixed text
cell, its value unchanged, in XLSX; numbers stay numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpResponse

from crm.exports import csv_rows_response, neutralise, xlsx_sheets_response

from .tables import Table

__all__ = ["neutralise", "report_export", "table_cells", "total_line"]


def total_line(table: Table, totals: dict) -> dict | None:
    """The main table's "Total" row: the totals that are columns of it (None if none is)."""
    if not table.total or not any(c.key in totals for c in table.columns[1:]):
        return None
    return {c.key: totals[c.key] for c in table.columns if c.key in totals}


def table_cells(table: Table, body: dict) -> list[list]:
    """A table as its header row and one list of plain values per row."""
    if "previous" in body and table.compared:
        return _compared_cells(table, body)
    keys = [c.key for c in table.columns]
    rows = [[r.get(k) for k in keys] for r in table.rows(body)]
    total = total_line(table, body.get("totals") or {})
    if total is not None:
        rows.append(["Total", *[total.get(k) for k in keys[1:]]])
    return [[c.label for c in table.columns], *rows]


def _compared_cells(table: Table, body: dict) -> list[list]:
    """:func:`table_cells` with compare on: each figure followed by its change and relative
    change against the previous period, and a month row by the month it is compared with."""
    header: list = []
    for c in table.columns:
        header.append(c.label)
        if c.key == table.month_key:
            header.append("Compared with")
        elif c.kind != "text":
            header += [f"{c.label} change", f"{c.label} relative change"]

    def line(row: dict, changes: dict) -> list:
        out = []
        for c in table.columns:
            out.append(row.get(c.key))
            if c.key == table.month_key:
                out.append(row.get("compared_with"))
            elif c.kind != "text":
                ch = changes.get(c.key) or {}
                out += [ch.get("absolute"), ch.get("relative")]
        return out

    rows = [line(r, r.get("change") or {}) for r in table.rows(body)]
    total = total_line(table, body.get("totals") or {})
    if total is not None:
        changes = {k: v for k, v in body["previous"]["change"].items() if k in total}
        rows.append(["Total", *line(total, changes)[1:]])
    return [header, *rows]


def _csv_rows(tables: list[Table], body: dict) -> Iterator[list]:
    for table in tables:
        yield [table.title]
        yield from table_cells(table, body)
        yield []


def report_export(fmt: str, tables: list[Table], body: dict, filename: str) -> HttpResponse:
    """The report's tables as an XLSX (``fmt`` "xlsx") or CSV download."""
    if fmt == "xlsx":
        sheets = [(t.sheet_name, table_cells(t, body)) for t in tables]
        return xlsx_sheets_response(sheets=sheets, filename=filename)
    return csv_rows_response(rows=_csv_rows(tables, body), filename=filename)
