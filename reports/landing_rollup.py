"""Landing-page unique visitors and converted visitors of any period from day rows
(``LandingDaily`` and ``LandingSpan``, see their docstrings; METRICS.md line 31).

For one url, tag (``v`` visit, ``s`` submission, ``a`` either) and contact, take its
distinct site-time-zone days d1 < d2 < … with that tag. The contact counts once in a
period [S, E) when some day is in it, i.e. when d1 is in it or some consecutive pair
(p, d) has p < S ≤ d < E. Summed over contacts:

    unique(S, E) = Σ_{S ≤ x < E} firsts[x]  +  Σ_{x ≥ S} (closed[x] − opened[x])  −  W

where the middle sum counts the pairs with p < S ≤ d (every pair opens and closes once)
and W the pairs with p < S and d ≥ E (none when E is after the data: a period ending
today reads no span row). A pair within one month is only ever read at the ``dd``
grain (the ``mm``/``md``/``dm`` reads need p before the month of S and d from the month
of E on, or the reverse), so only pairs across months are stored at the coarser grains.

Visitors are ``v``'s figure; converted visitors (a visit and a submission in the
period) are v + s − a. Reads: the daily rows from S on (days × urls × 3) and four
bounded span ranges — never the visits.

The rows are a pure function of ``LandingVisitFact`` (which reports.landing_facts keeps
from the activities): every change of those rows moves these by the difference of the
contributions of the touched url × contact pairs (:func:`landing_rollup_move`).
:func:`landing_rollup_rebuild` recounts them; :func:`landing_rollup_reconcile` compares.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import date, timedelta

from django.db import transaction
from django.db.models import Count, F, Q, Sum, Value

from .fact_writes import counts_upsert, facts_insert
from .models import LandingDaily, LandingSpan, LandingVisitFact
from .rollups import snapshot_diff

log = logging.getLogger(__name__)

DAILY_FIELDS = ["firsts", "opened", "closed"]
ROWS_PER_CHUNK = 1_000_000  # fact rows recounted at a time (rebuild, reconciliation)


def _month(d: date) -> date:
    return d.replace(day=1)


def next_month_start(d: date) -> date:
    """The first month start at or after ``d``."""
    return d if d.day == 1 else (d.replace(day=1) + timedelta(days=32)).replace(day=1)


def contributions(rows) -> Counter:
    """``("d", url, tag, day, field)`` and ``("s", url, tag, grain, p_key, d_key)`` → n,
    from ``LandingVisitFact`` rows ``(url, contact_id, day, kind)``."""
    days: dict[tuple, dict[str, set]] = defaultdict(lambda: {"v": set(), "s": set()})
    for url, contact_id, day, kind in rows:
        days[(url, contact_id)][kind].add(day)
    out: Counter = Counter()
    for (url, _), by_kind in days.items():
        for tag, ds in (
            ("v", by_kind["v"]),
            ("s", by_kind["s"]),
            ("a", by_kind["v"] | by_kind["s"]),
        ):
            if not ds:
                continue
            ordered = sorted(ds)
            out[("d", url, tag, ordered[0], "firsts")] += 1
            for p, d in zip(ordered, ordered[1:], strict=False):
                out[("d", url, tag, p, "opened")] += 1
                out[("d", url, tag, d, "closed")] += 1
                out[("s", url, tag, "dd", p, d)] += 1
                mp, md = _month(p), _month(d)
                if mp != md:  # the coarser grains are only read across a month boundary
                    for grain, pk, dk in (("mm", mp, md), ("md", mp, d), ("dm", p, md)):
                        out[("s", url, tag, grain, pk, dk)] += 1
    return out


def _write(delta: Counter) -> None:
    daily: dict[tuple, Counter] = {}
    spans: dict[tuple, Counter] = {}
    for key, n in delta.items():
        if not n:
            continue
        if key[0] == "d":
            _, url, tag, day, field = key
            daily.setdefault((day, url, tag), Counter())[field] += n
        else:
            _, url, tag, grain, pk, dk = key
            spans.setdefault((grain, dk, pk, url, tag), Counter())["n"] += n
    counts_upsert(LandingDaily, key=["day", "url", "tag"], rows=daily, fields=DAILY_FIELDS)
    counts_upsert(
        LandingSpan, key=["grain", "d_key", "p_key", "url", "tag"], rows=spans, fields=["n"]
    )


def stored_rows(contact_ids, urls=None) -> list[tuple]:
    """The stored ``LandingVisitFact`` rows of these contacts (and urls) as contribution
    input (one read on the facts' contact index)."""
    qs = LandingVisitFact.objects.filter(contact_id__in=contact_ids)
    if urls is not None:
        qs = qs.filter(url__in=urls)
    return list(qs.values_list("url", "contact_id", "day", "kind"))


def landing_rollup_move(before_rows, after_rows) -> None:
    """The facts of some url × contact pairs went from ``before_rows`` to ``after_rows``
    (``(url, contact_id, day, kind, …)`` tuples): move the day rows by the difference."""
    delta = contributions(r[:4] for r in after_rows)
    delta.subtract(contributions(r[:4] for r in before_rows))
    _write(delta)


# --- The landing-page report's read ------------------------------------------------------


def unique_counts(start: date, end: date) -> dict[str, dict[str, int]]:
    """url → tag → unique contacts with that tag in [start, end), in one statement; urls
    come in the database's order of url (the report's tie-break)."""
    m_start, m_end = _month(start), next_month_start(end)
    daily = (
        LandingDaily.objects.filter(day__gte=start)
        .values("url", "tag")
        .annotate(
            firsts=Sum("firsts", filter=Q(day__lt=end), default=0),
            net=Sum(F("closed") - F("opened"), default=0),
        )
        .values_list("url", "tag", "firsts", "net")
        .order_by()
    )
    spans = (
        LandingSpan.objects.filter(
            Q(grain="mm", p_key__lt=m_start, d_key__gte=m_end)
            | Q(grain="md", p_key__lt=m_start, d_key__gte=end, d_key__lt=m_end)
            | Q(grain="dm", p_key__gte=m_start, p_key__lt=start, d_key__gte=m_end)
            | Q(grain="dd", p_key__gte=m_start, p_key__lt=start, d_key__gte=end, d_key__lt=m_end)
        )
        .values("url", "tag")
        .annotate(firsts=Value(0), net=-Sum("n"))
        .values_list("url", "tag", "firsts", "net")
        .order_by()
    )
    out: dict[str, dict[str, int]] = {}
    for url, tag, firsts, net in daily.union(spans, all=True).order_by("url"):
        c = out.setdefault(url, {"v": 0, "s": 0, "a": 0})
        c[tag] += (firsts or 0) + (net or 0)
    return out


# --- Rebuild and reconciliation -----------------------------------------------------------


def _url_chunks(max_rows: int = ROWS_PER_CHUNK):
    """The urls of the stored facts in groups of about ``max_rows`` fact rows (one grouped
    read): a url's contributions need all its rows, and a group bounds the memory."""
    group, size = [], 0
    for url, n in (
        LandingVisitFact.objects.values("url")
        .annotate(n=Count("id"))
        .values_list("url", "n")
        .order_by("url")
    ):
        if group and size + n > max_rows:
            yield group
            group, size = [], 0
        group.append(url)
        size += n
    if group:
        yield group


def _recount(urls) -> Counter:
    """Contributions of the stored fact rows of these urls."""
    return contributions(
        LandingVisitFact.objects.filter(url__in=urls)
        .values_list("url", "contact_id", "day", "kind")
        .iterator(chunk_size=20000)
    )


def _stored(urls=None) -> Counter:
    daily, spans = LandingDaily.objects.all(), LandingSpan.objects.exclude(n=0)
    if urls is not None:
        daily, spans = daily.filter(url__in=urls), spans.filter(url__in=urls)
    out: Counter = Counter()
    for url, tag, day, *counts in daily.values_list("url", "tag", "day", *DAILY_FIELDS):
        for field, n in zip(DAILY_FIELDS, counts, strict=True):
            if n:
                out[("d", url, tag, day, field)] = n
    for url, tag, grain, pk, dk, n in spans.values_list(
        "url", "tag", "grain", "p_key", "d_key", "n"
    ):
        out[("s", url, tag, grain, pk, dk)] = n
    return out


def _insert(fresh: Counter) -> None:
    daily: dict[tuple, dict] = defaultdict(dict)
    spans = []
    for key, n in fresh.items():
        if not n:
            continue
        if key[0] == "d":
            _, url, tag, day, field = key
            daily[(url, tag, day)][field] = n
        else:
            spans.append((*key[1:], n))
    facts_insert(
        LandingDaily,
        [(*k, *(c.get(f, 0) for f in DAILY_FIELDS)) for k, c in daily.items()],
        fields=["url", "tag", "day", *DAILY_FIELDS],
    )
    facts_insert(LandingSpan, spans, fields=["url", "tag", "grain", "p_key", "d_key", "n"])


def landing_rollup_rebuild() -> None:
    """Recount both tables from the stored landing facts, a group of urls at a time
    (written with COPY on PostgreSQL: a year of a million contacts' visits is millions of
    span rows)."""
    with transaction.atomic():
        LandingDaily.objects.all().delete()
        LandingSpan.objects.all().delete()
        for urls in _url_chunks():
            _insert(_recount(urls))


def landing_rollup_reconcile() -> dict:
    """Compare both tables with a recount from the landing facts, a group of urls at a
    time; repair and report."""
    diff = {}
    seen: set[str] = set()
    for urls in _url_chunks():
        seen.update(urls)
        have, want = _stored(urls), _recount(urls)
        diff.update(snapshot_diff(have, want, "facts"))
    # Rows of urls no fact has any more (erased or re-recorded elsewhere).
    if LandingDaily.objects.exclude(url__in=seen).exists() or (
        LandingSpan.objects.exclude(n=0).exclude(url__in=seen).exists()
    ):
        diff["rows of urls without facts"] = {"facts": "rows", "raw": None}
    if diff:
        log.warning("Landing day rows differ from the landing facts: %s", diff)
        landing_rollup_rebuild()
    return diff
