"""What each kind of register item measures, and what exists to be reviewed.

Which metrics a review snapshots depends on the item (issue "review register"):
programs — entrants, CTR, unsubscribe rate, conversions, MQLs, cost per MQL; automation
rules — entrants; scoring — MQLs and the acceptance rate; assignment — MQLs and how many
were assigned; content — views, downloads, leads and MQLs influenced. Figures follow the
definitions of METRICS.md (unique contacts, rates ``None`` on a zero denominator).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from crm.models import Activity, ActivityKind, Contact, LifecycleTransition, Stage

from .models import ContentAsset, ReviewItem
from .register import mql_acceptance_rate

T = ReviewItem.Type

METRIC_KEYS = {
    T.PROGRAM: [
        "entrants",
        "delivered",
        "unique_clicks",
        "click_through_rate",
        "unsubscribed",
        "unsubscribe_rate",
        "conversions",
        "conversion_rate",
        "mqls",
        "program_cost",
        "cost_per_mql",
    ],
    T.AUTOMATION: ["entrants"],
    T.SCORING: ["mqls", "mql_acceptance_rate"],
    T.ASSIGNMENT: ["mqls", "assigned"],
    T.CONTENT: ["views", "downloads", "leads", "mqls_influenced"],
    # Rates are fractions; the spreadsheet and pages format them.
}
RATE_KEYS = {"click_through_rate", "unsubscribe_rate", "conversion_rate", "mql_acceptance_rate"}


def reviewable_objects(*, now: datetime) -> Iterator[dict]:
    """Everything the register should hold, as ``_new_item`` keyword dicts."""
    from nurture.models import Program

    from . import automation

    # An archived program (and its triggers) is no longer audited: it leaves the register.
    programs = Program.objects.select_related("campaign").exclude(status=Program.Status.ARCHIVED)
    for p in programs.order_by("pk"):
        yield {
            "type": T.PROGRAM,
            "object_id": p.pk,
            "name": p.name,
            "owner_id": p.campaign.owner_id,
            "started_at": _program_start(p) or now,
        }
    yield from automation.triggers(now=now)
    for a in ContentAsset.objects.order_by("pk"):
        yield {
            "type": T.CONTENT,
            "object_id": a.pk,
            "name": a.title,
            "owner_id": a.owner_id,
            "started_at": a.created_at,
            "content_type": a.type,
        }
    from scoring.models import Rule

    first_rule = Rule.objects.order_by("created_at").values_list("created_at", flat=True).first()
    yield {
        "type": T.SCORING,
        "object_id": None,
        "name": "Scoring rule set",
        "owner_id": None,
        "started_at": first_rule or now,
    }
    yield {
        "type": T.ASSIGNMENT,
        "object_id": None,
        "name": "Lead-assignment rules",
        "owner_id": None,
        "started_at": first_rule or now,
    }


def _program_start(program) -> datetime | None:
    start = program.campaign.start_date
    if start:
        return timezone.make_aware(datetime.combine(start, datetime.min.time()))
    return getattr(program, "created_at", None)


def snapshot(item: ReviewItem, *, start: datetime, end: datetime) -> dict:
    """The item's key metrics over [start, end)."""
    func = {
        T.PROGRAM: _program,
        T.AUTOMATION: _automation,
        T.SCORING: _scoring,
        T.ASSIGNMENT: _assignment,
        T.CONTENT: _content,
    }[item.type]
    return func(item, start, end)


def _program(item, start, end) -> dict:
    from nurture.models import Enrollment, Program

    from .program_metrics import campaign_figures

    program = Program.objects.filter(pk=item.object_id).first()
    if program is None:
        return {}
    figures = campaign_figures(campaign_id=program.campaign_id, start=start, end=end)
    figures["entrants"] = (
        Enrollment.objects.filter(program=program, entered_at__gte=start, entered_at__lt=end)
        .values("contact_id")
        .distinct()
        .count()
    )
    return {k: figures.get(k) for k in METRIC_KEYS[T.PROGRAM]}


def _automation(item, start, end) -> dict:
    from . import automation

    return {"entrants": automation.entrants(item.object_id, start=start, end=end)}


def _mql_entries(start, end):
    return LifecycleTransition.objects.in_period(start, end).filter(to_stage=Stage.MQL)


def _scoring(item, start, end) -> dict:
    return {
        "mqls": _mql_entries(start, end).values("contact_id").distinct().count(),
        "mql_acceptance_rate": mql_acceptance_rate(start=start, end=end),
    }


def _assignment(item, start, end) -> dict:
    mql_contacts = _mql_entries(start, end).values("contact_id")
    return {
        "mqls": mql_contacts.distinct().count(),
        "assigned": Contact.objects.filter(pk__in=mql_contacts, owner__isnull=False).count(),
    }


def _content(item, start, end) -> dict:
    asset = ContentAsset.objects.filter(pk=item.object_id).first()
    if asset is None:
        return {}
    touches = _asset_touches(asset)
    in_period = touches.filter(occurred_at__gte=start, occurred_at__lt=end)
    views = in_period.filter(kind=ActivityKind.PAGE_VISIT).values("contact_id").distinct().count()
    downloads = (
        in_period.filter(kind=ActivityKind.CONTENT_DOWNLOAD).values("contact_id").distinct().count()
    )
    leads = (
        Contact.objects.created_in(start, end)
        .filter(created_suppressed=False, pk__in=in_period.values("contact_id"))
        .count()
    )
    influenced = (
        _mql_entries(start, end)
        .filter(
            Exists(
                touches.filter(contact_id=OuterRef("contact_id"), occurred_at__lte=OuterRef("at"))
            )
        )
        .values("contact_id")
        .distinct()
        .count()
    )
    return {"views": views, "downloads": downloads, "leads": leads, "mqls_influenced": influenced}


def _asset_touches(asset: ContentAsset):
    """Activities that used the asset: visits/downloads of its URL, downloads in its campaigns."""
    kinds = [ActivityKind.PAGE_VISIT, ActivityKind.CONTENT_DOWNLOAD, ActivityKind.WEBINAR_ATTENDED]
    match = Q(pk__in=[])
    if asset.url:
        match |= Q(url__startswith=asset.url)
    campaign_ids = list(asset.campaigns.values_list("pk", flat=True))
    if campaign_ids:
        match |= Q(campaign_id__in=campaign_ids, kind=ActivityKind.CONTENT_DOWNLOAD)
    return Activity.objects.filter(match, kind__in=kinds)
