"""Every report by name: how to build its body (API/pages/exports) and which columns it shows.

The body is the JSON API contract: ``{"report", "start", "end", "filters", "rows",
"totals"}`` plus extras per report (funnel: ``stages``, ``nurtured_vs_non_nurtured``).
With compare on, ``previous`` holds the previous period's totals and their change, and
every compared row its own ``change`` (``reports.compare``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from django.utils import timezone

from .compare import change, join_previous
from .metrics import cost, customers, email, funnel, leads, revenue
from .metrics.funnel_groups import funnel_groups
from .query import GROUP_BY, ReportParamError, ReportQuery, parse_query, site_tz
from .tables import Column, Table, report_tables, totals_table


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    build: Callable[[ReportQuery], dict]
    uses_attribution: bool = False
    group_by: tuple[str, ...] = ()  # the groupings it offers (``?group_by=``)

    @property
    def columns(self) -> list[Column]:
        return report_tables(self.name, self.title)[0].columns

    def tables(self, q: ReportQuery) -> list[Table]:
        """The report's tables for ``q``, the main one first."""
        return report_tables(self.name, self.title, group_by=q.group_by)

    def page_tables(self, q: ReportQuery) -> list[Table]:
        """Every table of the page in order — the main one, the totals (not on the
        dashboard, whose rows are its totals), then the others — as its export writes them."""
        main, *extra = self.tables(q)
        if self.name == "dashboard":
            return [main]
        return [main, totals_table(q.compare), *extra]


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
    if q.group_by:
        grouped = funnel_groups(q, q.group_by)
        body.update(group_by=q.group_by, groups=grouped["rows"], groups_note=grouped["note"])
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


REPORTS: dict[str, Report] = {
    r.name: r
    for r in [
        Report("dashboard", "Dashboard", build_dashboard),
        Report("funnel", "Funnel", build_funnel, group_by=GROUP_BY),
        Report("email", "Email and programs", build_email),
        Report("cost-per-mql", "Cost per MQL", build_cost, uses_attribution=True),
        Report("leads", "Leads", build_leads),
        Report("revenue", "Revenue", build_revenue, uses_attribution=True),
        Report("customers", "Customers", build_customers),
    ]
}
# "review" is served by the review register (reports.review), not by this registry.
RESERVED = {"review"}


def report_query(name: str, params) -> ReportQuery:
    """The parameters of report ``name`` (ReportParamError, a 400, when malformed)."""
    q = parse_query(params)
    if q.group_by and q.group_by not in REPORTS[name].group_by:
        raise ReportParamError("'group_by' applies to the funnel only.")
    return q


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
        prev = report.build(prev_q)
        body["previous"] = {
            "start": prev_q.start.isoformat(),
            "end": prev_q.end.isoformat(),
            "totals": prev["totals"],
            "change": {k: change(v, prev["totals"].get(k)) for k, v in body["totals"].items()},
        }
        join_previous(report.tables(q), body, prev)
    return body
