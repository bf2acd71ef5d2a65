"""Report pages: the dashboard (home), one page per report, drill-down and exports."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from crm.roles import EVERYONE, allow

from .drilldown import contacts_for, narrow
from .export import csv_response, export_response
from .forms import ReportFilterForm
from .query import DEFAULT_PRESET, ReportParamError, parse_query
from .registry import REPORTS, Column, report_body


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


def _drill_href(q, col: Column, row: dict) -> str | None:
    if not col.drill or not row.get(col.key):
        return None
    params = q.as_params()
    params["metric"] = col.drill
    if "campaign" in row:
        params["row_campaign"] = row.get("campaign_id") or 0
    if "month" in row:
        params["month"] = row["month"]
    if "cohort" in row and isinstance(row.get("cohort"), str):
        params["month"] = row["cohort"]
    if "stage" in row:
        params["stage"] = row["stage"]
    return "/reports/drilldown/?" + urlencode(params)


def _cells(q, columns, rows):
    return [
        [
            {
                # The dashboard's rows mix counts, rates and money in one column.
                "text": fmt(r.get(c.key), _row_kind(c, r)),
                "href": _drill_href(q, c, r),
                "flag": c.key == "unsubscribe_rate" and r.get("unsubscribe_flag"),
                "num": c.kind != "text",
            }
            for c in columns
        ]
        for r in rows
    ]


def _render_report(request, name: str, template: str = "reports/report.html"):
    report = REPORTS[name]
    form = ReportFilterForm(request.GET or None, initial={"period": DEFAULT_PRESET})
    try:
        q = parse_query(request.GET)
    except ReportParamError as exc:
        return render(
            request, template, {"report": report, "form": form, "error": str(exc)}, status=400
        )
    body = report_body(name, q)
    fmt_param = request.GET.get("format")
    if fmt_param in ("csv", "xlsx"):
        return export_response(
            fmt_param, report.columns, body["rows"], body["totals"], f"{name}-{q.start}-{q.end}"
        )
    from .registry import chart_for

    totals = [
        {
            "key": k,
            "text": fmt(v, _kind(k)),
            "prev": fmt(body["previous"]["totals"].get(k), _kind(k)) if q.compare else "",
            "change": _change_text(body, k) if q.compare else "",
        }
        for k, v in body["totals"].items()
        if not isinstance(v, (dict, list, bool))
    ]
    export_qs = urlencode(q.as_params())
    context = {
        "report": report,
        "reports": REPORTS,
        "form": form,
        "q": q,
        "body": body,
        "columns": report.columns,
        "rows": _cells(q, report.columns, body["rows"]),
        "totals": totals,
        "chart": chart_for(name, body),
        "export_qs": export_qs,
    }
    return render(request, template, context)


def _row_kind(col: Column, row: dict) -> str:
    if col.kind == "number" and "metric" in row:
        return _kind(row["metric"])
    return col.kind


def _kind(key: str) -> str:
    if key.endswith(("_rate", "csat", "roi")) or key in (
        "click_through_rate",
        "marketing_influenced_revenue",
    ):
        return "rate"
    if "cost" in key or "revenue" in key or key in ("open_pipeline", "won_revenue"):
        return "money"
    return "number"


def _change_text(body, key) -> str:
    ch = body["previous"]["change"].get(key) or {}
    if ch.get("absolute") is None:
        return "—"
    rel = ch.get("relative")
    return f"{ch['absolute']:+}" + (f" ({rel * 100:+.1f}%)" if rel is not None else "")


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


@allow(EVERYONE)
def drilldown(request):
    """The contacts behind a count, with the report's filters; ``?format=csv`` exports them."""
    try:
        q = parse_query(request.GET)
        if request.GET.get("month"):
            q = narrow(q, request.GET["month"])
        row_campaign = request.GET.get("row_campaign")
        row_campaign = int(row_campaign) if row_campaign not in (None, "") else None
        contacts = contacts_for(
            q,
            request.GET.get("metric", ""),
            row_campaign=row_campaign,
            stage=request.GET.get("stage", ""),
        )
    except (ReportParamError, ValueError) as exc:
        return render(request, "reports/drilldown.html", {"error": str(exc)}, status=400)
    if request.GET.get("format") == "csv":
        rows = [["id", "email", "name", "stage", "source", "owner", "created_at"]]
        rows += [
            [c.id, c.email, c.full_name, c.stage, c.source, str(c.owner or ""), c.created_at]
            for c in contacts.iterator(chunk_size=2000)
        ]
        from .export import neutralise

        return csv_response([[neutralise(v) for v in r] for r in rows], "drilldown")
    page = Paginator(contacts, 100).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "reports/drilldown.html",
        {"page": page, "q": q, "metric": request.GET.get("metric"), "qs": params.urlencode()},
    )
