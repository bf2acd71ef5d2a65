"""The dashboard's block of overdue reviews."""

from django import template

from ..review.register import overdue_rows

register = template.Library()


@register.inclusion_tag("reports/review/_overdue.html")
def overdue_reviews(limit: int = 8):
    rows = sorted(overdue_rows(), key=lambda r: r.next_due)
    return {"rows": rows[:limit], "more": max(0, len(rows) - limit), "total": len(rows)}
