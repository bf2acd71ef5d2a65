"""Keeping ``LandingVisitFact`` current (see its docstring in reports.models).

A batch's page visits and form submissions with a url add their days to the url ×
contact pairs they touch; the pairs that gained a day get their rows recomputed from their
stored days (a few rows per pair; out-of-order events need nothing special). Erasure and
the rebuild recompute a contact's rows from its raw activities.
"""

from __future__ import annotations

from collections import defaultdict

from crm.models import Activity, ActivityKind

from .fact_writes import _in, facts_insert
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
        out += _pair_rows(url, contact_id, by_kind)
    return out


def _pair_rows(url: str, contact_id: int, by_kind: dict[str, set]) -> list[tuple]:
    """The fact rows of one url × contact pair from its distinct visit (``v``) and
    submission (``s``) days: nothing else goes into them."""
    out = []
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
    """Activities recorded: the batch's days join their url × contact pairs' stored days.

    A pair's rows follow from its distinct visit and submission days alone
    (:func:`_pair_rows`), and its stored rows hold exactly those days; so one read of the
    stored rows of the batch's pairs says which pairs gained a day. Only those are
    recomputed, only their rows that changed are deleted and inserted, and the landing
    day rows move by their difference (reports.landing_rollup). A batch on days its pairs
    already have (the same page again today) writes nothing. Queries per 2,000 contacts:
    the read, then a delete, a COPY and the day-row upserts only when something changed.
    Rows drifted by paths that bypass the upkeep are the reconciliation's, as before
    (``lifecycle_facts_reconcile`` rebuilds them from the activities).
    """
    tz = site_tz()
    added: dict[tuple[str, int], dict[str, set]] = defaultdict(lambda: {"v": set(), "s": set()})
    for url, contact_id, kind, occurred_at in _events(activities):
        tag = "v" if kind in VISIT_KINDS else "s"
        added[(url, contact_id)][tag].add(occurred_at.astimezone(tz).date())
    if not added:
        return
    urls = sorted({url for url, _ in added})
    contacts = sorted({contact_id for _, contact_id in added})
    for i in range(0, len(contacts), CHUNK):
        chunk = set(contacts[i : i + CHUNK])
        stored: dict[tuple[str, int], list[tuple]] = defaultdict(list)
        for row in _stored(chunk, urls):
            stored[(row[1], row[2])].append(row)
        gone: list[int] = []
        new: list[tuple] = []
        before: list[tuple] = []
        after: list[tuple] = []
        for pair, days in added.items():
            if pair[1] not in chunk:
                continue
            rows = stored.get(pair, ())
            have: dict[str, set] = {"v": set(), "s": set()}
            for row in rows:
                have[row[4]].add(row[3])
            if days["v"] <= have["v"] and days["s"] <= have["s"]:
                continue  # no new day: the pair's rows and day-row contributions stand
            have["v"] |= days["v"]
            have["s"] |= days["s"]
            fresh = _pair_rows(*pair, have)
            keep = set(fresh)
            for row in rows:
                if row[1:] in keep:
                    keep.discard(row[1:])  # a second copy of a row goes too
                else:
                    gone.append(row[0])
            new += [r for r in fresh if r in keep]
            before += [row[1:] for row in rows]
            after += fresh
        if gone:
            LandingVisitFact.objects.filter(_in("id", gone)).delete()
        facts_insert(LandingVisitFact, new, fields=FIELDS)
        if after:
            landing_rollup_move(before, after)


def _events(activities) -> list[tuple]:
    """``(url, contact_id, kind, occurred_at)`` of the batch's landing events, with the
    url and contact as stored (one read by primary key: the rows must follow the table, and
    an erasure may have rewritten a url since the batch was built; kinds and times are
    never rewritten)."""
    events = {a.pk: a for a in activities if a.kind in LANDING_KINDS and a.url}
    if not events or None in events:
        return [(a.url, a.contact_id, a.kind, a.occurred_at) for a in events.values()]
    return [
        (url, contact_id, events[pk].kind, events[pk].occurred_at)
        for pk, url, contact_id in Activity.objects.filter(_in("id", list(events)))
        .exclude(url="")
        .order_by()
        .values_list("id", "url", "contact_id")
    ]


def _stored(contact_ids, urls) -> list[tuple]:
    """``(id, *FIELDS)`` of the stored rows of these contacts and urls (the facts' contact
    index; ``= ANY(array)`` on PostgreSQL)."""
    return list(
        LandingVisitFact.objects.filter(_in("contact_id", contact_ids), _in("url", urls, "text"))
        .order_by()
        .values_list("id", "url", "contact_id", "day", "kind", "prev_day", "other_day")
    )


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
