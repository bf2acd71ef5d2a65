"""The register as auditors keep it: XLSX (one sheet per item type) and CSV.

Layout: first column the asset or program name, second its baseline, then one column per
review date, oldest to newest (newest last). Each cell summarises that review's decision
and figures. The content sheet is grouped by content type, with a heading row per type.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from django.http import HttpResponse
from django.utils import timezone
from openpyxl import Workbook
from openpyxl.styles import Font

from .models import ContentAsset, Review, ReviewItem
from .snapshots import METRIC_KEYS, RATE_KEYS

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """Neutralise spreadsheet formulas in text (CSV/formula injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def format_figures(item_type: str, figures: dict) -> str:
    parts = []
    for key in METRIC_KEYS.get(item_type, []):
        if key not in figures:
            continue
        value = figures[key]
        if value is None:
            shown = "—"
        elif key in RATE_KEYS:
            shown = f"{value:.1%}"
        elif isinstance(value, float):
            shown = f"{value:,.2f}"
        else:
            shown = f"{value:,}"
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return "; ".join(parts)


def _sheet_rows(item_type: str) -> tuple[list[str], list[list]]:
    """Header and rows of one sheet; content rows come grouped under type headings."""
    items = list(ReviewItem.objects.filter(type=item_type).order_by("content_type", "name", "pk"))
    reviews = Review.objects.filter(item__in=items).order_by("reviewed_at")
    # A column per site-time-zone day with a review; two reviews of one item on one day
    # share its cell, in order (the register is an audit record: none may drop out).
    by_item: dict[int, dict] = defaultdict(lambda: defaultdict(list))
    dates = []
    for review in reviews:
        day = timezone.localtime(review.reviewed_at).date()
        if day not in dates:
            dates.append(day)
        by_item[review.item_id][day].append(review)
    header = ["Name", "Baseline", *[d.isoformat() for d in dates]]
    rows: list[list] = []
    group = None
    labels = dict(ContentAsset.Type.choices)
    for item in items:
        if item_type == ReviewItem.Type.CONTENT and item.content_type != group:
            group = item.content_type
            rows.append([labels.get(group, group or "Other")])
        baseline = format_figures(item_type, item.baseline)
        if item.baseline_source == "manual":
            baseline = f"{baseline} (entered by hand)"
        cells = [
            " / ".join(
                f"{review.get_decision_display()}: {format_figures(item_type, review.metrics)}"
                for review in by_item[item.pk].get(day, ())
            )
            for day in dates
        ]
        rows.append([item.name, baseline, *cells])
    return header, rows


def _types(item_type: str | None) -> list[tuple[str, str]]:
    """The item types to write, with their labels: one, or all of them."""
    return [(t, label) for t, label in ReviewItem.Type.choices if item_type in (None, t)]


def register_xlsx(item_type: str | None = None) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for sheet_type, label in _types(item_type):
        ws = wb.create_sheet(title=label[:31])
        header, rows = _sheet_rows(sheet_type)
        ws.append(header)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in rows:
            ws.append([safe_cell(v) for v in row])
            if len(row) == 1:  # a content-type heading
                ws.cell(row=ws.max_row, column=1).font = Font(bold=True, italic=True)
        ws.column_dimensions["A"].width = 40
        ws.column_dimensions["B"].width = 50
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def register_csv(item_type: str | None = None) -> str:
    """The item types (all, or ``item_type``) in one CSV: a leading "Type" column, then the
    sheet layout."""
    out = io.StringIO()
    writer = csv.writer(out)
    for sheet_type, label in _types(item_type):
        header, rows = _sheet_rows(sheet_type)
        writer.writerow(["Type", *header])
        for row in rows:
            writer.writerow([label, *[safe_cell(v) for v in row]])
        writer.writerow([])
    return out.getvalue()


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def register_download(fmt: str, *, item_type: str | None = None) -> HttpResponse:
    """The register as a ``csv`` or ``xlsx`` attachment (the page's export, the API's
    ``?format=``), of one item type or all of them."""
    if fmt == "xlsx":
        response = HttpResponse(register_xlsx(item_type), content_type=XLSX_TYPE)
    else:
        response = HttpResponse(register_csv(item_type), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="review-register.{fmt}"'
    return response
