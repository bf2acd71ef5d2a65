"""Reads for the sales hand-off: the MQL queue and the deal list (shared by pages and API)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Prefetch, QuerySet, Subquery
from django.utils import timezone

from .models import Activity, Contact, Deal, LifecycleTransition, Reopening, Stage

QUEUE_TABS = {
    "mine": "My MQLs",
    "unassigned": "Unassigned",
    "team": "Team",
    "reengaged": "Re-engaged",
}
# Sort keys offered to users → ORDER BY; "age" is oldest first (the SLA is about the oldest).
QUEUE_SORTS = {
    "score": ("-scorecard__score", "queued_at", "id"),
    "-score": ("scorecard__score", "queued_at", "id"),
    "age": ("queued_at", "id"),
    "-age": ("-queued_at", "-id"),
}
RECENT_ACTIVITIES = 3


def response_target() -> timedelta:
    return timedelta(hours=settings.MQL_RESPONSE_TARGET_HOURS)


def mql_queue(*, tab: str = "team", user=None, sort: str = "score") -> QuerySet[Contact]:
    """Contacts of one queue tab, each annotated with ``queued_at``.

    For MQL tabs ``queued_at`` is the contact's latest transition into ``mql`` (the SLA
    clock); for "re-engaged" (recycled contacts re-opened in their current round) it is
    the re-opening time. The last few activities come in one prefetch query for the page
    (a sliced prefetch is a window function per contact, not N queries).
    """
    base = Contact.objects.select_related("company", "owner", "scorecard")
    if tab == "reengaged":
        current = Reopening.objects.filter(
            contact=OuterRef("pk"), recycle_round=OuterRef("recycle_round")
        )
        qs = (
            base.filter(stage=Stage.RECYCLED)
            .filter(Exists(current))
            .annotate(queued_at=Subquery(current.order_by("-at").values("at")[:1]))
        )
    else:
        entered = (
            LifecycleTransition.objects.filter(contact=OuterRef("pk"), to_stage=Stage.MQL)
            .order_by("-at", "-id")
            .values("at")[:1]
        )
        qs = base.filter(stage=Stage.MQL).annotate(queued_at=Subquery(entered))
        if tab == "mine":
            qs = qs.filter(owner=user)
        elif tab == "unassigned":
            qs = qs.filter(owner__isnull=True)
    return qs.order_by(*QUEUE_SORTS.get(sort, QUEUE_SORTS["score"]))


def with_recent_activities(qs: QuerySet[Contact]) -> QuerySet[Contact]:
    """Prefetch each contact's last few activities as ``recent_activities``."""
    recent = Activity.objects.order_by("-occurred_at", "-id")[:RECENT_ACTIVITIES]
    return qs.prefetch_related(Prefetch("activities", queryset=recent, to_attr="recent_activities"))


def queue_age_filter(qs: QuerySet[Contact], *, min_hours=None, max_hours=None) -> QuerySet:
    """Keep contacts queued at least ``min_hours`` and at most ``max_hours`` ago."""
    now = timezone.now()
    if min_hours is not None:
        qs = qs.filter(queued_at__lte=now - timedelta(hours=min_hours))
    if max_hours is not None:
        qs = qs.filter(queued_at__gte=now - timedelta(hours=max_hours))
    return qs


def mark_overdue(contacts, *, now=None) -> None:
    """Set ``age`` and ``overdue`` on each contact of a page (a response-target check)."""
    now = now or timezone.now()
    target = response_target()
    for c in contacts:
        c.age = (now - c.queued_at) if c.queued_at else None
        c.overdue = c.age is not None and c.age > target and c.stage == Stage.MQL


def deal_list() -> QuerySet[Deal]:
    return Deal.objects.select_related("contact", "company", "owner").annotate(
        contact_stage=F("contact__stage")
    )
