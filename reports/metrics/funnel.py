"""The funnel (METRICS.md lines 34–55): cohort and flow counts, conversion, velocity,
drop-offs, nurtured vs non-nurtured and holdout lift."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from django.db import connection
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)

from crm.models import Contact, LifecycleTransition, Stage
from crm.models.choices import FUNNEL_STAGES

from ..cohort_facts import STAGE_FIELDS
from ..drop_facts import drop_counts
from ..holdout_facts import TREATED
from ..models import (
    CohortReachDaily,
    HoldoutDaily,
    HoldoutReachDaily,
    NewLeadDaily,
    NurturedDaily,
    NurturedReachDaily,
    TransitionFact,
)
from ..nurtured_facts import HELD_OUT, NURTURED
from ..query import ReportQuery, ratio
from ..stage_facts import entry_counts
from .lifecycle import entries, new_leads_qs
from .velocity import DAY, median, percentile, velocity_python, velocity_sql

Z95 = 1.959964


def _opportunity_contacts(q: ReportQuery):
    """Contacts that entered ``opportunity`` before the report end (for IN subqueries)."""
    return LifecycleTransition.objects.filter(to_stage=Stage.OPPORTUNITY, at__lt=q.end_dt).values(
        "contact_id"
    )


def cohort(q: ReportQuery) -> dict[str, int]:
    """Cohort mode: of the new leads of the period, how many reached each stage by the end.

    Without filters, from day rows (reports.cohort_facts): the period's ``NewLeadDaily``
    totals (new leads, and those that ever entered each stage) minus the
    ``CohortReachDaily`` rows of leads created in the period whose first entry into the
    stage came at or after the end — two reads of day rows, none for a period ending
    today, instead of the period's new leads joined to their transitions. With any
    filter, :func:`cohort_raw`.
    """
    if q.has_contact_filters or q.campaign or q.channel:
        return cohort_raw(q)
    fields = ["new_leads", *STAGE_FIELDS]
    agg = NewLeadDaily.objects.filter(day__gte=q.start, day__lt=q.end).aggregate(
        **{f: Sum(f) for f in fields}
    )
    late = dict(
        CohortReachDaily.objects.filter(
            stage__in=STAGE_FIELDS, reached_day__gte=q.end, day__gte=q.start, day__lt=q.end
        )
        .values("stage")
        .annotate(n=Sum("leads"))
        .values_list("stage", "n")
        .order_by()
    )
    out = {"lead": agg["new_leads"] or 0}
    for stage in STAGE_FIELDS:
        out[stage] = (agg[stage] or 0) - (late.get(stage) or 0)
    return out


def cohort_raw(q: ReportQuery) -> dict[str, int]:
    """Cohort mode from the contacts and transitions (filters; property-test reference).

    One grouped read of the stage entries of the cohort (a semi-join on the new leads)
    instead of an EXISTS probe per new lead and stage.
    """
    leads = new_leads_qs(q)
    reached = dict(
        LifecycleTransition.objects.filter(
            to_stage__in=FUNNEL_STAGES[1:], at__lt=q.end_dt, contact_id__in=leads.values("id")
        )
        .values("to_stage")
        .annotate(n=Count("contact_id", distinct=True))
        .values_list("to_stage", "n")
        .order_by()
    )
    out = {"lead": new_leads_qs(q).count()}
    for stage in FUNNEL_STAGES[1:]:
        out[str(stage)] = reached.get(str(stage), 0)
    return out


FLOW_STAGES = (*FUNNEL_STAGES, Stage.RECYCLED, Stage.DISQUALIFIED, Stage.CHURNED)


def flow(q: ReportQuery) -> dict[str, dict]:
    """Flow mode: entries into each stage in the period (entries and unique contacts).

    Choice: "lead" counts every move into the lead stage, a contact created already
    suppressed included (it is created as a lead); the cohort mode's "lead" is the
    METRICS.md new leads, which leave those out.

    Without filters, a sum of the period's ``StageEntryDaily`` day rows
    (reports.stage_facts: unique contacts are the rows whose previous same-stage entry is
    before the period). With filters, ``reports.TransitionFact`` (one row per transition):
    a contact's first entry into a stage within the period is its row whose
    ``prev_same_at`` is null or before the period, so unique contacts are a filtered count
    — no COUNT(DISTINCT contact) sorting every entry of the period.
    """
    if not (q.has_contact_filters or q.campaign or q.channel):
        return entry_counts(q, FLOW_STAGES)
    first_in_period = Q(prev_same_at__isnull=True) | Q(prev_same_at__lt=q.start_dt)
    rows = (
        TransitionFact.objects.filter(to_stage__in=FLOW_STAGES, at__gte=q.start_dt, at__lt=q.end_dt)
        .filter(q.contact_q("contact__"))
        .values("to_stage")
        .annotate(
            entries=Count("transition_id"),
            contacts=Count("transition_id", filter=first_in_period),
        )
        .order_by()
    )
    return {r["to_stage"]: {"entries": r["entries"], "contacts": r["contacts"]} for r in rows}


def flow_raw(q: ReportQuery) -> dict[str, dict]:
    """:func:`flow` straight from the transitions (reference for the property tests)."""
    rows = (
        entries(q, *FLOW_STAGES)
        .values("to_stage")
        .annotate(entries=Count("id"), contacts=Count("contact_id", distinct=True))
        .order_by()
    )
    return {r["to_stage"]: {"entries": r["entries"], "contacts": r["contacts"]} for r in rows}


def _first_after(stage: str, q: ReportQuery, outer: str) -> Subquery:
    """The contact's first entry into ``stage`` at or after ``outer`` and before the end."""
    return Subquery(
        LifecycleTransition.objects.filter(
            contact_id=OuterRef("id"), to_stage=stage, at__gte=OuterRef(outer), at__lt=q.end_dt
        )
        .order_by("at")
        .values("at")[:1]
    )


def _step_durations(a: str, b: str, q: ReportQuery) -> list:
    """Per contact of step a→b's cohort: the time to its first entry into b (None if none)."""
    if a == Stage.LEAD:
        cohort_qs = new_leads_qs(q).annotate(a_at=F("created_at"))
    else:
        first_a = Subquery(
            LifecycleTransition.objects.filter(
                contact_id=OuterRef("id"), to_stage=a, at__gte=q.start_dt, at__lt=q.end_dt
            )
            .order_by("at")
            .values("at")[:1]
        )
        cohort_qs = Contact.objects.filter(id__in=entries(q, a).values("contact_id")).annotate(
            a_at=first_a
        )
    return list(
        cohort_qs.annotate(b_at=_first_after(b, q, "a_at"))
        .annotate(dur=ExpressionWrapper(F("b_at") - F("a_at"), output_field=DurationField()))
        .values_list("dur", flat=True)
    )


def _step(a: str, b: str, entered: int, times: list[float]) -> dict:
    return _step_of(a, b, entered, (len(times), median(times), percentile(times, 0.9)))


def _step_of(a: str, b: str, entered: int, velocity: tuple) -> dict:
    """A step's figures from ``(converted, median days, p90 days)``."""
    converted, med, p90 = velocity
    return {
        "from_stage": a,
        "to_stage": b,
        "entered": entered,
        "converted": converted,
        "stage_conversion": ratio(converted, entered),
        "median_days": _r(med),
        "p90_days": _r(p90),
    }


def conversions_raw(q: ReportQuery) -> list[dict]:
    """:func:`conversions` straight from the transitions (reference for the property tests)."""
    out = []
    for a, b in zip(FUNNEL_STAGES, FUNNEL_STAGES[1:], strict=False):
        durations = _step_durations(str(a), str(b), q)
        times = [d.total_seconds() / DAY for d in durations if d is not None]
        out.append(_step(str(a), str(b), len(durations), times))
    return out


def conversions(
    q: ReportQuery, *, new_leads: int | None = None, entered: dict | None = None
) -> list[dict]:
    """Stage conversion and velocity for each forward step (METRICS.md lines 49–50).

    The cohort of step A→B is the contacts that entered A in the period (for ``lead``:
    the new leads, entering at creation), each at their first entry in the period; it
    converted if it entered B after that, before the report end. Time in stage is from that
    entry into A to the first entry into B after it, in days (median, p90 nearest-rank).

    Served by ``reports.TransitionFact`` (kept per stage change): a contact's first entry
    into A in the period is the entry whose previous entry into A is before the period,
    and its ``next_at`` is its first entry into B after it — two grouped reads instead of
    a subquery per contact. ``new_leads`` (the lead cohort size) may be passed in when the
    caller has counted it already, and ``entered`` (stage → unique contacts entering it
    in the period: flow mode's ``contacts``, the same first-in-period count, with the
    same filters) when the caller has read flow mode.
    """
    cq = q
    first_in_period = Q(prev_same_at__isnull=True) | Q(prev_same_at__lt=q.start_dt)
    facts = TransitionFact.objects.filter(q.contact_q("contact__"))
    entered = (
        dict(entered)
        if entered is not None
        else dict(
            facts.filter(
                first_in_period,
                to_stage__in=FUNNEL_STAGES[1:-1],
                at__gte=q.start_dt,
                at__lt=q.end_dt,
            )
            .values("to_stage")
            .annotate(n=Count("transition_id"))
            .values_list("to_stage", "n")
            .order_by()
        )
    )
    entered[str(Stage.LEAD)] = new_leads if new_leads is not None else new_leads_qs(cq).count()
    velocity = (velocity_sql if connection.vendor == "postgresql" else velocity_python)(q)
    return [
        _step_of(str(a), str(b), entered.get(str(a), 0), velocity.get(str(a), (0, None, None)))
        for a, b in zip(FUNNEL_STAGES, FUNNEL_STAGES[1:], strict=False)
    ]


def _r(v):
    return None if v is None else round(v, 2)


def drop_offs(q: ReportQuery) -> dict[str, dict]:
    """Per stage left: unique contacts recycled or disqualified from it in the period.

    Without filters, a sum of the period's ``DropDaily`` day rows (reports.drop_facts:
    unique contacts are the moves whose previous move between the same two stages is
    before the period) — a few thousand rows a year instead of COUNT(DISTINCT contact)
    over the period's raw transitions. With any filter, :func:`drop_offs_raw`.
    """
    if q.has_contact_filters or q.campaign or q.channel:
        return drop_offs_raw(q)
    return drop_counts(q.start, q.end)


def drop_offs_raw(q: ReportQuery) -> dict[str, dict]:
    """:func:`drop_offs` from the transitions (filters; property-test reference)."""
    rows = (
        LifecycleTransition.objects.filter(
            to_stage__in=[Stage.RECYCLED, Stage.DISQUALIFIED], at__gte=q.start_dt, at__lt=q.end_dt
        )
        .filter(q.contact_q("contact__"))
        .values("from_stage", "to_stage")
        .annotate(n=Count("contact_id", distinct=True))
    )
    out: dict[str, dict] = defaultdict(lambda: {"recycled": 0, "disqualified": 0})
    for r in rows:
        out[r["from_stage"]][r["to_stage"]] = r["n"]
    return out


def diff_interval(x1: int, n1: int, x2: int, n2: int) -> dict:
    """Difference of two proportions with a 95% interval (normal approximation, Wald)."""
    p1, p2 = ratio(x1, n1), ratio(x2, n2)
    if p1 is None or p2 is None:
        return {"difference": None, "ci95_low": None, "ci95_high": None}
    diff = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return {"difference": diff, "ci95_low": diff - Z95 * se, "ci95_high": diff + Z95 * se}


def nurtured_vs_non(q: ReportQuery, coh: dict | None = None) -> dict:
    """METRICS.md line 51: opportunity rate of nurtured vs never-enrolled new leads.

    Cohort: the period's new leads. Nurtured = ≥1 enrollment not held out (a held-out
    contact was never nurtured); non-nurtured = no enrollment at all (held-out-only
    contacts are in neither group). Reached opportunity = entered ``opportunity`` before
    the report end. The interval is a normal approximation for a difference of proportions.

    Without filters, from day rows (reports.nurtured_facts): the period's
    ``NurturedDaily`` per group minus the ``NurturedReachDaily`` leads first reached at or
    after the end — two reads of day rows instead of the cohort's enrollments (at 100k
    contacts, 365 days: ~90k enrolled new leads). With any filter, :func:`nurtured_vs_non_raw`.
    """
    if q.has_contact_filters or q.campaign or q.channel:
        return nurtured_vs_non_raw(q, coh)
    if coh is None:
        coh = cohort(q)
    # One statement: the period's rows per group, and (tagged ``late``) the leads of the
    # period first reached at or after the end, which the totals still count.
    totals = (
        NurturedDaily.objects.filter(day__gte=q.start, day__lt=q.end)
        .values("group")
        .annotate(n=Sum("leads"), n_opp=Sum("opportunity"))
        .values_list(Value(False), "group", "n", "n_opp")
        .order_by()
    )
    late = (
        NurturedReachDaily.objects.filter(reached_day__gte=q.end, day__gte=q.start, day__lt=q.end)
        .values("group")
        .annotate(n=Value(0), n_opp=Sum("leads"))
        .values_list(Value(True), "group", "n", "n_opp")
        .order_by()
    )
    leads: dict[str, int] = defaultdict(int)
    opp: dict[str, int] = defaultdict(int)
    for is_late, group, n, n_opp in totals.union(late, all=True):
        leads[group] += n or 0
        opp[group] += -(n_opp or 0) if is_late else n_opp or 0
    nurtured, nurtured_opp = leads[NURTURED], opp[NURTURED]
    held, held_opp = leads[HELD_OUT], opp[HELD_OUT]
    return _nurtured_result(
        {
            "nurtured": nurtured,
            "nurtured_opportunities": nurtured_opp,
            "non_nurtured": coh["lead"] - nurtured - held,
            "non_nurtured_opportunities": coh[str(Stage.OPPORTUNITY)] - nurtured_opp - held_opp,
        }
    )


def nurtured_vs_non_raw(q: ReportQuery, coh: dict | None = None) -> dict:
    """:func:`nurtured_vs_non` from the enrollments of the cohort (filters; property-test
    reference)."""
    try:
        from nurture.models import Enrollment
    except ImportError:  # pragma: no cover
        return {}
    if coh is None:
        coh = cohort(q)
    # One pass over the enrollments of the cohort (distinct contacts) instead of two
    # EXISTS probes per new lead: "never enrolled" = the cohort minus the enrolled ones,
    # and the cohort's opportunities are cohort mode's ``opportunity`` count (same set).
    held = Q(state=Enrollment.State.HELD_OUT)
    opp = Q(contact_id__in=_opportunity_contacts(q))
    enr = Enrollment.objects.filter(contact_id__in=new_leads_qs(q).values("id")).aggregate(
        nurtured=Count("contact_id", distinct=True, filter=~held),
        nurtured_opportunities=Count("contact_id", distinct=True, filter=~held & opp),
        enrolled=Count("contact_id", distinct=True),
        enrolled_opportunities=Count("contact_id", distinct=True, filter=opp),
    )
    agg = {
        "nurtured": enr["nurtured"],
        "nurtured_opportunities": enr["nurtured_opportunities"],
        "non_nurtured": coh["lead"] - enr["enrolled"],
        "non_nurtured_opportunities": coh[str(Stage.OPPORTUNITY)] - enr["enrolled_opportunities"],
    }
    return _nurtured_result(agg)


def _nurtured_result(agg: dict) -> dict:
    return {
        **agg,
        "nurtured_opportunity_rate": ratio(agg["nurtured_opportunities"], agg["nurtured"]),
        "non_nurtured_opportunity_rate": ratio(
            agg["non_nurtured_opportunities"], agg["non_nurtured"]
        ),
        **diff_interval(
            agg["nurtured_opportunities"],
            agg["nurtured"],
            agg["non_nurtured_opportunities"],
            agg["non_nurtured"],
        ),
        "method": "normal approximation (Wald) for a difference of proportions",
    }


def holdout_lift(q: ReportQuery) -> list[dict]:
    """Per program with held-out enrollments entered in the period: opportunity rate of
    treated vs held-out contacts, lift = difference, with its 95% interval (as above).

    Without filters, from day rows (reports.holdout_facts): the period's ``HoldoutDaily``
    rows that are their contact's first enrollment in the program and group within the
    period (``prev_day`` before the start), summed per program and group, minus the
    ``HoldoutReachDaily`` ones first reached at or after the end — one statement over a
    few rows per program and day instead of COUNT(DISTINCT contact) over the period's
    enrollments. With any filter, :func:`holdout_lift_raw`.
    """
    if q.has_contact_filters or q.campaign or q.channel:
        return holdout_lift_raw(q)
    try:
        from nurture.models import Program
    except ImportError:  # pragma: no cover
        return []
    first = Q(prev_day__lt=q.start, day__gte=q.start, day__lt=q.end)
    name = Subquery(Program.objects.filter(pk=OuterRef("program_id")).values("name")[:1])
    totals = (
        HoldoutDaily.objects.filter(first)
        .values("program_id", "group")
        .annotate(n=Sum("enrolled"), n_opp=Sum("opportunity"))
        .annotate(late=Value(False), pname=name)  # after the sums: not a grouping key
        .values_list("pname", "program_id", "group", "late", "n", "n_opp")
        .order_by()
    )
    late = (
        HoldoutReachDaily.objects.filter(first, reached_day__gte=q.end)
        .values("program_id", "group")
        .annotate(n_opp=Sum("enrolled"))
        .annotate(n=Value(0), late=Value(True), pname=name)
        .values_list("pname", "program_id", "group", "late", "n", "n_opp")
        .order_by()
    )
    counts: dict[int, Counter] = {}
    names: dict[int, str] = {}
    # Ordered by the program name in the database, as the raw read orders its rows.
    for pname, program_id, group, is_late, n, n_opp in totals.union(late, all=True).order_by(
        "pname"
    ):
        names[program_id] = pname
        c = counts.setdefault(program_id, Counter())
        c[group] += n or 0
        c[f"{group}_opp"] += -(n_opp or 0) if is_late else n_opp or 0
    return [
        _lift_row(pid, names[pid], c[TREATED], c["treated_opp"], c[HELD_OUT], c["held_out_opp"])
        for pid, c in counts.items()
        if c[HELD_OUT] > 0
    ]


def _lift_row(program_id, program, treated, treated_opp, held_out, held_out_opp) -> dict:
    d = diff_interval(treated_opp, treated, held_out_opp, held_out)
    return {
        "program_id": program_id,
        "program": program,
        "treated": treated,
        "treated_opportunity_rate": ratio(treated_opp, treated),
        "held_out": held_out,
        "held_out_opportunity_rate": ratio(held_out_opp, held_out),
        "lift": d["difference"],
        "ci95_low": d["ci95_low"],
        "ci95_high": d["ci95_high"],
    }


def holdout_lift_raw(q: ReportQuery) -> list[dict]:
    """:func:`holdout_lift` from the enrollments (filters; property-test reference)."""
    try:
        from nurture.models import Enrollment, Program
    except ImportError:  # pragma: no cover
        return []
    # IN (uncorrelated subquery): PostgreSQL hashes the opportunity contacts once instead
    # of probing the transitions per enrollment.
    opp = Q(contact_id__in=_opportunity_contacts(q))
    held = Q(state=Enrollment.State.HELD_OUT)
    in_period = Enrollment.objects.filter(
        entered_at__gte=q.start_dt, entered_at__lt=q.end_dt
    ).filter(q.contact_q("contact__"))
    # Only the programs with a held-out enrollment in the period (the HAVING below) are
    # grouped: their distinct counts sort just those programs' enrollments, not every
    # enrollment of the period.
    with_holdouts = in_period.filter(held).values("program_id")
    rows = (
        in_period.filter(program_id__in=with_holdouts)
        .values("program_id")
        .annotate(
            treated=Count("contact_id", distinct=True, filter=~held),
            treated_opp=Count("contact_id", distinct=True, filter=~held & opp),
            held_out=Count("contact_id", distinct=True, filter=held),
            held_out_opp=Count("contact_id", distinct=True, filter=held & opp),
        )
        .filter(held_out__gt=0)
        .annotate(
            program__name=Subquery(
                Program.objects.filter(pk=OuterRef("program_id")).values("name")[:1]
            )
        )
        .order_by("program__name")
    )
    return [
        _lift_row(
            r["program_id"],
            r["program__name"],
            r["treated"],
            r["treated_opp"],
            r["held_out"],
            r["held_out_opp"],
        )
        for r in rows
    ]


def funnel_report(q: ReportQuery) -> dict:
    coh = cohort(q)
    fl = flow(q)
    drops = drop_offs(q)
    # Flow mode's unique contacts per stage are the conversion cohorts: no second count.
    entered = {stage: v["contacts"] for stage, v in fl.items()}
    conv = {c["from_stage"]: c for c in conversions(q, new_leads=coh["lead"], entered=entered)}
    stages = []
    for s in FUNNEL_STAGES:
        s = str(s)
        c = conv.get(s, {})
        stages.append(
            {
                "stage": s,
                "cohort": coh[s],
                "entries": fl.get(s, {}).get("entries", 0),
                "contacts": fl.get(s, {}).get("contacts", 0),
                "next_stage": c.get("to_stage"),
                "entered": c.get("entered"),
                "converted": c.get("converted"),
                "stage_conversion": c.get("stage_conversion"),
                "median_days": c.get("median_days"),
                "p90_days": c.get("p90_days"),
                "recycled": drops[s]["recycled"] if s in drops else 0,
                "disqualified": drops[s]["disqualified"] if s in drops else 0,
            }
        )
    return {
        "stages": stages,
        "nurtured_vs_non_nurtured": nurtured_vs_non(q, coh),
        "holdouts": holdout_lift(q),
        "totals": {
            "new_leads": coh["lead"],
            "customers": coh[str(Stage.CUSTOMER)],
            "recycled": fl.get(Stage.RECYCLED, {}).get("contacts", 0),
            "disqualified": fl.get(Stage.DISQUALIFIED, {}).get("contacts", 0),
        },
    }
