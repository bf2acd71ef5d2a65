"""CSV and XLSX downloads of any list, safe to open in a spreadsheet.

A CSV cell that starts with ``= + - @`` (or a tab / carriage return) would run as a formula
in Excel or LibreOffice (CSV injection), so it is prefixed with ``'`` on export — and the
import takes that one ``'`` off again (:func:`unneutralise`), so an export re-imported
changes nothing (a phone number "+49 …" stays itself). An XLSX cell has a type: such text is
written as a text cell marked "quote prefix" (what Excel does for a typed ``'``), its value
unchanged. Numbers and dates are written as such, so they are never touched.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def neutralise(value: Any) -> Any:
    """Make a text cell inert in spreadsheets; other types pass through."""
    if isinstance(value, str) and value.startswith(DANGEROUS_PREFIXES):
        return "'" + value
    return value


def unneutralise(value: str) -> str:
    """An imported cell as it was before :func:`neutralise` (one ``'`` before a formula
    character is taken off; anything else is left as it is)."""
    if value.startswith("'") and value[1:].startswith(DANGEROUS_PREFIXES):
        return value[1:]
    return value


def _plain(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        # Spreadsheets have no time zones: write the site-local wall time.
        return timezone.localtime(value).replace(tzinfo=None)
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: blank for None, formula-like text neutralised."""
    return neutralise(_plain(value))


def xlsx_cell(sheet, value: Any) -> Any:
    """A value as a cell of a write-only ``sheet``: formula-like text stays as it is, in a
    quote-prefixed text cell."""
    value = _plain(value)
    if isinstance(value, str) and value.startswith(DANGEROUS_PREFIXES):
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"  # openpyxl would store "=…" as a formula
        cell.quotePrefix = True
        return cell
    return value


class _Echo:
    def write(self, value):
        return value


def csv_response(
    *, headers: Sequence[str], rows: Iterable[Sequence[Any]], filename: str
) -> StreamingHttpResponse:
    """Stream rows as CSV (UTF-8 with BOM so Excel reads accents), never all in memory."""
    return csv_rows_response(rows=itertools.chain([headers], rows), filename=filename)


def csv_rows_response(*, rows: Iterable[Sequence[Any]], filename: str) -> StreamingHttpResponse:
    """:func:`csv_response` of rows that carry their own headers (several tables in one file)."""
    writer = csv.writer(_Echo())

    def lines():
        yield "\ufeff"
        for row in rows:
            yield writer.writerow([csv_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def xlsx_response(
    *, headers: Sequence[str], rows: Iterable[Sequence[Any]], filename: str, title: str = "Export"
) -> HttpResponse:
    """Write an XLSX with openpyxl's write-only mode (rows are streamed into the file)."""
    return xlsx_sheets_response(
        sheets=[(title, itertools.chain([headers], rows))], filename=filename
    )


def xlsx_sheets_response(
    *, sheets: Iterable[tuple[str, Iterable[Sequence[Any]]]], filename: str
) -> HttpResponse:
    """An XLSX of several sheets, each ``(title, rows)`` with its header as its first row."""
    workbook = Workbook(write_only=True)
    for title, rows in sheets:
        sheet = workbook.create_sheet(title=title[:31])
        for row in rows:
            sheet.append([xlsx_cell(sheet, v) for v in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    response = HttpResponse(buffer.getvalue(), content_type=XLSX_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}.xlsx"'
    return response


def export_response(
    fmt: str,
    *,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    filename: str,
) -> HttpResponse:
    if fmt == "xlsx":
        return xlsx_response(headers=headers, rows=rows, filename=filename)
    return csv_response(headers=headers, rows=rows, filename=filename)


# --- Contacts --------------------------------------------------------------------------------

CONTACT_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("id", lambda r: r["id"]),
    ("email", lambda r: r["email"]),
    ("first_name", lambda r: r["first_name"]),
    ("last_name", lambda r: r["last_name"]),
    ("job_title", lambda r: r["job_title"]),
    ("phone", lambda r: r["phone"]),
    ("company", lambda r: r["company__name"]),
    ("country", lambda r: r["country"]),
    ("source", lambda r: r["source"]),
    ("stage", lambda r: r["stage"]),
    ("score", lambda r: r["scorecard__score"]),
    ("owner", lambda r: r["owner__username"]),
    ("email_status", lambda r: r["email_status"]),
    ("consent_basis", lambda r: r["consent_basis"]),
    ("created_at", lambda r: r["created_at"]),
]
_CONTACT_VALUES = [
    "id",
    "email",
    "first_name",
    "last_name",
    "job_title",
    "phone",
    "company__name",
    "country",
    "source",
    "stage",
    "scorecard__score",
    "owner__username",
    "email_status",
    "consent_basis",
    "created_at",
]


def contacts_export(queryset, fmt: str, *, name: str = "contacts") -> HttpResponse:
    """Export contacts (a filtered queryset) with one streamed query; the file is called
    ``<name>-<local time>``."""
    rows = (
        [get(r) for _, get in CONTACT_COLUMNS]
        for r in queryset.values(*_CONTACT_VALUES).iterator(chunk_size=2000)
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    return export_response(
        fmt,
        headers=[column for column, _ in CONTACT_COLUMNS],
        rows=rows,
        filename=f"{name}-{stamp}",
    )
