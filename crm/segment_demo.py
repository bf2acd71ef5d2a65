"""Demo segments over the demo contacts, with a year of joins and leaves.

Runs after the seeders that write what segments read (settings.DEMO_SEEDERS): the CRM
core's contacts, activities and stage history, nurture's email traffic, scoring's
hand-offs and owners. See :mod:`crm.segment_history` for how the year's membership is
replayed.
"""

from __future__ import annotations

from datetime import timedelta

from crm.models import Contact, Segment, SegmentChange

from .segment_history import membership_replay
from .segments import segment_members_add, segment_save, segments_refresh_all

DECISION_MAKERS = {
    "any": [
        {"field": "job_title", "op": "starts_with", "value": word}
        for word in ("Director", "VP", "Head", "Chief", "CEO", "CTO", "CFO")
    ]
}


def _dynamic(ctx, name: str, description: str, definition: dict) -> Segment:
    return segment_save(
        segment=None,
        name=name,
        kind=Segment.Kind.DYNAMIC,
        description=description,
        definition=definition,
        by=ctx.users.get("marketing"),
        refresh=False,  # refreshed together, in dependency order, below
    )


def seed(ctx) -> None:
    """Dynamic segments people ask for, their year of membership (when ``ctx.history``),
    the refresh that makes it current, and a static trade-show list."""
    if Segment.objects.exists():
        ctx.log("segments: already present, skipped")
        return
    _dynamic(
        ctx,
        "Software directors who attended a webinar but didn't open email in 60 days",
        "Warm but quiet: invite them to a call instead of another email.",
        {
            "all": [
                {"field": "company.industry", "op": "equals", "value": "Software"},
                {"field": "job_title", "op": "contains", "value": "Director"},
                {"did": "webinar_attended"},
                {"did_not": "email_opened", "within_last_days": 60},
            ]
        },
    )
    hot = _dynamic(
        ctx,
        "Hot pricing visitors (last 30 days)",
        "Visited a pricing page at least twice in the last 30 days.",
        {"did": "page_visit", "url_contains": "/pricing", "min_count": 2, "within_last_days": 30},
    )
    _dynamic(
        ctx,
        "Hot pricing visitors not yet qualified",
        "Pricing visitors still in the lead stage: candidates for a sales nudge.",
        {"all": [{"in_segment": hot.pk}, {"field": "stage", "op": "equals", "value": "lead"}]},
    )
    _dynamic(
        ctx,
        "Fintech decision makers",
        "Directors, VPs, heads and C-level people at fintech companies.",
        {
            "all": [
                {"field": "company.industry", "op": "equals", "value": "Fintech"},
                DECISION_MAKERS,
            ]
        },
    )
    _dynamic(
        ctx,
        "Recycled – re-engaged",
        "Recycled leads who clicked an email or visited the site in the last 30 days.",
        {
            "all": [
                {"field": "stage", "op": "equals", "value": "recycled"},
                {
                    "any": [
                        {"did": "email_clicked", "within_last_days": 30},
                        {"did": "page_visit", "within_last_days": 30},
                    ]
                },
            ]
        },
    )
    _dynamic(
        ctx,
        "Engaged, mailable, no owner",
        "Clicked an email in the last 90 days, email active, not yet assigned to sales.",
        {
            "all": [
                {"did": "email_clicked", "within_last_days": 90},
                {"field": "email_status", "op": "equals", "value": "active"},
                {"field": "owner", "op": "is_empty"},
            ]
        },
    )
    if ctx.history:
        replayed = membership_replay(start=ctx.start, end=ctx.now)
        ctx.log(f"segments: membership replayed over {replayed} weeks")
    # Exact as of now, through the live path: the replay's last week is ended by it.
    results = segments_refresh_all(at=ctx.now)
    _trade_show_list(ctx)
    ctx.log(
        f"segments: {len(results) + 1} segments, {SegmentChange.objects.count()} joins and leaves"
    )


def _trade_show_list(ctx) -> None:
    """The badge scans of the Berlin trade show, uploaded when the show ended (last, as
    adding members re-evaluates the segments that read them, at that time)."""
    berlin = segment_save(
        segment=None,
        name="Berlin trade-show list",
        kind=Segment.Kind.STATIC,
        description="Badge scans from the Berlin trade show, uploaded by hand.",
        definition={},
        by=ctx.users.get("marketing"),
    )
    show = ctx.shared.get("campaigns", {}).get("Trade show Berlin")
    uploaded = ctx.now
    if show is not None and show.end_date is not None:
        uploaded = min(
            ctx.now, ctx.start + timedelta(days=(show.end_date - ctx.start.date()).days + 1)
        )
    german = list(
        Contact.objects.filter(country="DE", created_at__lt=uploaded)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    picked = ctx.rng.sample(german, min(60, len(german)))
    segment_members_add(
        segment=berlin, contact_ids=picked, by=ctx.users.get("marketing"), at=uploaded
    )
