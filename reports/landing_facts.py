"""Keeping ``LandingVisitFact`` current (see its docstring in reports.models).

A batch's page visits and form submissions with a url recompute the rows of the
url × contact pairs they touch, from that contact's raw activities (idempotent, a few
rows per pair; out-of-order events need nothing special).
"""

from __future__ import annotations

from collections import defaultdict

from crm.models import Activity, ActivityKind

from .fact_writes import facts_insert
from .landing_rollup import landing_rollup_move, stored_rows
from .models import LandingVisitFact
from .query import site_tz

K = ActivityKind
VISIT_KINDS = {K.PAGE_VISIT}
SUBMIT_KINDS = {K.FORM_SUBMITTED, K.LANDING_PAGE_CONVERSION}
LANDING_KINDS = VISIT_KINDS | SUBMIT_KINDS
CHUNK = 2000


def _landing(contact_ids, urls=None):
    qs = LandingVisitFact.objects.filter(contact_id__in=contact_ids)
    return qs if urls is None else qs.filter(url__in=urls)


FIELDS = ("url", "contact", "day", "kind", "prev_day", "other_day")


def _rows(contact_ids, urls=None) -> list[tuple]:
    """The fact rows (:data:`FIELDS` tuples: a batch makes thousands, and instances cost
    more than the insert) of these contacts (and urls) from raw activities."""
    tz = site_tz()
    days: dict[tuple[str, int], dict[str, set]] = defaultdict(lambda: {"v": set(), "s": set()})
    qs = Activity.objects.filter(contact_id__in=contact_ids, kind__in=LANDING_KINDS).exclude(url="")
    if urls is not None:
        qs = qs.filter(url__in=urls)
    for url, contact_id, kind, occurred_at in qs.values_list(
        "url", "contact_id", "kind", "occurred_at"
    ):
        tag = "v" if kind in VISIT_KINDS else "s"
        days[(url, contact_id)][tag].add(occurred_at.astimezone(tz).date())
    out = []
    for (url, contact_id), by_kind in days.items():
        for tag, other in (("v", "s"), ("s", "v")):
            others = sorted(by_kind[other])
            prev = None
            for day in sorted(by_kind[tag]):
                # Latest other-kind day: at or before a submission, strictly before a visit.
                before = [d for d in others if d < day or (tag == "s" and d == day)]
                out.append((url, contact_id, day, tag, prev, before[-1] if before else None))
                prev = day
    return out


def landing_facts_apply_activities(*, activities) -> None:
    """Activities recorded: recompute the rows of the batch's landing contacts × urls."""
    events = [a for a in activities if a.kind in LANDING_KINDS and a.url]
    if not events:
        return
    urls = sorted({a.url for a in events})
    contacts = sorted({a.contact_id for a in events})
    for i in range(0, len(contacts), CHUNK):
        chunk = contacts[i : i + CHUNK]
        _replace(chunk, urls)


def landing_facts_rebuild(*, contact_ids) -> None:
    """Recompute every landing row of these contacts from raw data."""
    contact_ids = list(contact_ids)
    _replace(contact_ids, None)


def _replace(contact_ids, urls) -> None:
    """Replace the rows of these contacts (and urls) with fresh ones, and move the
    landing day rows by the difference (reports.landing_rollup: one read of the rows
    replaced, then upserts of the changed day and span counts)."""
    before = stored_rows(contact_ids, urls)
    _landing(contact_ids, urls).delete()
    rows = _rows(contact_ids, urls)
    facts_insert(LandingVisitFact, rows, fields=FIELDS)
    landing_rollup_move(before, rows)


def landing_facts_snapshot(contact_ids) -> dict:
    return {
        r[:4]: r[4:]
        for r in _landing(contact_ids).values_list(
            "url", "contact_id", "day", "kind", "prev_day", "other_day"
        )
    }
