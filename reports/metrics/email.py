"""Email and program engagement (METRICS.md "Email and program engagement", lines 15–31)."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Sum

from crm.models import Activity, ActivityKind, Campaign

from ..facts import STEP_FIELDS, step_activities, step_aggregates
from ..landing_rollup import unique_counts
from ..models import EmailDaily, EmailStepDaily
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

    Every event counts in the period of its own time (METRICS.md, the period), so a period
    may hold the bounces, opens and clicks of emails sent before it. Choice: when its
    bounces reach its sends, ``delivered`` is shown as 0 (never below), and the rates over
    it as "—" (None), as for a zero denominator; a rate can still exceed 100 % when the
    period's opens or clicks are of emails sent earlier. Totals apply this to the summed
    counts.
    """
    sent, bounced = counts.get("sent", 0), counts.get("bounced", 0)
    delivered = max(sent - bounced, 0)
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


def step_counts(q: ReportQuery) -> dict[tuple[int, int], dict]:
    """Counts per (step id, campaign id) for the period, from ``EmailStepDaily`` when the
    filters are rollup dimensions, else from the raw activities (segment/owner filters)."""
    if not _uses_rollup(q):
        return step_counts_raw(q)
    qs = EmailStepDaily.objects.filter(day__gte=q.start, day__lt=q.end)
    if q.campaign:
        qs = qs.filter(campaign_id=q.campaign)
    if q.channel:
        qs = qs.filter(channel=q.channel)
    if q.source:
        qs = qs.filter(source=q.source)
    rows = qs.values("step_id", "campaign_id").annotate(**{f: Sum(f) for f in STEP_FIELDS})
    return {
        (r["step_id"], r["campaign_id"]): {f: r[f] or 0 for f in STEP_FIELDS}
        for r in rows.order_by()
    }


def step_counts_raw(q: ReportQuery) -> dict[tuple[int, int], dict]:
    """Per-step counts straight from the activities joined to ``nurture.EmailSend``."""
    qs = step_activities(
        q.start_dt,
        q.end_dt,
        campaign_ids=[q.campaign] if q.campaign else None,
        contact_q=q.contact_filters_only().contact_q("contact__"),
    )
    if q.channel:
        qs = qs.filter(campaign__channel=q.channel)
    rows = qs.values("step", "camp0").annotate(**step_aggregates()).order_by()
    return {(r["step"], r["camp0"]): {f: r[f] for f in STEP_FIELDS} for r in rows}


def email_by_step(q: ReportQuery) -> list[dict]:
    """Per nurture step figures (METRICS.md lines 19–31) of the emails sent by a step.

    Served from ``EmailStepDaily`` (see reports.facts). Choice: a (step, campaign) with no
    email figure at all (e.g. only social reactions carrying a send's message id) is not
    listed.
    """
    try:
        from nurture.models import Step
    except ImportError:  # pragma: no cover - nurture not installed
        return []
    counts = {k: v for k, v in step_counts(q).items() if any(v.values())}
    steps = {s.id: s for s in Step.objects.filter(id__in=[k[0] for k in counts])}
    campaigns = _names({k[1] for k in counts})
    out = []
    for (step_id, cid), c in counts.items():
        step = steps.get(step_id)
        camp = campaigns.get(cid)
        out.append(
            {
                "campaign_id": cid or None,
                "campaign": camp.name if camp else NO_CAMPAIGN,
                "step_id": step_id,
                "step": str(step) if step else "",
                **derive(c),
            }
        )
    out.sort(key=lambda r: (r["campaign"].lower(), r["step_id"]))
    return out


def landing_pages(q: ReportQuery, *, limit: int = 50) -> list[dict]:
    """Landing-page conversion rate per page (METRICS.md line 31).

    Choice: a page is the activity ``url``; its visitors are unique contacts with a
    ``page_visit`` of it in the period; converted visitors also submitted a form
    (``form_submitted`` or ``landing_page_conversion``) carrying the same url in the period.

    Without campaign, channel or contact filters: one statement over the landing day rows
    (reports.landing_rollup: unique visitors, submitters and either, per url, from the
    days from the period start on) — no DISTINCT over the period's visits. Converted
    visitors did both in the period: visitors + submitters − either. With them, the raw
    activities.
    """
    if q.campaign or q.channel or q.has_contact_filters:
        return landing_pages_raw(q, limit=limit)
    counts = unique_counts(q.start, q.end)
    rows = [
        {"url": url, "unique_visitors": c["v"], "converted_visitors": c["v"] + c["s"] - c["a"]}
        for url, c in counts.items()
        if c["v"] > 0
    ]
    # Stable: urls with as many visitors stay in the database's url order.
    rows.sort(key=lambda r: -r["unique_visitors"])
    return [
        {
            **r,
            "landing_page_conversion_rate": ratio(r["converted_visitors"], r["unique_visitors"]),
        }
        for r in rows[:limit]
    ]


def landing_pages_raw(q: ReportQuery, *, limit: int = 50) -> list[dict]:
    """:func:`landing_pages` from the activities (filters, property-test reference).

    Two set-based reads instead of a per-visit EXISTS: visitors per url (one pass over the
    period's visits), and — starting from the far fewer submissions of the period — the
    distinct (url, contact) pairs whose contact also visited that url in the period.
    """
    start, end = q.start_dt, q.end_dt
    visits = Activity.objects.filter(
        kind=K.PAGE_VISIT, occurred_at__gte=start, occurred_at__lt=end
    ).exclude(url="")
    visits = visits.filter(q.contact_filters_only().contact_q("contact__"))
    if q.campaign:
        visits = visits.filter(campaign_id=q.campaign)
    if q.channel:
        visits = visits.filter(campaign__channel=q.channel)
    rows = list(
        visits.values("url")
        .annotate(unique_visitors=Count("contact_id", distinct=True))
        .order_by("-unique_visitors", "url")[:limit]
    )
    if not rows:
        return []
    visited = visits.filter(contact_id=OuterRef("contact_id"), url=OuterRef("url"))
    converted = dict(
        Activity.objects.filter(
            kind__in=[K.FORM_SUBMITTED, K.LANDING_PAGE_CONVERSION],
            occurred_at__gte=start,
            occurred_at__lt=end,
            url__in=[r["url"] for r in rows],
        )
        .filter(Exists(visited))
        .values("url")
        .annotate(n=Count("contact_id", distinct=True))
        .values_list("url", "n")
    )
    return [
        {
            **r,
            "converted_visitors": converted.get(r["url"], 0),
            "landing_page_conversion_rate": ratio(converted.get(r["url"], 0), r["unique_visitors"]),
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
