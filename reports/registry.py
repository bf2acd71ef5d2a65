"""Every report by name: how to build its body (API/pages/exports) and which columns it shows.

The body is the JSON API contract: ``{"report", "start", "end", "filters", "rows",
"totals"}`` plus extras per report (funnel: ``stages``, ``nurtured_vs_non_nurtured``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from .metrics import cost, customers, email, funnel, leads, revenue
from .query import ReportQuery, money, ratio, site_tz


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "count"  # count | rate | money | text | number | days
    drill: str = ""  # drill-down metric name, when the figure is a count of contacts


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    build: Callable[[ReportQuery], dict]
    columns: list[Column]
    total_columns: list[Column] = field(default_factory=list)
    uses_attribution: bool = False
    chart: Callable[[dict], dict] | None = None


def change(current, previous) -> dict:
    """METRICS.md "Short-term trend": absolute and relative change (None when undefined)."""
    if current is None or previous is None or isinstance(current, (str, bool, dict, list)):
        return {"absolute": None, "relative": None}
    absolute = current - previous
    if isinstance(absolute, Decimal):
        absolute = money(absolute)
    elif isinstance(absolute, float):
        absolute = round(absolute, 6)
    return {"absolute": absolute, "relative": ratio(current - previous, previous)}


# --- builders ------------------------------------------------------------------------------


def build_dashboard(q: ReportQuery) -> dict:
    """Dashboard figures (issue 8 §1), each as defined in METRICS.md.

    Choices: cost per MQL = program cost of the period ÷ MQL entries in the period
    (credits sum to 1 per entry, so this equals the cost-per-MQL report's total line when
    no campaign filter applies). A campaign/channel filter keeps the costs of its
    campaigns, as the cost-per-MQL report does, and the MQL entries of the contacts they
    acquired, as every contact-level count does (``ReportQuery``). CTR and unsubscribe rate
    are over the period's emails; won revenue = amounts of deals won (closed) in the period.
    """
    prev_q = q.previous()
    # The cost entries of both periods in one read (each period keeps its overlapping ones).
    entries = cost.cost_entries(replace(q, start=prev_q.start))
    totals = dashboard_totals(q, entries)
    prev = dashboard_totals(prev_q, entries)
    alert_q = ReportQuery(
        start=timezone.localdate(timezone=site_tz()) - timedelta(days=89),
        end=timezone.localdate(timezone=site_tz()) + timedelta(days=1),
    )
    alert = leads.acceptance(alert_q)
    return {
        "rows": [
            {"metric": k, "value": v, "previous": prev[k], **_flat(change(v, prev[k]))}
            for k, v in totals.items()
        ],
        "totals": totals,
        "scoring_alert": {
            "acceptance_alert": alert["acceptance_alert"],
            "mql_acceptance_rate_90_days": alert["mql_acceptance_rate"],
        },
    }


def _flat(ch: dict) -> dict:
    return {"change": ch["absolute"], "relative_change": ch["relative"]}


def dashboard_totals(q: ReportQuery, cost_entries: list | None = None) -> dict:
    """The dashboard's figures for one period; ``cost_entries`` may hold the cost entries
    of a longer period (:func:`reports.metrics.cost.cost_entries`)."""
    m = leads.mqls(q)
    costs = cost.program_costs(q, cost_entries)
    shown = cost.shown_campaigns(q)
    program_cost = sum(
        (c["program_cost"] for cid, c in costs.items() if shown is None or cid in shown),
        start=0,
    )
    _, etotals = email.email_by_campaign(q)
    rev = revenue.influenced(q)
    return {
        "new_leads": leads.new_leads(q),
        "mqls": m["mqls"],
        "mql_entries": m["mql_entries"],
        "sqls": leads.sqls(q),
        "mql_acceptance_rate": leads.acceptance(q)["mql_acceptance_rate"],
        "program_cost": cost.to_money(program_cost),
        "cost_per_mql": (
            cost.to_money(program_cost / m["mql_entries"]) if m["mql_entries"] else None
        ),
        "click_through_rate": etotals["click_through_rate"],
        "unsubscribe_rate": etotals["unsubscribe_rate"],
        "won_revenue": rev["won_revenue"],
    }


def build_email(q: ReportQuery) -> dict:
    rows, totals = email.email_by_campaign(q)
    return {
        "rows": rows,
        "totals": totals,
        "steps": email.email_by_step(q),
        "landing_pages": email.landing_pages(q),
        "note": "Opens are unreliable (images off, privacy proxies); machine opens are "
        "excluded from unique opens and counted separately.",
    }


def build_cost(q: ReportQuery) -> dict:
    rows, totals, by_month = cost.cost_report(q)
    return {"rows": rows, "totals": totals, "by_month": by_month}


def build_leads(q: ReportQuery) -> dict:
    rows, totals = leads.leads_by_month(q)
    return {"rows": rows, "totals": totals}


def build_funnel(q: ReportQuery) -> dict:
    body = funnel.funnel_report(q)
    body["rows"] = body["stages"]
    return body


def build_revenue(q: ReportQuery) -> dict:
    rows, totals, channels = revenue.revenue_report(q)
    return {"rows": rows, "totals": totals, "channels": channels}


def build_customers(q: ReportQuery) -> dict:
    return {
        "rows": customers.clv_by_cohort(q),
        "totals": {**customers.rates(q), **customers.csat(q)},
        "social": email.social_by_campaign(q),
    }


# --- charts (Chart.js configs, data only) ------------------------------------------------------


def _bar(labels, datasets, kind="bar") -> dict:
    return {"type": kind, "labels": labels, "datasets": datasets}


def chart_for(name: str, body: dict) -> dict | None:
    rows = body.get("rows", [])
    if name == "dashboard":
        return None
    if name == "funnel":
        return _bar(
            [r["stage"] for r in rows],
            [
                {"label": "Cohort reached", "data": [r["cohort"] for r in rows]},
                {"label": "Entries in period", "data": [r["entries"] for r in rows]},
            ],
        )
    if name == "email":
        return _bar(
            [r["campaign"] for r in rows],
            [
                {"label": "Open rate", "data": [r["open_rate"] for r in rows]},
                {"label": "CTR", "data": [r["click_through_rate"] for r in rows]},
            ],
        )
    if name == "cost-per-mql":
        months = body.get("by_month", [])
        return _bar(
            [m["month"] for m in months],
            [{"label": "Cost per MQL", "data": [_num(m["cost_per_mql"]) for m in months]}],
            "line",
        )
    if name == "leads":
        return _bar(
            [r["month"] for r in rows],
            [
                {"label": "New leads", "data": [r["new_leads"] for r in rows]},
                {"label": "MQLs", "data": [r["mqls"] for r in rows]},
                {"label": "SQLs", "data": [r["sqls"] for r in rows]},
            ],
        )
    if name == "revenue":
        ch = body.get("channels", [])
        return _bar(
            [c["channel"] for c in ch],
            [{"label": "Attributed revenue", "data": [_num(c["attributed_revenue"]) for c in ch]}],
        )
    if name == "customers":
        return _bar(
            [r["cohort"] for r in rows],
            [{"label": "CLV", "data": [_num(r["customer_lifetime_value"]) for r in rows]}],
        )
    return None


def _num(v):
    return None if v is None else float(v)


C = Column
EMAIL_COLS = [
    C("campaign", "Campaign", "text"),
    C("sent", "Sent", "count", "email_sent"),
    C("delivered", "Delivered"),
    C("bounced", "Bounced", "count", "email_bounced"),
    C("bounce_rate", "Bounce rate", "rate"),
    C("hard_bounce_rate", "Hard-bounce rate", "rate"),
    C("unique_opens", "Unique opens", "count", "email_opened"),
    C("machine_opens", "Machine opens"),
    C("open_rate", "Open rate*", "rate"),
    C("unique_clicks", "Unique clicks", "count", "email_clicked"),
    C("click_through_rate", "CTR", "rate"),
    C("click_to_open_rate", "CTOR", "rate"),
    C("unsubscribed", "Unsubscribed", "count", "email_unsubscribed"),
    C("unsubscribe_rate", "Unsubscribe rate", "rate"),
    C("complaints", "Complaints", "count", "email_complained"),
    C("complaint_rate", "Complaint rate", "rate"),
    C("conversions", "Conversions"),
    C("conversion_rate", "Conversion rate", "rate"),
]
COST_COLS = [
    C("campaign", "Campaign", "text"),
    C("program_cost", "Program cost", "money"),
    C("variable_cost", "Variable cost", "money"),
    C("new_leads", "New leads", "count", "acquired"),
    C("cost_per_new_lead", "Cost / new lead", "money"),
    C("mqls", "MQLs (credit)", "number"),
    C("cost_per_mql", "Cost / MQL", "money"),
    C("cost_per_mql_variable", "Cost / MQL (variable)", "money"),
    C("sqls", "SQLs (credit)", "number"),
    C("cost_per_sql", "Cost / SQL", "money"),
    C("customers", "Customers (credit)", "number"),
    C("cost_per_customer", "CPA", "money"),
    C("attributed_revenue", "Attributed revenue", "money"),
    C("roi", "ROI", "rate"),
]
LEADS_COLS = [
    C("month", "Month", "text"),
    C("new_leads", "New leads", "count", "new_leads"),
    C("reopened_leads", "Re-opened", "count", "reopened"),
    C("mql_entries", "MQL entries", "count", "mqls"),
    C("mqls", "MQLs (unique)", "count", "mqls"),
    C("sqls", "SQLs", "count", "sqls"),
    C("mql_acceptance_rate", "Acceptance rate", "rate"),
    C("score_median", "Median month-end score", "number"),
]
FUNNEL_COLS = [
    C("stage", "Stage", "text"),
    C("cohort", "Cohort reached", "count", "cohort"),
    C("entries", "Entries", "count", "entries"),
    C("contacts", "Contacts entering", "count", "entries"),
    C("stage_conversion", "Conversion to next", "rate"),
    C("median_days", "Median days", "number"),
    C("p90_days", "p90 days", "number"),
    C("recycled", "Recycled from", "count", "recycled_from"),
    C("disqualified", "Disqualified from", "count", "disqualified_from"),
]
REVENUE_COLS = [
    C("campaign", "Campaign", "text"),
    C("channel", "Channel", "text"),
    C("attributed_revenue", "Attributed revenue", "money"),
]
CUSTOMER_COLS = [
    C("cohort", "Customer start month", "text"),
    C("customers", "Customers", "count", "customer_cohort"),
    C("won_revenue", "Won revenue", "money"),
    C("customer_lifetime_value", "CLV", "money"),
]
DASHBOARD_COLS = [
    C("metric", "Metric", "text"),
    C("value", "Value", "number"),
    C("previous", "Previous period", "number"),
    C("change", "Change", "number"),
    C("relative_change", "Relative change", "rate"),
]

REPORTS: dict[str, Report] = {
    r.name: r
    for r in [
        Report("dashboard", "Dashboard", build_dashboard, DASHBOARD_COLS),
        Report("funnel", "Funnel", build_funnel, FUNNEL_COLS),
        Report("email", "Email and programs", build_email, EMAIL_COLS),
        Report("cost-per-mql", "Cost per MQL", build_cost, COST_COLS, uses_attribution=True),
        Report("leads", "Leads", build_leads, LEADS_COLS),
        Report("revenue", "Revenue", build_revenue, REVENUE_COLS, uses_attribution=True),
        Report("customers", "Customers", build_customers, CUSTOMER_COLS),
    ]
}
# "review" is served by the review register (reports.review), not by this registry.
RESERVED = {"review"}


def report_body(name: str, q: ReportQuery) -> dict:
    """The API body of report ``name`` for ``q`` (with the previous period when asked)."""
    report = REPORTS[name]
    built = report.build(q)
    body = {
        "report": name,
        "start": q.start.isoformat(),
        "end": q.end.isoformat(),
        "filters": q.filters,
        "attribution": q.attribution,
        "too_little_data": q.too_little_data,
        **built,
    }
    if q.compare:
        prev_q = q.previous()
        prev = report.build(prev_q)["totals"]
        body["previous"] = {
            "start": prev_q.start.isoformat(),
            "end": prev_q.end.isoformat(),
            "totals": prev,
            "change": {k: change(v, prev.get(k)) for k, v in body["totals"].items()},
        }
    return body
