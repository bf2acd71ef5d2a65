"""Drill-down: the contacts behind a count in a report, with the report's filters."""

from __future__ import annotations

import dataclasses
from datetime import date

from django.db.models import Exists, OuterRef, Q

from crm.models import Activity, ActivityKind, Contact, LifecycleTransition, Stage
from crm.models.activities import click_q, converting_click_q, open_q

from .metrics.leads import reopened_qs
from .metrics.lifecycle import entries, new_leads_qs
from .models import TransitionCredit
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
    "email_machine_opened": lambda: first_event(Q(kind=K.EMAIL_OPENED, is_machine=True)),
    "email_converted": lambda: first_event(converting_click_q()),
}
STAGE_METRICS = {"mqls": Stage.MQL, "sqls": Stage.SQL, "customers": Stage.CUSTOMER}
# The cost report's attributed MQLs, SQLs and customers of a campaign (reports.metrics.cost).
CREDIT_METRICS = {
    "mql_credits": Stage.MQL,
    "sql_credits": Stage.SQL,
    "customer_credits": Stage.CUSTOMER,
}
LANDING_METRICS = {"landing_visitors", "landing_converted"}
HOLDOUT_METRICS = {"holdout_treated", "holdout_held_out"}
NURTURED_METRICS = {
    "nurtured",
    "nurtured_opportunities",
    "non_nurtured",
    "non_nurtured_opportunities",
}
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
    *CREDIT_METRICS,
    *LANDING_METRICS,
    *HOLDOUT_METRICS,
    *NURTURED_METRICS,
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


def contacts_for(
    q: ReportQuery,
    metric: str,
    *,
    row_campaign=None,
    stage: str = "",
    step: int | None = None,
    url: str = "",
    program: int | None = None,
):
    """The contacts a report count is made of (unique contacts, newest first).

    Each list follows its count's rule: the email figures the first event of each email
    in the period (an open includes a click; machine and unsubscribe-link clicks are not
    clicks), of one nurture ``step`` for the per-step table; the CLV cohort the customers'
    first entry into ``customer``. The email counts are of emails, so a contact with two
    counted emails is listed once. The cost report's credits are shares of stage changes:
    their list is the contacts whose changes gave the campaign a share under the report's
    attribution model.
    """
    if metric not in METRICS:
        raise ReportParamError(f"Unknown drill-down metric '{metric}'.")
    if stage and stage not in Stage.values:
        raise ReportParamError(f"Unknown stage '{stage}'.")
    if metric in LANDING_METRICS and not url:
        raise ReportParamError("Give the landing page's 'url'.")
    if metric in HOLDOUT_METRICS and program is None:
        raise ReportParamError("Give the holdout's 'program'.")
    base = Contact.objects.all()
    if metric in CREDIT_METRICS:
        qs = base.filter(id__in=_credited(q, CREDIT_METRICS[metric], row_campaign or 0))
    elif metric in LANDING_METRICS:
        qs = _landing_contacts(q, metric, url)
    elif metric in HOLDOUT_METRICS:
        qs = base.filter(id__in=_holdout_enrollments(q, metric, program).values("contact_id"))
    elif metric in NURTURED_METRICS:
        qs = _nurtured_contacts(q, metric)
    elif metric == "new_leads":
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
        if step is not None:
            acts = acts.filter(message_id__in=_step_message_ids(step))
        qs = base.filter(id__in=acts.values("contact_id"))
    return qs.select_related("owner", "acquired_by").order_by("-created_at", "-id")


def _step_message_ids(step: int):
    """The emails one nurture step sent (reports.facts.step_activities: an email belongs
    to the step of the ``EmailSend`` with its message id)."""
    from nurture.models import EmailSend

    return EmailSend.objects.filter(step_id=step).exclude(message_id="").values("message_id")


def _credited(q: ReportQuery, stage: str, campaign_id: int):
    """Contact ids of the entries into ``stage`` in the period that credit ``campaign_id``
    (0: "(no campaign)") under the report's model (reports.metrics.attribution
    .credits_from_facts): first and last touch credit the campaign holding that touch;
    linear and U-shaped every campaign touched (U-shaped gives the touches between the
    first and last a share of its 20%). Contact filters apply, as in the cost report."""
    credits = TransitionCredit.objects.filter(
        to_stage=stage, at__gte=q.start_dt, at__lt=q.end_dt, campaign_id=campaign_id
    ).filter(q.contact_filters_only().contact_q("contact__"))
    if q.attribution in ("first_touch", "last_touch"):
        credits = credits.filter(**{q.attribution.removesuffix("_touch"): True})
    return credits.values("contact_id")


def _landing_contacts(q: ReportQuery, metric: str, url: str):
    """A landing page's unique visitors in the period, or those of them who also submitted
    its form in the period (reports.metrics.email.landing_pages_raw)."""
    visits = Activity.objects.filter(
        kind=K.PAGE_VISIT, url=url, occurred_at__gte=q.start_dt, occurred_at__lt=q.end_dt
    ).filter(q.contact_filters_only().contact_q("contact__"))
    if q.campaign:
        visits = visits.filter(campaign_id=q.campaign)
    if q.channel:
        visits = visits.filter(campaign__channel=q.channel)
    qs = Contact.objects.filter(id__in=visits.values("contact_id"))
    if metric == "landing_converted":
        submitted = Activity.objects.filter(
            kind__in=[K.FORM_SUBMITTED, K.LANDING_PAGE_CONVERSION],
            url=url,
            occurred_at__gte=q.start_dt,
            occurred_at__lt=q.end_dt,
        )
        qs = qs.filter(id__in=submitted.values("contact_id"))
    return qs


def _holdout_enrollments(q: ReportQuery, metric: str, program: int):
    """A program's enrollments of the period in the treated or held-out group
    (reports.metrics.funnel.holdout_lift_raw)."""
    from nurture.models import Enrollment

    enrollments = Enrollment.objects.filter(
        program_id=program, entered_at__gte=q.start_dt, entered_at__lt=q.end_dt
    ).filter(q.contact_q("contact__"))
    held = Q(state=Enrollment.State.HELD_OUT)
    return enrollments.filter(held if metric == "holdout_held_out" else ~held)


def _nurtured_contacts(q: ReportQuery, metric: str):
    """The period's new leads ever enrolled other than held out (nurtured) or never
    enrolled, and of them those that entered ``opportunity`` before the end
    (reports.metrics.funnel.nurtured_vs_non_raw)."""
    from nurture.models import Enrollment

    enrolled = Enrollment.objects.filter(contact_id=OuterRef("id"))
    leads = new_leads_qs(q)
    if metric.startswith("nurtured"):
        leads = leads.filter(Exists(enrolled.exclude(state=Enrollment.State.HELD_OUT)))
    else:
        leads = leads.exclude(Exists(enrolled))
    if metric.endswith("_opportunities"):
        opportunity = LifecycleTransition.objects.filter(
            to_stage=Stage.OPPORTUNITY, at__lt=q.end_dt
        ).values("contact_id")
        leads = leads.filter(id__in=opportunity)
    return leads
