"""The funnel by campaign, source or segment (issue 8: "by campaign, source or segment").

One funnel row set per group value — cohort mode (of the period's new leads in the group,
how many reached each stage by the end) and flow mode (entries into each stage in the
period, and unique contacts entering) — each row the figure the funnel shows with that
group as its filter:

* ``campaign``: the contact's acquiring campaign (``Contact.acquired_by``, as the campaign
  filter reads contact-level counts); "(no campaign)" for contacts acquired by none.
* ``source``: the contact's source.
* ``segment``: the segments the contact is a member of now (as the segment filter). A
  contact in two segments counts in both, so the groups may add up to more than the
  funnel; "(no segment)" holds the contacts in none.

The groups shown are the :data:`GROUP_LIMIT` largest by new leads (then by entries); the
rest are summed into one "(other)" group — for segments, the contacts in any of them,
each once.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Exists, OuterRef, Q

from crm.models import Campaign, Contact, LifecycleTransition, Segment, SegmentMembership, Source
from crm.models.choices import FUNNEL_STAGES

from ..models import TransitionFact
from ..query import GROUP_BY, ReportQuery
from .lifecycle import new_leads_qs

GROUP_LIMIT = 20
__all__ = ["GROUP_BY", "GROUP_LIMIT", "funnel_groups"]
OTHER = "(other)"
# The contact field each grouping reads (a segment through the memberships: a LEFT JOIN,
# so contacts in no segment come back with None).
KEY_PATHS = {
    "campaign": "acquired_by_id",
    "source": "source",
    "segment": "segment_memberships__segment_id",
}
STAGES = [str(s) for s in FUNNEL_STAGES]
FIGURES = ("cohort", "entries", "contacts")


def _empty() -> dict[str, dict[str, int]]:
    return {s: dict.fromkeys(FIGURES, 0) for s in STAGES}


def _counts(q: ReportQuery, path: str | None, extra: Q) -> dict:
    """Group key → stage → cohort, entries and contacts; ``path`` None: one group (key
    None) of the contacts matching ``extra``. Three grouped reads, as the filtered funnel
    makes them (reports.metrics.funnel.cohort_raw and flow)."""
    out: dict = defaultdict(_empty)
    leads = new_leads_qs(q).filter(extra)
    if path:
        rows = leads.values(path).annotate(n=Count("id", distinct=True)).order_by()
        for r in rows:
            out[r[path]][str(FUNNEL_STAGES[0])]["cohort"] = r["n"]
    else:
        out[None][str(FUNNEL_STAGES[0])]["cohort"] = leads.count()
    via = [f"contact__{path}"] if path else []
    reached = (
        LifecycleTransition.objects.filter(
            to_stage__in=STAGES[1:], at__lt=q.end_dt, contact_id__in=leads.values("id")
        )
        .values(*via, "to_stage")
        .annotate(n=Count("contact_id", distinct=True))
        .order_by()
    )
    for r in reached:
        out[r[via[0]] if via else None][r["to_stage"]]["cohort"] = r["n"]
    first_in_period = Q(prev_same_at__isnull=True) | Q(prev_same_at__lt=q.start_dt)
    flow = (
        TransitionFact.objects.filter(to_stage__in=STAGES, at__gte=q.start_dt, at__lt=q.end_dt)
        .filter(q.contact_q("contact__"), _on_contact(extra))
        .values(*via, "to_stage")
        .annotate(
            entries=Count("transition_id", distinct=True),
            contacts=Count("transition_id", distinct=True, filter=first_in_period),
        )
        .order_by()
    )
    for r in flow:
        figures = out[r[via[0]] if via else None][r["to_stage"]]
        figures.update(entries=r["entries"], contacts=r["contacts"])
    return out


def _on_contact(extra: Q) -> Q:
    """``extra`` (a Q on Contact) for rows pointing at a contact."""
    return Q(contact_id__in=Contact.objects.filter(extra).values("id")) if extra else Q()


def _labels(group_by: str, keys) -> dict:
    if group_by == "source":
        return {k: dict(Source.choices).get(k, k or "(no source)") for k in keys}
    model, none = (
        (Campaign, "(no campaign)") if group_by == "campaign" else (Segment, "(no segment)")
    )
    names = dict(model.objects.filter(id__in=[k for k in keys if k]).values_list("id", "name"))
    return {k: names.get(k, none) if k else none for k in keys}


def _in_groups(group_by: str, keys: list) -> Q:
    """The contacts of any of the segment groups ``keys`` (None: in no segment)."""
    member = SegmentMembership.objects.filter(contact_id=OuterRef("id"))
    q = Q(Exists(member.filter(segment_id__in=[k for k in keys if k is not None])))
    if None in keys:
        q |= ~Exists(member)
    return q


def _other(q: ReportQuery, group_by: str, rest: list, counts: dict) -> dict:
    """The figures of the groups not shown, together."""
    if group_by == "segment":  # overlapping groups: count their contacts once
        return _counts(q, None, _in_groups(group_by, rest))[None]
    total = _empty()
    for key in rest:  # a partition: the sum of its parts
        for stage, figures in counts[key].items():
            for name, n in figures.items():
                total[stage][name] += n
    return total


def funnel_groups(q: ReportQuery, group_by: str, *, limit: int = GROUP_LIMIT) -> dict:
    """The funnel per group value: ``{"rows", "shown", "total", "note"}``; a row per group
    and funnel stage with ``group_by``, ``group_id`` (None for "(no …)"; ``other`` marks
    "(other)"), ``group``, ``stage``, ``cohort``, ``entries`` and ``contacts``."""
    counts = _counts(q, KEY_PATHS[group_by], Q())
    labels = _labels(group_by, counts)
    lead = STAGES[0]
    ranked = sorted(
        counts,
        key=lambda k: (
            -counts[k][lead]["cohort"],
            -sum(f["entries"] for f in counts[k].values()),
            labels[k].lower(),
        ),
    )
    shown, rest = ranked[:limit], ranked[limit:]
    groups = [(k, labels[k], counts[k], False) for k in shown]
    if rest:
        groups.append((None, OTHER, _other(q, group_by, rest, counts), True))
    rows = [
        {
            "group_by": group_by,
            "group_id": key,
            "group": label,
            "other": other,
            "stage": stage,
            **figures[stage],
        }
        for key, label, figures, other in groups
        for stage in STAGES
    ]
    note = ""
    if rest:
        note = (
            f"The {limit} largest of {len(ranked)} groups by new leads; the other "
            f"{len(rest)} together as {OTHER}."
        )
    return {"rows": rows, "shown": len(shown), "total": len(ranked), "note": note}
