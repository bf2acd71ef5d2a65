"""Display filters for report pages: rates as percentages, "—" when undefined."""

from django import template

register = template.Library()


@register.filter
def pct(value) -> str:
    """0.125 → "12.5%"; None (a zero denominator, METRICS.md) → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.1f}%"
