"""One timeline per contact: activities, stage changes, re-openings and what other apps add.

Each source is read newest first, at most ``limit + skip + 1`` rows at or before the
``before`` cursor, in a fixed order of its own (time, then id, newest first). The merged list is in
one fixed order too — time, then source, then the source's order — so a page goes on
exactly where the last one stopped: its cursor is the last entry's time and how many
entries at that very time were shown already (``skip``). Entries sharing a time (a scored
activity and its score entry; an import's many activities) are never skipped or shown
twice. A fixed number of queries per page, whatever the contact's history.
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
    next_skip: int = 0  # entries at ``next_before`` already shown


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


def contact_timeline(
    contact: Contact, *, before: datetime | None = None, skip: int = 0, limit: int = 50
) -> TimelinePage:
    """Newest-first page of the contact's history from ``before`` on, less the ``skip``
    entries at exactly ``before`` that the previous page showed."""
    # One more than the page from every source: whether an older page exists is known
    # even when a single source holds everything.
    take = limit + skip + 1
    activities = Activity.objects.filter(contact=contact)
    transitions = LifecycleTransition.objects.filter(contact=contact).select_related("by_user")
    reopenings = Reopening.objects.filter(contact=contact)
    if before is not None:
        activities = activities.filter(occurred_at__lte=before)
        transitions = transitions.filter(at__lte=before)
        reopenings = reopenings.filter(at__lte=before)
    kinds = dict(ActivityKind.choices)
    rows = activities.order_by("-occurred_at", "-id").values_list(*ACTIVITY_COLUMNS)[:take]
    sources = [
        [_activity_entry(row, kinds) for row in rows],
        [_transition_entry(t) for t in transitions.order_by("-at", "-id")[:take]],
        [
            TimelineEntry(
                at=r.at,
                kind="reopened",
                title="Re-opened",
                detail=f"engaged again in recycle round {r.recycle_round}",
            )
            for r in reopenings.order_by("-at", "-id")[:take]
        ],
        *extensions.timeline_sources(contact, before=before, limit=take),
    ]
    ordered = sorted(
        ((e.at, -i, -j, e) for i, src in enumerate(sources) for j, e in enumerate(src)),
        key=lambda t: t[:3],
        reverse=True,
    )
    entries = [e for *_, e in ordered]
    if before is not None and skip:
        shown = [e for e in entries[:skip] if e.at == before]
        entries = entries[len(shown) :]
    more = len(entries) > limit
    entries = entries[:limit]
    if not (more and entries):
        return TimelinePage(entries, None)
    last = entries[-1].at
    at_last = sum(1 for e in entries if e.at == last)
    return TimelinePage(entries, last, at_last + (skip if last == before else 0))
