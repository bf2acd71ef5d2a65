"""Cost and value per program (METRICS.md "Cost and value", lines 57–72)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

from django.db.models import (
    Case,
    Count,
    DateField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
)

from crm.models import Campaign, CampaignCost, Deal, Stage

from ..credit_facts import day_credits, new_leads_by_campaign
from ..models import DealCredit, TransitionCredit, WonDealFact
from ..query import ReportQuery, money
from .attribution import (
    MODELS,
    NO_CAMPAIGN,
    attribute,
    campaign_touches,
    credits_from_facts,
    touches_before,
    weighted_credits,
)
from .email import email_counts_by_campaign
from .lifecycle import entries, new_leads_qs

VARIABLE = set(CampaignCost.VARIABLE_CATEGORIES)
CREDIT_STAGES = (Stage.MQL, Stage.SQL, Stage.CUSTOMER)


def to_money(value: Fraction | Decimal | int) -> Decimal:
    if isinstance(value, Fraction):
        value = Decimal(value.numerator) / Decimal(value.denominator)
    return money(value)


def cost_entries(q: ReportQuery) -> list:
    """Cost entries overlapping the period, each with ``shared_ids``: the ids of the
    campaigns it is shared with (two queries).

    The sharing campaigns are read as (entry, campaign) id pairs from the through table:
    ``prefetch_related("shared_with")`` built a manager and a queryset per entry (~130 µs
    each — 20 ms of the dashboard's CPU for the 148 entries of a year at 1M, read twice)
    and loaded whole campaign rows where only their ids are used.
    """
    entries = list(
        CampaignCost.objects.filter(period_start__lt=q.end, period_end__gte=q.start).order_by("id")
    )
    if entries:
        through = CampaignCost.shared_with.through
        shared: dict[int, list[int]] = defaultdict(list)
        pairs = through.objects.filter(campaigncost_id__in=[e.id for e in entries])
        for cost_id, campaign_id in pairs.values_list("campaigncost_id", "campaign_id"):
            shared[cost_id].append(campaign_id)
        for e in entries:
            e.shared_ids = shared.get(e.id, [])
    return entries


def shown_campaigns(q: ReportQuery) -> set[int] | None:
    """The ids of the campaigns the campaign/channel filter keeps (``None``: no filter, all
    of them); a query only for a channel filter."""
    if not (q.campaign or q.channel):
        return None
    if not q.channel:
        return {q.campaign}
    return set(Campaign.objects.filter(q.campaign_q()).values_list("id", flat=True))


def program_costs(
    q: ReportQuery, entries: list | None = None, sent: dict[int, int] | None = None
) -> dict[int, dict[str, Fraction]]:
    """METRICS.md line 62 "program cost": overlapping entries prorated by days, shared split.

    Each entry counts ``amount × overlap days ÷ entry days`` (inclusive entry dates, see
    ``CampaignCost.overlap_days``). A shared entry is split over its campaign and its
    ``shared_with`` campaigns equally, or by emails sent. Choice: "emails sent" are each
    sharing campaign's sends in the report period (from the rollup); if none of them sent
    anything the split falls back to equal. ``entries`` may hold the entries of a longer
    period (read once for all months of a chart; ``sent`` the sends, likewise). Returns
    exact fractions per campaign id:
    ``{"program_cost", "variable_cost"}`` (variable = media and content).
    """
    if entries is None:
        entries = cost_entries(q)
    entries_list = [e for e in entries if e.period_start < q.end and e.period_end >= q.start]
    needs_sent = any(e.shared and e.split == CampaignCost.Split.EMAILS_SENT for e in entries_list)
    if sent is None and needs_sent:
        sent = {
            k: v["sent"]
            for k, v in email_counts_by_campaign(
                q.contact_filters_only().__class__(start=q.start, end=q.end), fields=["sent"]
            ).items()
        }
    sent = sent or {}
    out: dict[int, dict[str, Fraction]] = defaultdict(
        lambda: {"program_cost": Fraction(0), "variable_cost": Fraction(0)}
    )
    for e in entries_list:
        share = Fraction(e.amount) * e.overlap_days(q.start, q.end) / e.days
        if share == 0:
            continue
        parts: dict[int, Fraction]
        if e.shared:
            members = sorted({e.campaign_id, *e.shared_ids})
            weights = {m: sent.get(m, 0) for m in members}
            total = sum(weights.values())
            if e.split == CampaignCost.Split.EMAILS_SENT and total:
                parts = {m: Fraction(w, total) for m, w in weights.items()}
            else:
                parts = {m: Fraction(1, len(members)) for m in members}
        else:
            parts = {e.campaign_id: Fraction(1)}
        for m, frac in parts.items():
            out[m]["program_cost"] += share * frac
            if e.category in VARIABLE:
                out[m]["variable_cost"] += share * frac
    return out


def _won_deals(q: ReportQuery):
    return Deal.objects.filter(
        status=Deal.Status.WON, closed_at__gte=q.start_dt, closed_at__lt=q.end_dt
    ).filter(q.contact_q("contact__"))


def missing_won_deals(q: ReportQuery, known: int | None = None) -> list[tuple]:
    """Won deals closed in the period without credit rows yet (see ``DealCredit``; a deal
    has its ``WonDealFact`` exactly when it has them): ``(id, contact_id, closed_at,
    amount, influenced)``, influence probed from the activities — normally none.

    Every ``WonDealFact`` is a won deal's, with its close time and contact (a won deal
    never changes, crm.sales; a deleted deal takes its facts along; a merge re-keys them
    in its transaction), so the period's facts are a subset of its won deals: when both
    are as many, none is missing and the anti-join (every won deal of the period probed,
    ~50 ms at 1M for a year) is skipped. ``known``: the period's facts, when the caller
    counted them (same filters).
    """
    from ..deal_facts import influenced_q

    if known is None:
        known = won_facts(q).count()
    if _won_deals(q).count() == known:  # the deals' (status, closed_at) index only
        return []
    return list(
        _won_deals(q)
        .exclude(Exists(DealCredit.objects.filter(deal_id=OuterRef("pk"))))
        .annotate(i=influenced_q())
        .values_list("id", "contact_id", "closed_at", "amount", "i")
    )


def won_facts(q: ReportQuery):
    """The ``WonDealFact`` rows of the deals won in the period (contact filters applied)."""
    return WonDealFact.objects.filter(closed_at__gte=q.start_dt, closed_at__lt=q.end_dt).filter(
        q.contact_q("contact__")
    )


def attributed_revenue(q: ReportQuery, missing: list | None = None) -> dict[int, Fraction]:
    """METRICS.md line 68: won deal amounts closed in the period credited under the model.

    Choice: a deal's touches are those at or before its ``closed_at``. Served by the day
    rows of the deals' credit rows (``DealCreditDaily``, reports.deal_facts) or, with
    contact filters, by the ``DealCredit`` shape rows of the period's won deals; a won
    deal without rows yet (see the model) is shaped from raw data here, so the figure
    never depends on the upkeep. ``missing``: :func:`missing_won_deals` of ``q`` when the
    caller read them already (else looked for when the period's won deals outnumber
    those with credit rows, which either read counts).
    """
    from ..deal_facts import deal_credits_rows, deal_day_revenue

    if q.has_contact_filters:
        facts = DealCredit.objects.filter(closed_at__gte=q.start_dt, closed_at__lt=q.end_dt).filter(
            q.contact_q("contact__")
        )
        out, credited = _grouped_revenue(facts, q.attribution)
    else:
        out, credited = deal_day_revenue(q.start, q.end, q.attribution)
    if missing is None:
        missing = missing_won_deals(q, known=credited)
    rows = [
        (r.campaign_id, r.touches, r.n, r.first, r.last, r.amount)
        for r in deal_credits_rows([d[:4] for d in missing])
    ]
    for campaign_id, credit in weighted_credits(rows, q.attribution).items():
        out[campaign_id] = out.get(campaign_id, Fraction(0)) + credit
    return out


CENTS = DecimalField(max_digits=20, decimal_places=2)


def _grouped_revenue(facts, model: str) -> tuple[dict[int, Fraction], int]:
    """:func:`weighted_credits` of the credit rows ``facts``, summed in the database per
    campaign × n (a few hundred rows instead of one Fraction sum per row): a row's share
    is linear in its touches and first/last flags, so the amount-weighted sums give the
    same exact total; a campaign gets an entry exactly when one of its rows has a share
    (first/last touch: a flagged row). Also returns the deals (one first-touch row each)."""
    if model not in MODELS:
        raise ValueError(model)
    rows = (
        facts.values("campaign_id", "n")
        .annotate(
            fc=Count("id", filter=Q(first=True)),
            lc=Count("id", filter=Q(last=True)),
            a=Sum("amount", output_field=CENTS),
            at=Sum(ExpressionWrapper(F("amount") * F("touches"), output_field=CENTS)),
            af=Sum("amount", filter=Q(first=True), output_field=CENTS),
            al=Sum("amount", filter=Q(last=True), output_field=CENTS),
        )
        .values_list("campaign_id", "n", "fc", "lc", "a", "at", "af", "al")
        .order_by()
    )
    out: dict[int, Fraction] = defaultdict(Fraction)
    deals = 0
    for campaign_id, n, fc, lc, a, at, af, al in rows:
        deals += fc
        a, at, af, al = (Fraction(v or 0) for v in (a, at, af, al))
        if model == "first_touch":
            if not fc:
                continue
            credit = af
        elif model == "last_touch":
            if not lc:
                continue
            credit = al
        elif n == 0:
            credit = a
        elif model == "linear":
            credit = at / n
        elif n == 1:
            credit = af
        elif n == 2:
            credit = (af + al) / 2
        else:
            credit = Fraction(2, 5) * (af + al) + (at - af - al) / (5 * (n - 2))
        out[campaign_id] += credit
    return dict(out), deals


def attributed_revenue_raw(q: ReportQuery) -> dict[int, Fraction]:
    """:func:`attributed_revenue` from deals and touches (property-test reference)."""
    deals_qs = _won_deals(q)
    deals = list(
        deals_qs.annotate(k=touches_before("closed_at")).values_list(
            "contact_id", "closed_at", "amount", "k"
        )
    )
    if not deals:
        return {}
    touches = campaign_touches(deals_qs.values("contact_id"), max(d[1] for d in deals))
    return attribute([(c, k, amount) for c, _, amount, k in deals], touches, q.attribution)


def cost_report(q: ReportQuery) -> tuple[list[dict], dict, list[dict]]:
    """:func:`cost_per_mql` and :func:`cost_per_mql_by_month` of one period, sharing their
    reads: the cost entries overlapping the period (the same for both) and the emails sent
    per campaign in each month (the period's sends, for the emails-sent split of shared
    entries, are their sum: the clipped months partition the period)."""
    entries = cost_entries(q)
    sent = _sent_by_month(q, entries)  # {} when no entry is split by emails sent
    period_sent = None
    if _split_by_sent(q, entries):
        period_sent = defaultdict(int)
        for by_campaign in sent.values():
            for campaign_id, n in by_campaign.items():
                period_sent[campaign_id] += n
    rows, totals = cost_per_mql(q, entries=entries, sent=period_sent)
    return rows, totals, cost_per_mql_by_month(q, entries=entries, sent=sent)


def cost_per_mql(
    q: ReportQuery, *, entries: list | None = None, sent: dict | None = None
) -> tuple[list[dict], dict]:
    """The cost-per-MQL report (METRICS.md lines 62–70), one row per program plus totals.

    MQLs/SQLs/customers are attributed credits (fractional, METRICS.md line 67) of the
    entries into those stages in the period, under ``q.attribution``; new leads are
    contacts the program first acquired (``acquired_by``) created in the period (line 64).
    Contact filters (source, owner, segment) restrict these contact figures; campaign and
    channel restrict the rows. Costs are never filtered by contact. ``entries`` and
    ``sent``: as :func:`program_costs` takes them, when the caller read them.
    """
    cq = q.contact_filters_only()
    costs = program_costs(q, entries, sent)
    credit = stage_credits(cq, q.attribution)
    revenue = attributed_revenue(cq)
    if cq.has_contact_filters:
        new = dict(
            new_leads_qs(cq)
            .filter(acquired_by__isnull=False)
            .values("acquired_by_id")
            .annotate(n=Count("id"))
            .values_list("acquired_by_id", "n")
        )
    else:  # per day × acquiring campaign (reports.credit_facts)
        new = new_leads_by_campaign(q.start, q.end)
    ids = set(costs) | set(new) | set(revenue)
    for c in credit.values():
        ids |= set(c)
    camp_q = Q(id__in=[i for i in ids if i]) & q.campaign_q()
    campaigns = {c.id: c for c in Campaign.objects.filter(camp_q)}
    show_none = NO_CAMPAIGN in ids and not (q.campaign or q.channel)
    keys = sorted(campaigns, key=lambda i: campaigns[i].name.lower()) + (
        [NO_CAMPAIGN] if show_none else []
    )
    rows = [
        _row(
            cid,
            campaigns.get(cid),
            costs.get(cid),
            new.get(cid, 0),
            {s: c.get(cid, Fraction(0)) for s, c in credit.items()},
            revenue.get(cid, Fraction(0)),
        )
        for cid in keys
    ]

    def total(stage_map: dict) -> Fraction:
        return sum((v for k, v in stage_map.items() if k in keys), Fraction(0))

    tot_cost = {
        "program_cost": sum((costs[k]["program_cost"] for k in keys if k in costs), Fraction(0)),
        "variable_cost": sum((costs[k]["variable_cost"] for k in keys if k in costs), Fraction(0)),
    }
    totals = _row(
        None,
        None,
        tot_cost,
        sum(new.get(k, 0) for k in keys),
        {s: total(c) for s, c in credit.items()},
        total(revenue),
    )
    for k in ("campaign_id", "campaign", "channel"):
        totals.pop(k)
    return rows, totals


def _credit(value: Fraction) -> float:
    return round(float(value), 2)


def _per(cost: Fraction, n: Fraction | int) -> Decimal | None:
    return None if not n else to_money(cost / Fraction(n))


def _row(cid, camp, cost, new_leads, credit, revenue) -> dict:
    cost = cost or {"program_cost": Fraction(0), "variable_cost": Fraction(0)}
    pc, vc = cost["program_cost"], cost["variable_cost"]
    roi = None if not pc else float((revenue - pc) / pc)
    return {
        "campaign_id": cid or None,
        "campaign": camp.name if camp else "(no campaign)",
        "channel": camp.channel if camp else "",
        "program_cost": to_money(pc),
        "variable_cost": to_money(vc),
        "new_leads": new_leads,
        "cost_per_new_lead": _per(pc, new_leads),
        "mqls": _credit(credit[Stage.MQL]),
        "cost_per_mql": _per(pc, credit[Stage.MQL]),
        "cost_per_mql_variable": _per(vc, credit[Stage.MQL]),
        "sqls": _credit(credit[Stage.SQL]),
        "cost_per_sql": _per(pc, credit[Stage.SQL]),
        "customers": _credit(credit[Stage.CUSTOMER]),
        "cost_per_customer": _per(pc, credit[Stage.CUSTOMER]),
        "attributed_revenue": to_money(revenue),
        "roi": roi,
    }


def _credit_rows(cq: ReportQuery, *stages: str):
    """``TransitionCredit`` rows of the entries into ``stages`` in the period (contact filters
    applied), read through the ``(to_stage, at)`` index."""
    return TransitionCredit.objects.filter(
        to_stage__in=stages, at__gte=cq.start_dt, at__lt=cq.end_dt
    ).filter(cq.contact_q("contact__"))


def stage_credits(cq: ReportQuery, model: str, stages=CREDIT_STAGES) -> dict[str, dict]:
    """Attributed credits per stage and campaign of the entries in the period (METRICS.md
    "attribution"): one grouped query for all stages, of the day rows without contact
    filters (reports.credit_facts), else of the per-change credit facts."""
    if cq.has_contact_filters:
        grouped = credits_from_facts(_credit_rows(cq, *stages), model, "to_stage")
    else:
        grouped = day_credits(stages, cq.start, cq.end, model, {"to_stage": "to_stage"})
    return {stage: dict(grouped.get((str(stage),), {})) for stage in stages}


def stage_credits_raw(cq: ReportQuery, model: str, stages=CREDIT_STAGES) -> dict[str, dict]:
    """:func:`stage_credits` from the transitions and touches (property-test reference)."""
    transitions = entries(cq, *stages)
    events = list(
        transitions.annotate(k=touches_before("at")).values_list(
            "contact_id", "at", "to_stage", "k"
        )
    )
    out: dict[str, dict] = {stage: {} for stage in stages}
    if not events:
        return out
    touches = campaign_touches(transitions.values("contact_id"), max(e[1] for e in events))
    for stage in stages:
        out[stage] = dict(
            attribute([(c, k, 1) for c, _, s, k in events if s == stage], touches, model)
        )
    return out


def mql_credits_by_month(q: ReportQuery, *, served: bool | None = None) -> dict:
    """MQL credits per campaign of each (clipped) month of the period, keyed by the month's
    clipped start instant: one grouped query of the day rows (reports.credit_facts), or,
    with contact filters (or ``served`` False), of the per-change credit facts."""
    from ..query import day_start
    from .lifecycle import month_of, months

    cq = q.contact_filters_only()
    if served is None:
        served = not cq.has_contact_filters
    if not served:
        return credits_from_facts(
            _credit_rows(cq, Stage.MQL).annotate(m=month_of("at", q)), q.attribution, "m"
        )
    month = Case(
        *[When(day__gte=s.date(), day__lt=e.date(), then=Value(s.date())) for _, s, e in months(q)],
        output_field=DateField(),
    )
    return {
        (day_start(k[0]),): v
        for k, v in day_credits([Stage.MQL], q.start, q.end, q.attribution, {"m": month}).items()
    }


def cost_per_mql_by_month(
    q: ReportQuery, *, entries: list | None = None, sent: dict | None = None
) -> list[dict]:
    """Total cost per MQL for each calendar month of the period (the chart).

    Each month's figure is the cost-per-MQL report's total line for that month: program
    cost of the shown campaigns ÷ their MQL credits (plus the "(no campaign)" credit when
    no campaign/channel filter applies). The MQL credits of all months come from one
    grouped query of the credit facts (a change's credit depends only on its touches).
    ``entries`` and ``sent``: :func:`cost_entries` and :func:`_sent_by_month` of ``q``
    when the caller read them.
    """
    from .lifecycle import months

    by_month = mql_credits_by_month(q)
    shown = set(Campaign.objects.filter(q.campaign_q()).values_list("id", flat=True))
    show_none = not (q.campaign or q.channel)
    if entries is None:
        entries = cost_entries(q)  # once for all months, not two queries per month
        sent = _sent_by_month(q, entries)
    sent = sent or {}
    out = []
    for first, s, e in months(q):
        mq = q.__class__(
            start=s.date(),
            end=e.date(),
            campaign=q.campaign,
            channel=q.channel,
            source=q.source,
            segment=q.segment,
            owner=q.owner,
            attribution=q.attribution,
        )
        credit = by_month.get((s,), {})
        mqls = sum((v for k, v in credit.items() if k in shown), Fraction(0))
        if show_none:
            mqls += credit.get(NO_CAMPAIGN, Fraction(0))
        cost = sum(
            (
                v["program_cost"]
                for k, v in program_costs(mq, entries, sent.get(s.date(), {})).items()
                if k in shown
            ),
            Fraction(0),
        )
        out.append({"month": first.strftime("%Y-%m"), "cost_per_mql": _per(cost, mqls)})
    return out


def _split_by_sent(q: ReportQuery, entries: list) -> bool:
    """Whether a shared entry split by emails sent overlaps the period."""
    return any(
        e.shared
        and e.split == CampaignCost.Split.EMAILS_SENT
        and e.period_start < q.end
        and e.period_end >= q.start
        for e in entries
    )


def _sent_by_month(q: ReportQuery, entries: list) -> dict:
    """Emails sent per campaign in each clipped month of the period (keyed by its first
    day), as :func:`program_costs` reads them per month for the emails-sent split of
    shared entries: one grouped rollup query instead of one per month, and none when no
    such entry overlaps the period."""
    from ..models import EmailDaily
    from .lifecycle import months

    if not _split_by_sent(q, entries):
        return {}
    month = Case(
        *[When(day__gte=s.date(), day__lt=e.date(), then=Value(s.date())) for _, s, e in months(q)],
        output_field=DateField(),
    )
    out: dict = defaultdict(dict)
    for m, campaign_id, n in (
        EmailDaily.objects.filter(day__gte=q.start, day__lt=q.end)
        .annotate(m=month)
        .values("m", "campaign_id")
        .annotate(n=Sum("sent"))
        .values_list("m", "campaign_id", "n")
        .order_by()
    ):
        out[m][campaign_id] = n or 0
    return out
