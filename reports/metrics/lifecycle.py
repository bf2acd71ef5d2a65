"""Shared lifecycle reads: entries into stages, months of a period."""

from __future__ import annotations

from datetime import date, datetime

from django.db.models import Case, DateTimeField, Value, When

from crm.models import Contact, LifecycleTransition

from ..query import ReportQuery, day_start


def entries(q: ReportQuery, *stages: str):
    """Transitions into ``stages`` whose time ``at`` lies in the period, contact filters applied."""
    return LifecycleTransition.objects.filter(
        to_stage__in=stages, at__gte=q.start_dt, at__lt=q.end_dt
    ).filter(q.contact_q("contact__"))


def new_leads_qs(q: ReportQuery):
    """METRICS.md line 39 "new leads": created in the period, not suppressed at creation."""
    return Contact.objects.filter(
        created_at__gte=q.start_dt, created_at__lt=q.end_dt, created_suppressed=False
    ).filter(q.contact_q())


def months(q: ReportQuery) -> list[tuple[date, datetime, datetime]]:
    """Calendar months touching the period: (first day, clipped start, clipped end)."""
    out = []
    first = date(q.start.year, q.start.month, 1)
    while first < q.end:
        nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        out.append((first, day_start(max(first, q.start)), day_start(min(nxt, q.end))))
        first = nxt
    return out


def month_of(field: str, q: ReportQuery) -> Case:
    """The first instant of the (clipped) month an aware datetime ``field`` falls in."""
    return Case(
        *[When(**{f"{field}__gte": s, f"{field}__lt": e}, then=Value(s)) for _, s, e in months(q)],
        output_field=DateTimeField(),
    )
