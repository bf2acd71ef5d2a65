"""Report pages: the dashboard (home), one page per report, drill-down and exports."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from crm.exports import csv_response
from crm.roles import EVERYONE, allow

from .drilldown import contacts_for, narrow
from .export import report_export, total_line
from .forms import ReportFilterForm
from .query import DEFAULT_PRESET, ReportParamError, parse_query
from .registry import REPORTS, chart_for, report_body, report_query
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


def _shown(q, table: Table, body: dict) -> dict:
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


def _render_report(request, name: str, template: str = "reports/report.html"):
    report = REPORTS[name]
    form = ReportFilterForm(request.GET or None, initial={"period": DEFAULT_PRESET})
    try:
        q = report_query(name, request.GET)
    except ReportParamError as exc:
        return render(
            request, template, {"report": report, "form": form, "error": str(exc)}, status=400
        )
    body = report_body(name, q)
    tables = report.page_tables(q)
    fmt_param = request.GET.get("format")
    if fmt_param in ("csv", "xlsx"):
        return report_export(fmt_param, tables, body, f"{name}-{q.start}-{q.end}")
    shown = [_shown(q, t, body) for t in tables]
    context = {
        "report": report,
        "reports": REPORTS,
        "form": form,
        "q": q,
        "body": body,
        "main": shown[0],
        "tables": shown[1:],
        "chart": chart_for(name, body),
        "export_qs": urlencode(q.as_params()),
    }
    return render(request, template, context)


def _row_kind(col: Column, row: dict) -> str:
    if col.kind == "number" and "metric" in row:
        return kind_of(row["metric"])
    return col.kind


@allow(EVERYONE)
def dashboard(request):
    return _render_report(request, "dashboard", "reports/dashboard.html")


@allow(EVERYONE)
def index(request):
    return render(request, "reports/index.html", {"reports": REPORTS})


@allow(EVERYONE)
def report_page(request, name: str):
    """One report page (the name comes from reports.urls)."""
    if name not in REPORTS or name == "dashboard":
        raise Http404("No such report.")
    return _render_report(request, name)


def _id_param(params, name: str) -> int | None:
    """A row id pinning a drill-down (a ValueError, shown as a 400, when not a number)."""
    value = params.get(name)
    return int(value) if value not in (None, "") else None


@allow(EVERYONE)
def drilldown(request):
    """The contacts behind a count, with the report's filters; ``?format=csv`` exports them."""
    try:
        q = parse_query(request.GET)
        if request.GET.get("month"):
            q = narrow(q, request.GET["month"])
        contacts = contacts_for(
            q,
            request.GET.get("metric", ""),
            row_campaign=_id_param(request.GET, "row_campaign"),
            stage=request.GET.get("stage", ""),
            step=_id_param(request.GET, "row_step"),
            url=request.GET.get("url", ""),
            program=_id_param(request.GET, "program"),
        )
    except (ReportParamError, ValueError) as exc:
        return render(request, "reports/drilldown.html", {"error": str(exc)}, status=400)
    if request.GET.get("format") == "csv":
        rows = (
            [c.id, c.email, c.full_name, c.stage, c.source, str(c.owner or ""), c.created_at]
            for c in contacts.iterator(chunk_size=2000)
        )
        headers = ["id", "email", "name", "stage", "source", "owner", "created_at"]
        return csv_response(headers=headers, rows=rows, filename="drilldown")
    page = Paginator(contacts, 100).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "reports/drilldown.html",
        {"page": page, "q": q, "metric": request.GET.get("metric"), "qs": params.urlencode()},
    )
