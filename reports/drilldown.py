"""Drill-down: the contacts behind a count in a report, with the report's filters."""

from __future__ import annotations

import dataclasses
from datetime import date

from django.db.models import Exists, OuterRef

from crm.models import Activity, ActivityKind, Contact, LifecycleTransition, Stage

from .metrics.leads import reopened_qs
from .metrics.lifecycle import entries, new_leads_qs
from .query import ReportParamError, ReportQuery

EMAIL_METRICS = {
    "email_sent": ActivityKind.EMAIL_SENT,
    "email_bounced": ActivityKind.EMAIL_BOUNCED,
    "email_opened": ActivityKind.EMAIL_OPENED,
    "email_clicked": ActivityKind.EMAIL_CLICKED,
    "email_unsubscribed": ActivityKind.EMAIL_UNSUBSCRIBED,
    "email_complained": ActivityKind.EMAIL_COMPLAINED,
}
STAGE_METRICS = {"mqls": Stage.MQL, "sqls": Stage.SQL, "customers": Stage.CUSTOMER}
METRICS = {
    "new_leads",
    "acquired",
    "reopened",
    "cohort",
    "entries",
    "recycled_from",
    "disqualified_from",
    "customer_cohort",
    *EMAIL_METRICS,
    *STAGE_METRICS,
}


def narrow(q: ReportQuery, month: str) -> ReportQuery:
    """Clip the period to one calendar month (``YYYY-MM``) for per-month rows."""
    try:
        y, m = (int(p) for p in month.split("-"))
        first = date(y, m, 1)
    except ValueError:
        raise ReportParamError("'month' must be YYYY-MM.") from None
    nxt = date(y + (m == 12), m % 12 + 1, 1)
    return dataclasses.replace(q, start=max(first, q.start), end=min(nxt, q.end))


def contacts_for(q: ReportQuery, metric: str, *, row_campaign=None, stage: str = ""):
    """The contacts a report count is made of (unique contacts, newest first)."""
    if metric not in METRICS:
        raise ReportParamError(f"Unknown drill-down metric '{metric}'.")
    if stage and stage not in Stage.values:
        raise ReportParamError(f"Unknown stage '{stage}'.")
    base = Contact.objects.all()
    if metric == "new_leads":
        qs = new_leads_qs(q)
    elif metric == "acquired":
        qs = new_leads_qs(q.contact_filters_only()).filter(acquired_by_id=row_campaign)
    elif metric == "reopened":
        qs = base.filter(id__in=reopened_qs(q).values("contact_id"))
    elif metric in STAGE_METRICS or metric == "entries" or metric == "customer_cohort":
        target = STAGE_METRICS.get(metric) or stage or Stage.CUSTOMER
        qs = base.filter(id__in=entries(q, target).values("contact_id"))
    elif metric == "cohort":
        qs = new_leads_qs(q)
        if stage and stage != Stage.LEAD:
            qs = qs.filter(
                Exists(
                    LifecycleTransition.objects.filter(
                        contact_id=OuterRef("id"), to_stage=stage, at__lt=q.end_dt
                    )
                )
            )
    elif metric in ("recycled_from", "disqualified_from"):
        to = Stage.RECYCLED if metric == "recycled_from" else Stage.DISQUALIFIED
        qs = base.filter(
            id__in=entries(q, to).filter(from_stage=stage or Stage.MQL).values("contact_id")
        )
    else:
        acts = Activity.objects.filter(
            kind=EMAIL_METRICS[metric], occurred_at__gte=q.start_dt, occurred_at__lt=q.end_dt
        ).filter(q.contact_filters_only().contact_q("contact__"))
        if metric == "email_opened":
            acts = acts.exclude(is_machine=True)
        if row_campaign is not None:
            acts = acts.filter(campaign_id=row_campaign or None)
        elif q.campaign:
            acts = acts.filter(campaign_id=q.campaign)
        if q.channel:
            acts = acts.filter(campaign__channel=q.channel)
        qs = base.filter(id__in=acts.values("contact_id"))
    return qs.select_related("owner", "acquired_by").order_by("-created_at", "-id")
