"""Email and program engagement (METRICS.md "Email and program engagement", lines 15–31)."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Q, Sum

from crm.models import Activity, ActivityKind, Campaign

from ..models import EmailDaily
from ..query import ReportQuery, ratio
from ..rollups import EMAIL_COUNT_FIELDS, email_activities, email_fact_aggregates

K = ActivityKind
NO_CAMPAIGN = "(no campaign)"
UNSUBSCRIBE_FLAG = 0.01  # METRICS.md line 28: flagged when > 1%
EMAIL_COUNTS = [f for f in EMAIL_COUNT_FIELDS if not f.startswith("social_")]


def derive(counts: dict) -> dict:
    """Rates from counts (METRICS.md lines 19–31); every rate is None on a zero denominator.

    ``delivered`` = sent − bounced (line 20). Unique figures are per email (see
    reports.models): an email's opener is one contact, so emails-with-an-open are the
    unique opens of a campaign summed over its emails.
    """
    sent, bounced = counts.get("sent", 0), counts.get("bounced", 0)
    delivered = sent - bounced
    opens, clicks = counts.get("unique_opens", 0), counts.get("unique_clicks", 0)
    out = {k: counts.get(k, 0) for k in EMAIL_COUNTS}
    out.update(
        delivered=delivered,
        bounce_rate=ratio(bounced, sent),
        hard_bounce_rate=ratio(counts.get("hard_bounced", 0), sent),
        open_rate=ratio(opens, delivered),
        click_through_rate=ratio(clicks, delivered),
        click_to_open_rate=ratio(clicks, opens),
        unsubscribe_rate=ratio(counts.get("unsubscribed", 0), delivered),
        complaint_rate=ratio(counts.get("complaints", 0), delivered),
        conversion_rate=ratio(counts.get("conversions", 0), delivered),
    )
    out["unsubscribe_flag"] = (out["unsubscribe_rate"] or 0) > UNSUBSCRIBE_FLAG
    return out


def _uses_rollup(q: ReportQuery) -> bool:
    # Segment and owner are not rollup dimensions; source is.
    return not (q.segment or q.owner)


def email_counts_by_campaign(q: ReportQuery, *, fields=EMAIL_COUNTS) -> dict[int, dict]:
    """Raw counts per campaign id (0 = no campaign) for the period, rollup-served when possible."""
    if _uses_rollup(q):
        qs = EmailDaily.objects.filter(day__gte=q.start, day__lt=q.end)
        if q.campaign:
            qs = qs.filter(campaign_id=q.campaign)
        if q.channel:
            qs = qs.filter(channel=q.channel)
        if q.source:
            qs = qs.filter(source=q.source)
        rows = qs.values("campaign_id").annotate(**{f: Sum(f) for f in fields}).order_by()
        return {r["campaign_id"]: {f: r[f] or 0 for f in fields} for r in rows}
    return {k: {f: v[f] for f in fields} for k, v in email_counts_raw(q).items()}


def email_counts_raw(q: ReportQuery) -> dict[int, dict]:
    """The same counts straight from the activities (segment/owner filters, property tests)."""
    qs = email_activities(
        q.start_dt,
        q.end_dt,
        campaign_ids=[q.campaign] if q.campaign else None,
        contact_q=q.contact_filters_only().contact_q("contact__"),
    )
    if q.channel:
        qs = qs.filter(campaign__channel=q.channel)
    rows = qs.values("camp0").annotate(**email_fact_aggregates()).order_by()
    return {r["camp0"]: {f: r[f] for f in EMAIL_COUNT_FIELDS} for r in rows}


def _names(ids) -> dict[int, Campaign]:
    return {c.id: c for c in Campaign.objects.filter(id__in=[i for i in ids if i])}


def email_by_campaign(q: ReportQuery) -> tuple[list[dict], dict]:
    """Per-campaign email figures and totals (METRICS.md lines 19–31)."""
    counts = email_counts_by_campaign(q)
    counts = {k: v for k, v in counts.items() if any(v[f] for f in EMAIL_COUNTS)}
    campaigns = _names(counts)
    rows = []
    for cid, c in counts.items():
        camp = campaigns.get(cid)
        rows.append(
            {
                "campaign_id": cid or None,
                "campaign": camp.name if camp else NO_CAMPAIGN,
                "channel": camp.channel if camp else "",
                **derive(c),
            }
        )
    rows.sort(key=lambda r: (r["campaign_id"] is None, r["campaign"].lower()))
    totals = derive({f: sum(c[f] for c in counts.values()) for f in EMAIL_COUNTS})
    return rows, totals


def email_by_step(q: ReportQuery) -> list[dict]:
    """Per nurture step figures: events joined to ``nurture.EmailSend`` by message id.

    Served from the raw activities (the message-id index), restricted to the period.
    """
    try:
        from nurture.models import EmailSend
    except ImportError:  # pragma: no cover - nurture not installed
        return []
    from django.db.models import Subquery

    send = EmailSend.objects.filter(message_id=OuterRef("message_id"))
    qs = (
        email_activities(
            q.start_dt,
            q.end_dt,
            campaign_ids=[q.campaign] if q.campaign else None,
            contact_q=q.contact_filters_only().contact_q("contact__"),
        )
        .exclude(message_id="")
        .annotate(step=Subquery(send.values("step_id")[:1]))
        .filter(step__isnull=False)
    )
    if q.channel:
        qs = qs.filter(campaign__channel=q.channel)
    agg = {k: v for k, v in email_fact_aggregates().items() if k in EMAIL_COUNTS}
    rows = list(qs.values("step", "camp0").annotate(**agg).order_by())
    from nurture.models import Step

    steps = {s.id: s for s in Step.objects.filter(id__in=[r["step"] for r in rows])}
    campaigns = _names({r["camp0"] for r in rows})
    out = []
    for r in rows:
        step = steps.get(r["step"])
        camp = campaigns.get(r["camp0"])
        out.append(
            {
                "campaign_id": r["camp0"] or None,
                "campaign": camp.name if camp else NO_CAMPAIGN,
                "step_id": r["step"],
                "step": str(step) if step else "",
                **derive({f: r[f] for f in EMAIL_COUNTS}),
            }
        )
    out.sort(key=lambda r: (r["campaign"].lower(), r["step_id"]))
    return out


def landing_pages(q: ReportQuery, *, limit: int = 50) -> list[dict]:
    """Landing-page conversion rate per page (METRICS.md line 31).

    Choice: a page is the activity ``url``; its visitors are unique contacts with a
    ``page_visit`` of it in the period; converted visitors also submitted a form
    (``form_submitted`` or ``landing_page_conversion``) carrying the same url in the period.
    """
    start, end = q.start_dt, q.end_dt
    converted = Activity.objects.filter(
        contact_id=OuterRef("contact_id"),
        url=OuterRef("url"),
        kind__in=[K.FORM_SUBMITTED, K.LANDING_PAGE_CONVERSION],
        occurred_at__gte=start,
        occurred_at__lt=end,
    )
    qs = Activity.objects.filter(
        kind=K.PAGE_VISIT, occurred_at__gte=start, occurred_at__lt=end
    ).exclude(url="")
    qs = qs.filter(q.contact_filters_only().contact_q("contact__"))
    if q.campaign:
        qs = qs.filter(campaign_id=q.campaign)
    if q.channel:
        qs = qs.filter(campaign__channel=q.channel)
    rows = (
        qs.annotate(conv=Exists(converted))
        .values("url")
        .annotate(
            unique_visitors=Count("contact_id", distinct=True),
            converted_visitors=Count("contact_id", distinct=True, filter=Q(conv=True)),
        )
        .order_by("-unique_visitors", "url")[:limit]
    )
    return [
        {
            **r,
            "landing_page_conversion_rate": ratio(r["converted_visitors"], r["unique_visitors"]),
        }
        for r in rows
    ]


def social_by_campaign(q: ReportQuery) -> list[dict]:
    """Social engagement per campaign (METRICS.md line 101): activity counts, not contacts."""
    fields = ["social_likes", "social_shares", "social_comments", "social_reposts"]
    counts = email_counts_by_campaign(q, fields=fields)
    campaigns = _names(counts)
    rows = []
    for cid, c in counts.items():
        if not any(c.values()):
            continue
        camp = campaigns.get(cid)
        rows.append(
            {
                "campaign_id": cid or None,
                "campaign": camp.name if camp else NO_CAMPAIGN,
                "likes": c["social_likes"],
                "shares": c["social_shares"],
                "comments": c["social_comments"],
                "reposts": c["social_reposts"],
                "social_engagement": sum(c.values()),
            }
        )
    rows.sort(key=lambda r: (r["campaign_id"] is None, r["campaign"].lower()))
    return rows
