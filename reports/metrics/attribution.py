"""Attribution of stage changes and revenue to programs (METRICS.md line 67 "attribution").

Credits are exact fractions (``fractions.Fraction``) that sum to 1 per stage change (or to
the deal amount for revenue) and are only rounded for display.

Choices: a touch is any campaign-tagged activity (as METRICS.md says, including sends)
at or before the change; all four models look only at touches at or before the change,
so "first touch" is the first campaign touch before the change; ties in time are
ordered by activity id; a change with no such touch goes to ``NO_CAMPAIGN`` (0).
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from crm.models import Activity

NO_CAMPAIGN = 0
MODELS = ("first_touch", "last_touch", "linear", "u_shaped")


def split(touches: list[int], model: str) -> dict[int, Fraction]:
    """Credit per campaign for one change given its ordered touches' campaign ids."""
    n = len(touches)
    out: dict[int, Fraction] = defaultdict(Fraction)
    if n == 0:
        out[NO_CAMPAIGN] += 1
    elif model == "first_touch":
        out[touches[0]] += 1
    elif model == "last_touch":
        out[touches[-1]] += 1
    elif model == "linear":
        for c in touches:
            out[c] += Fraction(1, n)
    elif model == "u_shaped":
        if n == 1:
            out[touches[0]] += 1
        elif n == 2:
            out[touches[0]] += Fraction(1, 2)
            out[touches[1]] += Fraction(1, 2)
        else:
            out[touches[0]] += Fraction(2, 5)
            out[touches[-1]] += Fraction(2, 5)
            for c in touches[1:-1]:
                out[c] += Fraction(1, 5) / (n - 2)
    else:
        raise ValueError(model)
    return out


def touches_before(at_field: str) -> Coalesce:
    """Annotation: how many campaign touches the row's contact had at or before ``at_field``.

    With the touches ordered by (time, id), a change's touches are exactly the first
    ``touches_before`` of them, so only campaign ids (no timestamps) need to be read.
    """
    return Coalesce(
        Subquery(
            Activity.objects.filter(
                contact_id=OuterRef("contact_id"),
                campaign__isnull=False,
                occurred_at__lte=OuterRef(at_field),
            )
            .values("contact_id")
            .annotate(n=Count("id"))
            .values("n")[:1],
            output_field=IntegerField(),
        ),
        0,
    )


def campaign_touches(contact_ids_qs, until) -> dict[int, list[int]]:
    """Campaign ids of each contact's touches up to ``until``, in (time, id) order. One query."""
    rows = (
        Activity.objects.filter(
            contact_id__in=contact_ids_qs, campaign__isnull=False, occurred_at__lte=until
        )
        .order_by("contact_id", "occurred_at", "id")
        .values_list("contact_id", "campaign_id")
    )
    out: dict[int, list[int]] = {}
    for contact_id, campaign_id in rows:
        out.setdefault(contact_id, []).append(campaign_id)
    return out


def attribute(events: list[tuple[int, int, object]], touches, model: str) -> dict:
    """Sum credits per campaign over events ``(contact_id, touches_before, weight)``.

    ``weight`` is 1 for a stage change and the amount for revenue; returns Fractions.
    Equal ``(touches, k)`` shapes give equal credits, so each distinct shape is split once.
    """
    totals: dict[int, Fraction] = defaultdict(Fraction)
    shapes: dict[tuple, Fraction] = defaultdict(Fraction)
    for contact_id, k, weight in events:
        shapes[tuple(touches.get(contact_id, [])[:k])] += Fraction(weight)
    for camps, weight in shapes.items():
        for campaign_id, credit in split(list(camps), model).items():
            totals[campaign_id] += credit * weight
    return totals


def attribute_transitions(transitions_qs, model: str) -> dict[int, Fraction]:
    """Credits per campaign for the stage changes in ``transitions_qs`` (two queries)."""
    events = list(
        transitions_qs.annotate(k=touches_before("at")).values_list("contact_id", "at", "k")
    )
    if not events:
        return {}
    until = max(at for _, at, _ in events)
    touches = campaign_touches(transitions_qs.values("contact_id"), until)
    return attribute([(c, k, 1) for c, _, k in events], touches, model)


def credits_from_facts(credit_qs, model: str, *group: str) -> dict:
    """Credits per campaign from ``reports.TransitionCredit`` rows, grouped by ``group``.

    Exact, like :func:`split` summed over the changes: with per change ``n`` touches, the
    campaign's ``touches`` and whether it holds the first/last touch, a campaign earns
    first touch 1·[first]; last touch 1·[last]; linear touches/n; U-shaped 1·[first] when
    n = 1, ([first] + [last])/2 when n = 2, else 2/5·[first] + 2/5·[last] +
    1/5·(touches − [first] − [last])/(n − 2). A change without a touch (n = 0) gives 1 to
    ``NO_CAMPAIGN``. Summing per (campaign, n) keeps the fractions exact in a few rows.
    Returns ``{group values: {campaign_id: Fraction}}`` (key ``()`` without ``group``).
    """
    if model not in MODELS:
        raise ValueError(model)
    out: dict[tuple, dict[int, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    if model in ("first_touch", "last_touch"):
        flag = "first" if model == "first_touch" else "last"
        rows = (
            credit_qs.filter(**{flag: True})
            .values(*group, "campaign_id")
            .annotate(c=Count("id"))
            .order_by()
        )
        for r in rows:
            out[tuple(r[g] for g in group)][r["campaign_id"]] += r["c"]
        return out
    rows = (
        credit_qs.values(*group, "campaign_id", "n")
        .annotate(
            t=Sum("touches"),
            c=Count("id"),
            f=Count("id", filter=Q(first=True)),
            lt=Count("id", filter=Q(last=True)),
        )
        .order_by()
    )
    for r in rows:
        credit = shape_credit(model, r["n"], r["t"], r["f"], r["lt"], r["c"])
        out[tuple(r[g] for g in group)][r["campaign_id"]] += credit
    return out


def shape_credit(model: str, n: int, t, f, lt, c) -> Fraction:
    """A campaign's credit from summed shape figures (see :func:`credits_from_facts`):
    ``t`` its touches, ``f``/``lt`` first/last flags, ``c`` the changes (or weights)."""
    t, f, lt, c = (Fraction(v) for v in (t, f, lt, c))
    if model == "first_touch":
        return f
    if model == "last_touch":
        return lt
    if n == 0:
        return c
    if model == "linear":
        return t / n
    if n == 1:
        return f
    if n == 2:
        return (f + lt) / 2
    return Fraction(2, 5) * (f + lt) + (t - f - lt) / (5 * (n - 2))


def weighted_credits(rows, model: str) -> dict[int, Fraction]:
    """Credits per campaign of ``(campaign_id, touches, n, first, last, weight)`` shape rows
    (e.g. won deals' amounts): each row's weighted figures through :func:`shape_credit`."""
    out: dict[int, Fraction] = defaultdict(Fraction)
    for campaign_id, touches, n, first, last, weight in rows:
        share = shape_credit(model, n, touches, int(first), int(last), 1)
        if share:  # as split(): a campaign without a share gets no entry
            out[campaign_id] += share * Fraction(weight)
    return out
