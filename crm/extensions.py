"""What the other apps contribute to CRM pages, without the core importing them.

Like the event handlers, these are ordered lists of dotted paths in settings:

- ``CONTACT_TIMELINE_PROVIDERS``: ``entries(contact, *, before, limit) -> list[TimelineEntry]``,
  newest first (scoring adds score changes, nurture adds enrollments and sends);
- ``CONTACT_PANEL_PROVIDERS``: ``panel(request, contact) -> Panel | None``, a titled block of
  rendered HTML on the contact page (scoring: the score breakdown);
- ``CONTACT_SUMMARY_PROVIDERS``: ``summaries(contact_ids) -> dict[int, list[str]]``, short
  lines per contact for list views such as the MQL queue ("why it qualified", "last
  program"), computed for the whole page in a fixed number of queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # "activity", "stage", "score", "enrollment", "email" …
    title: str  # plain text; templates escape it
    detail: str = ""
    url: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    html: str  # already rendered by a template (auto-escaped there)


def _providers(name: str):
    return [import_string(path) for path in getattr(settings, name, ())]


def timeline_sources(contact, *, before: datetime | None, limit: int) -> list[list[TimelineEntry]]:
    """Each provider's entries: at most ``limit``, at or before ``before``, newest first
    and in a fixed order among entries of one time (the timeline pages on that order)."""
    return [
        list(provider(contact, before=before, limit=limit))
        for provider in _providers("CONTACT_TIMELINE_PROVIDERS")
    ]


def contact_panels(request, contact) -> list[Panel]:
    return [
        p
        for p in (provider(request, contact) for provider in _providers("CONTACT_PANEL_PROVIDERS"))
        if p
    ]


def contact_summaries(contact_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = list(contact_ids)
    merged: dict[int, list[str]] = {cid: [] for cid in ids}
    for provider in _providers("CONTACT_SUMMARY_PROVIDERS"):
        for cid, lines in provider(ids).items():
            merged.setdefault(cid, []).extend(lines)
    return merged
