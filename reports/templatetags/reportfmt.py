"""Display filters for report pages: rates as percentages, "—" when undefined."""

import json

from django import template
from django.core.serializers.json import DjangoJSONEncoder

register = template.Library()


@register.filter
def tojson(value) -> str:
    """JSON for a ``data-`` attribute (auto-escaped there). A ``json_script`` tag would do
    on a full page, but htmx drops script tags from the fragments it swaps in (base.html
    turns ``allowScriptTags`` off), so a fragment's chart carries its data on the canvas."""
    return json.dumps(value, cls=DjangoJSONEncoder)


@register.filter
def pct(value) -> str:
    """0.125 → "12.5%"; None (a zero denominator, METRICS.md) → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.1f}%"


# Dashboard figures: label, the report that explains each, and whether a rise is good.
DASHBOARD_KPIS = {
    "new_leads": ("New leads", "report-leads", True),
    "mqls": ("MQLs", "report-leads", True),
    "mql_entries": ("MQL entries", "report-leads", True),
    "sqls": ("SQLs", "report-funnel", True),
    "mql_acceptance_rate": ("MQL acceptance rate", "report-leads", True),
    "program_cost": ("Program cost", "report-cost-per-mql", False),
    "cost_per_mql": ("Cost per MQL", "report-cost-per-mql", False),
    "click_through_rate": ("Click-through rate", "report-email", True),
    "unsubscribe_rate": ("Unsubscribe rate", "report-email", False),
    "won_revenue": ("Won revenue", "report-revenue", True),
}


# The counts of contacts among them, with the drill-down listing those contacts (an MQL
# entry is a contact's entry into mql: the entries' contacts are the MQLs).
KPI_DRILLS = {"new_leads": "new_leads", "mqls": "mqls", "mql_entries": "mqls", "sqls": "sqls"}


@register.simple_tag
def kpi(row: dict) -> dict:
    """One dashboard card: label, formatted value/previous/change and its direction."""
    from ..shown import fmt
    from ..tables import kind_of

    key = row["metric"]
    label, url_name, rise_is_good = DASHBOARD_KPIS.get(key, (key.replace("_", " "), "", True))
    kind = kind_of(key)
    absolute = row.get("change")
    direction = ""
    if absolute not in (None, 0):
        direction = "up" if (absolute > 0) == rise_is_good else "down"
    if kind == "rate" and absolute is not None:
        change_text = f"{float(absolute) * 100:+.1f} pp"
    elif absolute is not None:
        change_text = f"{absolute:+,}" if kind != "money" else f"{absolute:+,.2f}"
    else:
        change_text = "—"
    return {
        "label": label,
        "url_name": url_name,
        "drill": KPI_DRILLS.get(key, "") if row.get("value") else "",
        "value": fmt(row.get("value"), kind),
        "previous": fmt(row.get("previous"), kind),
        "change": change_text,
        "relative": pct(row.get("relative_change")),
        "direction": direction,
    }
