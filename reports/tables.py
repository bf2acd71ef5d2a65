"""The tables each report page shows — the same list its CSV/XLSX export writes (issue 8:
"export of exactly what is shown").

A report body (``reports.registry``) keeps its figures as lists of row dicts (``rows``,
``steps``, ``landing_pages`` …) or one dict (the funnel's nurtured vs non-nurtured). A
:class:`Table` names that ``source``, the columns shown, the key that joins a row to the
previous period's row (``reports.compare``) and the drill-down parameters that pin a row's
counts to their contacts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .metrics.funnel_groups import GROUP_LIMIT
from .metrics.leads import SCORE_BUCKETS, bucket_label


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "count"  # count | rate | money | text | number | days
    # The drill-down metric (reports.drilldown) when the figure counts contacts, or credits
    # their stage changes; activity counts (social reactions) have none.
    drill: str = ""


def row_drill_params(row: dict) -> dict:
    """Drill-down parameters pinning a row to its campaign, month or stage."""
    params = {}
    if "campaign" in row:
        params["row_campaign"] = row.get("campaign_id") or 0
    if "month" in row:
        params["month"] = row["month"]
    if isinstance(row.get("cohort"), str):  # the CLV table's customer start month
        params["month"] = row["cohort"]
    if "stage" in row:
        params["stage"] = row["stage"]
    return params


@dataclass(frozen=True)
class Table:
    """One table of a report page (and one sheet, or CSV block, of its export)."""

    title: str
    columns: list[Column]
    source: str = "rows"  # the body key its rows come from
    # Joins a row to the previous period's (reports.compare); None: not compared.
    key: Callable[[dict], Hashable] | None = None
    # Month rows carry their month under this key and are joined by place from the end.
    month_key: str = ""
    # Rows derived from the body (default: ``body[source]`` as it is).
    derive: Callable[[dict], list[dict]] | None = None
    # None for a row no filter can pin down: its counts are not linked.
    drill_params: Callable[[dict], dict | None] = row_drill_params
    empty: str = "No data in this period."
    note: str = ""
    # Ends with a "Total" line of the report's totals that are columns of it.
    total: bool = False
    sheet: str = ""  # the XLSX sheet name when the title is too long (31 characters)

    @property
    def compared(self) -> bool:
        """Whether its rows carry a change against the previous period (compare on)."""
        return bool(self.key or self.month_key)

    @property
    def sheet_name(self) -> str:
        return (self.sheet or self.title)[:31]

    def rows(self, body: dict) -> list[dict]:
        if self.derive is not None:
            return self.derive(body)
        return body.get(self.source) or []


def kind_of(key: str) -> str:
    """How a figure named ``key`` is shown when its column holds mixed figures (totals)."""
    if key.endswith(("_rate", "csat", "roi")) or key in (
        "click_through_rate",
        "marketing_influenced_revenue",
    ):
        return "rate"
    if "cost" in key or "revenue" in key or key in ("open_pipeline", "won_revenue"):
        return "money"
    return "number"


def totals_rows(body: dict) -> list[dict]:
    """The Totals table: one row per total figure, with its previous value and change
    when the body compares periods."""
    previous = body.get("previous")
    rows = []
    for key, value in body["totals"].items():
        if isinstance(value, (dict, list, bool)):
            continue
        row = {"metric": key, "value": value}
        if previous:
            ch = previous["change"].get(key) or {}
            row.update(
                previous=previous["totals"].get(key),
                change=ch.get("absolute"),
                relative_change=ch.get("relative"),
            )
        rows.append(row)
    return rows


C = Column
METRIC_COLS = [C("metric", "Metric", "text"), C("value", "Value", "number")]
COMPARE_COLS = [
    C("previous", "Previous period", "number"),
    C("change", "Change", "number"),
    C("relative_change", "Relative change", "rate"),
]


def totals_table(compare: bool) -> Table:
    columns = METRIC_COLS + (COMPARE_COLS if compare else [])
    return Table("Totals", columns, source="", derive=totals_rows)


def _campaign(row: dict):
    return row.get("campaign_id")


# --- email ---------------------------------------------------------------------------------

EMAIL_COLS = [
    C("campaign", "Campaign", "text"),
    C("sent", "Sent", "count", "email_sent"),
    C("delivered", "Delivered"),
    C("bounced", "Bounced", "count", "email_bounced"),
    C("bounce_rate", "Bounce rate", "rate"),
    C("hard_bounce_rate", "Hard-bounce rate", "rate"),
    C("unique_opens", "Unique opens", "count", "email_opened"),
    C("machine_opens", "Machine opens", "count", "email_machine_opened"),
    C("open_rate", "Open rate*", "rate"),
    C("unique_clicks", "Unique clicks", "count", "email_clicked"),
    C("click_through_rate", "CTR", "rate"),
    C("click_to_open_rate", "CTOR", "rate"),
    C("unsubscribed", "Unsubscribed", "count", "email_unsubscribed"),
    C("unsubscribe_rate", "Unsubscribe rate", "rate"),
    C("complaints", "Complaints", "count", "email_complained"),
    C("complaint_rate", "Complaint rate", "rate"),
    C("conversions", "Conversions", "count", "email_converted"),
    C("conversion_rate", "Conversion rate", "rate"),
]
STEP_COLS = [
    C("campaign", "Campaign", "text"),
    C("step", "Step", "text"),
    C("sent", "Sent", "count", "email_sent"),
    C("delivered", "Delivered"),
    C("unique_opens", "Unique opens", "count", "email_opened"),
    C("open_rate", "Open rate*", "rate"),
    C("unique_clicks", "Unique clicks", "count", "email_clicked"),
    C("click_through_rate", "CTR", "rate"),
    C("unsubscribe_rate", "Unsubscribe rate", "rate"),
]
LANDING_COLS = [
    C("url", "Page", "text"),
    C("unique_visitors", "Unique visitors", "count", "landing_visitors"),
    C("converted_visitors", "Submitted its form", "count", "landing_converted"),
    C("landing_page_conversion_rate", "Conversion rate", "rate"),
]


def _step_params(row: dict) -> dict:
    return {"row_campaign": row.get("campaign_id") or 0, "row_step": row["step_id"]}


def _url_params(row: dict) -> dict:
    return {"url": row["url"]}


def email_tables(main: Table) -> list[Table]:
    return [
        main,
        Table(
            "Per step",
            STEP_COLS,
            source="steps",
            key=lambda r: (r["step_id"], r.get("campaign_id")),
            drill_params=_step_params,
            empty="No step emails in this period.",
        ),
        Table(
            "Landing pages",
            LANDING_COLS,
            source="landing_pages",
            key=lambda r: r["url"],
            drill_params=_url_params,
            empty="No page visits in this period.",
        ),
    ]


# --- cost per MQL -------------------------------------------------------------------------

COST_COLS = [
    C("campaign", "Campaign", "text"),
    C("program_cost", "Program cost", "money"),
    C("variable_cost", "Variable cost", "money"),
    C("new_leads", "New leads", "count", "acquired"),
    C("cost_per_new_lead", "Cost / new lead", "money"),
    C("mqls", "MQLs (credit)", "number", "mql_credits"),
    C("cost_per_mql", "Cost / MQL", "money"),
    C("cost_per_mql_variable", "Cost / MQL (variable)", "money"),
    C("sqls", "SQLs (credit)", "number", "sql_credits"),
    C("cost_per_sql", "Cost / SQL", "money"),
    C("customers", "Customers (credit)", "number", "customer_credits"),
    C("cost_per_customer", "CPA", "money"),
    C("attributed_revenue", "Attributed revenue", "money"),
    C("roi", "ROI", "rate"),
]
COST_MONTH_COLS = [C("month", "Month", "text"), C("cost_per_mql", "Cost per MQL", "money")]

# --- leads ----------------------------------------------------------------------------------

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
BUCKETS = [bucket_label(lo, hi) for lo, hi in SCORE_BUCKETS]
SCORE_COLS = [
    C("month", "Month", "text"),
    *[C(b, b) for b in BUCKETS],
    C("score_median", "Median", "number"),
]


def score_rows(body: dict) -> list[dict]:
    """The score profile's histogram, a column per bucket (the rows carry it as a dict)."""
    out = []
    for r in body.get("rows", []):
        row = {"month": r["month"], **r["score_histogram"], "score_median": r["score_median"]}
        if "change" in r:
            row["compared_with"] = r.get("compared_with")
            row["change"] = {
                **r["change"].get("score_histogram", {}),
                "score_median": r["change"].get("score_median"),
            }
        out.append(row)
    return out


# --- funnel ---------------------------------------------------------------------------------

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
NURTURED_COLS = [
    C("group", "Group", "text"),
    C("contacts", "New leads", "count", "{group_key}"),
    C("opportunities", "Reached opportunity", "count", "{group_key}_opportunities"),
    C("opportunity_rate", "Opportunity rate", "rate"),
    C("ci95_low", "95% interval from", "rate"),
    C("ci95_high", "95% interval to", "rate"),
]
HOLDOUT_COLS = [
    C("program", "Program", "text"),
    C("treated", "Treated", "count", "holdout_treated"),
    C("treated_opportunity_rate", "Treated opp. rate", "rate"),
    C("held_out", "Held out", "count", "holdout_held_out"),
    C("held_out_opportunity_rate", "Held-out opp. rate", "rate"),
    C("lift", "Lift", "rate"),
    C("ci95_low", "95% interval from", "rate"),
    C("ci95_high", "95% interval to", "rate"),
]


def nurtured_rows(body: dict) -> list[dict]:
    """The nurtured vs non-nurtured comparison as three rows: each group, then the
    difference of their opportunity rates with its 95% interval."""
    n = body.get("nurtured_vs_non_nurtured") or {}
    if not n:
        return []
    ch = n.get("change") or {}

    def group(key: str, label: str) -> dict:
        row = {
            "group_key": key,
            "group": label,
            "contacts": n[key],
            "opportunities": n[f"{key}_opportunities"],
            "opportunity_rate": n[f"{key}_opportunity_rate"],
        }
        if ch:
            row["change"] = {
                "contacts": ch.get(key),
                "opportunities": ch.get(f"{key}_opportunities"),
                "opportunity_rate": ch.get(f"{key}_opportunity_rate"),
            }
        return row

    difference = {
        "group_key": "difference",
        "group": "Difference (nurtured − never enrolled)",
        "opportunity_rate": n["difference"],
        "ci95_low": n["ci95_low"],
        "ci95_high": n["ci95_high"],
    }
    if ch:
        difference["change"] = {
            "opportunity_rate": ch.get("difference"),
            "ci95_low": ch.get("ci95_low"),
            "ci95_high": ch.get("ci95_high"),
        }
    return [group("nurtured", "Nurtured"), group("non_nurtured", "Never enrolled"), difference]


def _program_params(row: dict) -> dict:
    return {"program": row["program_id"]}


GROUP_COLS = [
    C("group", "Group", "text"),
    C("stage", "Stage", "text"),
    C("cohort", "Cohort reached", "count", "cohort"),
    C("entries", "Entries", "count", "entries"),
    C("contacts", "Contacts entering", "count", "entries"),
]


def _group_params(row: dict) -> dict | None:
    """A group row's counts are the funnel's with the group as its filter; "(other)" and
    "(no campaign)"/"(no segment)" have no such filter, so no drill-down."""
    if row["other"] or row["group_id"] is None:
        return None
    return {row["group_by"]: row["group_id"], "stage": row["stage"]}


def group_table(group_by: str) -> Table:
    return Table(
        f"Funnel by {group_by}",
        GROUP_COLS,
        source="groups",
        key=lambda r: (r["other"], r["group_id"], r["stage"]),
        drill_params=_group_params,
        empty="No leads in this period.",
        note=f"The {GROUP_LIMIT} largest groups by new leads, any others together as "
        "(other). A contact in several segments counts in each of them.",
    )


def funnel_tables(main: Table, group_by: str = "") -> list[Table]:
    return [
        main,
        Table(
            "Nurtured vs non-nurtured (opportunity rate)",
            NURTURED_COLS,
            source="nurtured_vs_non_nurtured",
            key=lambda r: r["group_key"],
            derive=nurtured_rows,
            note="Interval: normal approximation (Wald) for a difference of proportions.",
            sheet="Nurtured vs non-nurtured",
        ),
        Table(
            "Program holdouts",
            HOLDOUT_COLS,
            source="holdouts",
            key=lambda r: r["program_id"],
            drill_params=_program_params,
            empty="No program with a holdout in this period.",
        ),
        *([group_table(group_by)] if group_by else []),
    ]


# --- revenue and customers ------------------------------------------------------------------

REVENUE_COLS = [
    C("campaign", "Campaign", "text"),
    C("channel", "Channel", "text"),
    C("attributed_revenue", "Attributed revenue", "money"),
]
CHANNEL_COLS = [
    C("channel", "Channel", "text"),
    C("attributed_revenue", "Attributed revenue", "money"),
]
CUSTOMER_COLS = [
    C("cohort", "Customer start month", "text"),
    C("customers", "Customers", "count", "customer_cohort"),
    C("won_revenue", "Won revenue", "money"),
    C("customer_lifetime_value", "CLV", "money"),
]
# Social reactions are counts of activities, not contacts: no contact drill-down.
SOCIAL_COLS = [
    C("campaign", "Campaign", "text"),
    C("likes", "Likes"),
    C("shares", "Shares"),
    C("comments", "Comments"),
    C("reposts", "Reposts"),
]
DASHBOARD_COLS = [
    C("metric", "Metric", "text"),
    C("value", "Value", "number"),
    C("previous", "Previous period", "number"),
    C("change", "Change", "number"),
    C("relative_change", "Relative change", "rate"),
]


def report_tables(name: str, title: str, *, group_by: str = "") -> list[Table]:
    """The tables of report ``name`` in page order; the first is its main table (the
    funnel adds its groups' table when grouped)."""
    if name == "dashboard":  # its rows are already the comparison with the previous period
        return [Table(title, DASHBOARD_COLS)]
    if name == "email":
        return email_tables(Table(title, EMAIL_COLS, key=_campaign, total=True))
    if name == "funnel":
        main = Table(title, FUNNEL_COLS, key=lambda r: r["stage"], total=True)
        return funnel_tables(main, group_by)
    if name == "cost-per-mql":
        return [
            Table(title, COST_COLS, key=_campaign, total=True),
            Table("Cost per MQL by month", COST_MONTH_COLS, source="by_month", month_key="month"),
        ]
    if name == "leads":
        return [
            Table(title, LEADS_COLS, month_key="month", total=True),
            Table(
                "Score profile of new leads (month-end score)",
                SCORE_COLS,
                month_key="month",
                derive=score_rows,
                sheet="Score profile of new leads",
            ),
        ]
    if name == "revenue":
        return [
            Table(title, REVENUE_COLS, key=_campaign, total=True),
            Table("By channel", CHANNEL_COLS, source="channels", key=lambda r: r["channel"]),
        ]
    if name == "customers":
        return [
            Table(title, CUSTOMER_COLS, month_key="cohort", total=True),
            Table(
                "Social engagement per campaign",
                SOCIAL_COLS,
                source="social",
                key=_campaign,
                empty="No social activity in this period.",
            ),
        ]
    raise KeyError(name)
