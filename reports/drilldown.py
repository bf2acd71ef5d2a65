"""Drill-down: the contacts behind a count in a report, with the report's filters."""

from __future__ import annotations

import dataclasses
from datetime import date

from django.db.models import Exists, OuterRef, Q

from crm.models import ActivityKind, Contact, LifecycleTransition, Stage
from crm.models.activities import click_q, open_q

from .metrics.leads import reopened_qs
from .metrics.lifecycle import entries, new_leads_qs
from .query import ReportParamError, ReportQuery
from .rollups import email_activities, first_event

K = ActivityKind
# The email report's counts (reports.rollups.email_fact_aggregates): sends per event, the
# others per email on the day of its first such event; built per call (click_q reads
# the settings).
EMAIL_METRICS = {
    "email_sent": lambda: Q(kind=K.EMAIL_SENT),
    "email_bounced": lambda: first_event(Q(kind=K.EMAIL_BOUNCED)),
    "email_opened": lambda: first_event(open_q()),
    "email_clicked": lambda: first_event(click_q()),
    "email_unsubscribed": lambda: first_event(Q(kind=K.EMAIL_UNSUBSCRIBED)),
    "email_complained": lambda: first_event(Q(kind=K.EMAIL_COMPLAINED)),
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
    """The contacts a report count is made of (unique contacts, newest first).

    Each list follows its count's rule: the email figures the first event of each email
    in the period (an open includes a click; machine and unsubscribe-link clicks are not
    clicks), the CLV cohort the customers' first entry into ``customer``. The email counts
    are of emails, so a contact with two counted emails is listed once.
    """
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
    elif metric in STAGE_METRICS or metric == "entries":
        target = STAGE_METRICS.get(metric) or stage or Stage.CUSTOMER
        qs = base.filter(id__in=entries(q, target).values("contact_id"))
    elif metric == "customer_cohort":
        # the CLV cohort's customers start at their first entry (metrics.customers
        # .clv_by_cohort): a customer returning after churn is not listed again
        earlier = LifecycleTransition.objects.filter(
            contact_id=OuterRef("id"), to_stage=Stage.CUSTOMER, at__lt=q.start_dt
        )
        qs = base.filter(id__in=entries(q, Stage.CUSTOMER).values("contact_id")).exclude(
            Exists(earlier)
        )
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
        acts = email_activities(
            q.start_dt, q.end_dt, contact_q=q.contact_filters_only().contact_q("contact__")
        ).filter(EMAIL_METRICS[metric]())
        if row_campaign is not None:
            acts = acts.filter(campaign_id=row_campaign or None)
        elif q.campaign:
            acts = acts.filter(campaign_id=q.campaign)
        if q.channel:
            acts = acts.filter(campaign__channel=q.channel)
        qs = base.filter(id__in=acts.values("contact_id"))
    return qs.select_related("owner", "acquired_by").order_by("-created_at", "-id")
