"""One timeline per contact: activities, stage changes, re-openings and what other apps add.

Each source is read newest first, at most ``limit`` rows older than the ``before`` cursor;
the merged list is cut to ``limit`` and the time of its last entry is the next cursor. A
fixed number of queries per page, whatever the contact's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import extensions
from .extensions import TimelineEntry
from .models import Activity, ActivityKind, Contact, LifecycleTransition, Reopening, Stage


@dataclass
class TimelinePage:
    entries: list[TimelineEntry]
    next_before: datetime | None


# The columns an activity entry shows, read as tuples: 50 Activity + Campaign instances
# cost more CPU than the query that fetches them.
ACTIVITY_COLUMNS = (
    "occurred_at",
    "kind",
    "campaign_id",
    "campaign__name",
    "url",
    "is_machine",
    "details",
)
# "scope": an unsubscribe from one program only says so (crm.models.activities).
DETAIL_KEYS = ("bounce_type", "scope", "form", "form_name", "link", "answer", "amount")


def _activity_entry(row: tuple, kinds: dict[str, str]) -> TimelineEntry:
    occurred_at, kind, campaign_id, campaign_name, url, is_machine, details = row
    parts = []
    if campaign_id:
        parts.append(f"campaign {campaign_name}")
    if url:
        parts.append(url)
    if is_machine:
        parts.append("machine open")
    parts.extend(
        f"{key.replace('_', ' ')}: {details[key]}" for key in DETAIL_KEYS if key in details
    )
    return TimelineEntry(
        at=occurred_at,
        kind="activity",
        title=kinds.get(kind, kind),
        detail=" · ".join(str(p) for p in parts),
    )


def _transition_entry(t: LifecycleTransition) -> TimelineEntry:
    start = Stage(t.from_stage).label if t.from_stage else "created"
    detail = [f"by {t.actor}"]
    if t.reason_code:
        detail.append(f"reason: {t.reason_code}")
    if t.note:
        detail.append(t.note)
    if t.recycle_round:
        detail.append(f"recycle round {t.recycle_round}")
    return TimelineEntry(
        at=t.at,
        kind="stage",
        title=f"Stage {start} → {Stage(t.to_stage).label}",
        detail=" · ".join(detail),
    )


def contact_timeline(contact: Contact, *, before: datetime | None = None, limit: int = 50):
    """Newest-first page of the contact's history older than ``before``."""
    activities = Activity.objects.filter(contact=contact)
    transitions = LifecycleTransition.objects.filter(contact=contact).select_related("by_user")
    reopenings = Reopening.objects.filter(contact=contact)
    if before is not None:
        activities = activities.filter(occurred_at__lt=before)
        transitions = transitions.filter(at__lt=before)
        reopenings = reopenings.filter(at__lt=before)
    kinds = dict(ActivityKind.choices)
    rows = activities.order_by("-occurred_at", "-id").values_list(*ACTIVITY_COLUMNS)[:limit]
    entries = [_activity_entry(row, kinds) for row in rows]
    entries += [_transition_entry(t) for t in transitions.order_by("-at", "-id")[:limit]]
    entries += [
        TimelineEntry(
            at=r.at,
            kind="reopened",
            title="Re-opened",
            detail=f"engaged again in recycle round {r.recycle_round}",
        )
        for r in reopenings.order_by("-at")[:limit]
    ]
    entries += extensions.timeline_entries(contact, before=before, limit=limit)
    entries.sort(key=lambda e: e.at, reverse=True)
    more = len(entries) > limit
    entries = entries[:limit]
    return TimelinePage(entries, entries[-1].at if more and entries else None)
