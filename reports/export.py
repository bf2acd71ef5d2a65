"""CSV/XLSX export of exactly the table a report page shows."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from django.http import HttpResponse

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """Stop spreadsheet formula injection: text starting with = + - @ gets a leading '."""
    if isinstance(value, str) and value.startswith(DANGEROUS):
        return "'" + value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    return value


def table(columns, rows, totals=None) -> list[list]:
    """Header + rows (+ a totals line with the keys the totals share) as plain cells."""
    out = [[c.label for c in columns]]
    out += [[neutralise(r.get(c.key)) for c in columns] for r in rows]
    if totals:
        line = [neutralise(totals.get(c.key)) if c.key in totals else "" for c in columns]
        line[0] = "Total"
        out.append(line)
    return out


def csv_response(cells: list[list], filename: str) -> HttpResponse:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerows([["" if v is None else v for v in row] for row in cells])
    response = HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def xlsx_response(cells: list[list], filename: str) -> HttpResponse:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(filename[:31])
    for row in cells:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    response = HttpResponse(
        buf.getvalue(),
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}.xlsx"'
    return response


def export_response(fmt: str, columns, rows, totals, filename: str) -> HttpResponse:
    cells = table(columns, rows, totals)
    return xlsx_response(cells, filename) if fmt == "xlsx" else csv_response(cells, filename)
