"""Report pages: the dashboard (home), one page per report, drill-down and exports."""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from crm.exports import csv_response
from crm.roles import EVERYONE, allow

from .drilldown import contacts_for, narrow
from .export import report_export
from .forms import ReportFilterForm
from .query import DEFAULT_PRESET, ReportParamError, parse_query
from .registry import REPORTS, chart_for, report_body, report_query
from .shown import shown_table


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
    shown = [shown_table(q, t, body) for t in tables]
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
