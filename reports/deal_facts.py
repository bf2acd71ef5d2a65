"""Keeping ``DealCredit`` current (see its docstring in reports.models), with its day rows
``DealCreditDaily`` and the ``WonDealFact`` rows.

Recomputed per won deal from raw data (idempotent): when its contact changes stage (a
deal is won together with the move to ``customer``), when its contact records a campaign
touch at or before the close (a late or back-dated touch), and in rebuilds/reconciliation.
The day rows move by the difference of the deleted and inserted credit rows (work
proportional to the deals recomputed); rebuilt and reconciled from the credit rows.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from fractions import Fraction

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.db.models.functions import TruncDate

from crm.models import Activity, Deal

from .credit_facts import DENOMINATOR, FOLD_N, _day, denominator, shape_numerators
from .fact_writes import counts_upsert, facts_insert
from .models import DealCredit, DealCreditDaily, WonDealFact
from .query import site_tz
from .rollups import snapshot_diff
from .transition_credits import SHAPE_FIELDS, touch_shapes

CHUNK = 2000


def _rows(deals: list[tuple[int, int, object, object]]) -> list[DealCredit]:
    shapes = touch_shapes([(c, closed_at) for _, c, closed_at, _ in deals])
    return [
        DealCredit(
            deal_id=pk,
            contact_id=contact_id,
            closed_at=closed_at,
            amount=amount,
            **dict(zip(SHAPE_FIELDS, shape, strict=True)),
        )
        for (pk, contact_id, closed_at, amount), rows in zip(deals, shapes, strict=True)
        for shape in rows
    ]


def won_deals(qs=None):
    qs = Deal.objects.filter(status=Deal.Status.WON) if qs is None else qs
    return qs.values_list("id", "contact_id", "closed_at", "amount")


def deal_credits_rows(deals) -> list[DealCredit]:
    """Unsaved credit rows of ``(id, contact_id, closed_at, amount)`` won deals."""
    return _rows(list(deals))


def influenced_q() -> Exists:
    """A deal's contact had a campaign touch before the deal was created (METRICS.md line
    70, marketing-influenced revenue)."""
    return Exists(
        Activity.objects.filter(
            contact_id=OuterRef("contact_id"),
            campaign__isnull=False,
            occurred_at__lt=OuterRef("created_at"),
        )
    )


def _won_facts(deal_ids) -> list[tuple]:
    if not deal_ids:
        return []
    return list(
        Deal.objects.filter(pk__in=deal_ids)
        .annotate(i=influenced_q())
        .values_list("pk", "contact_id", "closed_at", "amount", "i")
    )


def won_deal_facts_rebuild() -> None:
    """Recompute every won deal's :class:`WonDealFact` (demo seeding, migrations)."""
    with transaction.atomic():
        WonDealFact.objects.all().delete()
        ids = list(DealCredit.objects.values_list("deal_id", flat=True).distinct())
        for i in range(0, len(ids), CHUNK):
            facts_insert(WonDealFact, _won_facts(ids[i : i + CHUNK]), fields=WON_FIELDS)


WON_FIELDS = ("deal", "contact", "closed_at", "amount", "influenced")


def deal_credits_refresh(*, contact_ids, since=None, won_facts: bool = True) -> None:
    """Recompute the credit rows of these contacts' won deals (closed at/after ``since``),
    their day rows and their :class:`WonDealFact` (a deal has both or neither: the revenue
    report serves from them the deals that have credit rows and computes the others).
    ``won_facts`` False: migration 0007, before the day rows and won-deal facts."""
    contact_ids = sorted(set(contact_ids))
    for i in range(0, len(contact_ids), CHUNK):
        chunk = contact_ids[i : i + CHUNK]
        qs = Deal.objects.filter(contact_id__in=chunk, status=Deal.Status.WON)
        if since is not None:
            qs = qs.filter(closed_at__gte=since)
        deals = list(won_deals(qs))
        ids = [d[0] for d in deals]
        # since None: also the rows of deals that are no longer won
        gone = chunk if since is None else []
        rows = _rows(deals)
        if not won_facts:
            DealCredit.objects.filter(Q(deal_id__in=ids) | Q(contact_id__in=gone)).delete()
            facts_insert(DealCredit, rows)
            continue
        old = _credits_delete(deal_ids=ids, contact_ids=gone)
        WonDealFact.objects.filter(Q(deal_id__in=ids) | Q(contact_id__in=gone)).delete()
        facts_insert(DealCredit, rows)
        deal_days_apply(old=old, new=[tuple(getattr(r, f) for f in _DAY_FIELDS) for r in rows])
        facts_insert(WonDealFact, _won_facts(ids), fields=WON_FIELDS)


def deal_credits_snapshot(contact_ids) -> dict:
    out = {
        r[:2]: r[2:]
        for r in DealCredit.objects.filter(contact_id__in=contact_ids).values_list(
            "deal_id", "campaign_id", "closed_at", "amount", "touches", "n", "first", "last"
        )
    }
    out.update(
        ((deal_id, "influenced"), influenced)
        for deal_id, influenced in WonDealFact.objects.filter(
            contact_id__in=contact_ids
        ).values_list("deal_id", "influenced")
    )
    return out


# --- DealCreditDaily -----------------------------------------------------------------------

_DAY_FIELDS = ("closed_at", "campaign_id", "amount", "touches", "n", "first", "last")
DAY_KEY = ["day", "campaign_id", "n"]
DAY_COLS = [
    "credits",
    "first",
    "last",
    "amount",
    "amount_first",
    "amount_last",
    "amount_touches",
    *(f"{m}_{i}" for m in ("linear", "u_shaped") for i in range(3)),
]
LIMB = 31  # bits per limb: a sum of 2³² limbs still fits a signed 64-bit column
_MASK = (1 << LIMB) - 1


def _limbs(value: int) -> tuple[int, int, int]:
    return value & _MASK, (value >> LIMB) & _MASK, value >> (2 * LIMB)


def _unlimb(l0, l1, l2) -> int:
    """The value of summed limbs (any integers: the sum is linear in them)."""
    return int(l0) + (int(l1) << LIMB) + (int(l2) << (2 * LIMB))


def _cents(amount) -> int:
    return int(Decimal(amount) * 100)  # amounts have two decimal places


def _day_add(out: dict, day, campaign_id, n, t, f, lt, cents, credits, limbs=True) -> None:
    """Add ``credits`` credit rows of one shape and summed ``cents`` to the day rows ``out``
    (signed: a negative ``credits`` and ``cents`` take them out). ``limbs`` False: the
    folded credits as whole values (``linear``, ``u_shaped``) instead of limbs."""
    folded = n <= FOLD_N
    counts = out.setdefault((day, campaign_id, 0 if folded else n), Counter())
    sign = 1 if credits > 0 else -1
    counts["credits"] += credits
    counts["first"] += credits * f
    counts["last"] += credits * lt
    counts["amount"] += cents
    counts["amount_first"] += cents * f
    counts["amount_last"] += cents * lt
    counts["amount_touches"] += cents * t
    if not folded:
        return
    for name, share in zip(
        ("linear", "u_shaped"), shape_numerators(n, t, f, lt, 1, DENOMINATOR), strict=True
    ):
        if not limbs:
            counts[name] += share * cents
            continue
        for i, limb in enumerate(_limbs(share * cents * sign)):
            counts[f"{name}_{i}"] += sign * limb


def _day_counts(rows, sign: int, out: dict) -> None:
    """Add ``_DAY_FIELDS`` tuples of credit rows to the day-row deltas ``out``."""
    for closed_at, campaign_id, amount, t, n, first, last in rows:
        f, lt = int(first), int(last)
        _day_add(out, _day(closed_at), campaign_id, n, t, f, lt, sign * _cents(amount), sign)


def deal_days_apply(*, old, new) -> None:
    """Replace the credit rows ``old`` by ``new`` in the day rows (one upsert)."""
    deltas: dict[tuple, Counter] = {}
    _day_counts(old, -1, deltas)
    _day_counts(new, 1, deltas)
    counts_upsert(DealCreditDaily, key=DAY_KEY, rows=deltas, fields=DAY_COLS)


def _credits_delete(*, deal_ids, contact_ids) -> list[tuple]:
    """Delete the credit rows of these deals and contacts and return them as
    ``_DAY_FIELDS`` tuples: ``DELETE … RETURNING`` on PostgreSQL (no extra query),
    read-then-delete elsewhere; no query when both are empty."""
    deal_ids, contact_ids = list(deal_ids), list(contact_ids)
    if not deal_ids and not contact_ids:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {DealCredit._meta.db_table} "  # noqa: S608
                "WHERE deal_id = ANY(%s) OR contact_id = ANY(%s) "
                f"RETURNING {', '.join(_DAY_FIELDS)}",
                [deal_ids, contact_ids],
            )
            return cursor.fetchall()
    qs = DealCredit.objects.filter(Q(deal_id__in=deal_ids) | Q(contact_id__in=contact_ids))
    rows = list(qs.values_list(*_DAY_FIELDS))
    qs.delete()
    return rows


def _day_recount(limbs: bool = True) -> dict[tuple, Counter]:
    """Day rows from the credit rows, grouped in the database per day × campaign × shape."""
    out: dict[tuple, Counter] = {}
    for day, campaign_id, n, t, first, last, c, amount in (
        DealCredit.objects.annotate(day=TruncDate("closed_at", tzinfo=site_tz()))
        .values("day", "campaign_id", "n", "touches", "first", "last")
        .annotate(c=Count("id"), a=Sum("amount"))
        .values_list("day", "campaign_id", "n", "touches", "first", "last", "c", "a")
        .order_by()
    ):
        _day_add(out, day, campaign_id, n, t, int(first), int(last), _cents(amount), c, limbs)
    return out


def _normal(rows: dict[tuple, Counter]) -> dict[tuple, tuple]:
    """Day rows as comparable values (limbs summed back; rows without a credit row left
    out): a rebuilt row holds the limbs of the sum, an upkept one the sum of the limbs."""
    out = {}
    for key, c in rows.items():
        values = tuple(int(c.get(k, 0)) for k in DAY_COLS[:7]) + tuple(
            c[m] if m in c else _unlimb(*(c.get(f"{m}_{i}", 0) for i in range(3)))
            for m in ("linear", "u_shaped")
        )
        if any(values):
            out[key] = values
    return out


def deal_days_rebuild() -> None:
    rows = _day_recount()
    with transaction.atomic():
        DealCreditDaily.objects.all().delete()
        DealCreditDaily.objects.bulk_create(
            [
                DealCreditDaily(**dict(zip(DAY_KEY, k, strict=True)), **counts)
                for k, counts in rows.items()
            ],
            batch_size=5000,
        )


def deal_days_reconcile() -> dict:
    """Compare the day rows with a recount of the credit rows (rebuilding them on a
    difference); returns the differences."""
    stored = {
        tuple(r[:3]): Counter(dict(zip(DAY_COLS, r[3:], strict=True)))
        for r in DealCreditDaily.objects.values_list(*DAY_KEY, *DAY_COLS)
    }
    have, want = _normal(stored), _normal(_day_recount(limbs=False))
    diff = snapshot_diff(have, want, "facts")
    if diff:
        deal_days_rebuild()
    return diff


def deal_day_revenue(start, end, model: str) -> tuple[dict[int, Fraction], int]:
    """Attributed revenue per campaign of the deals won in ``[start, end)`` (site days)
    under ``model``, and how many deals have credit rows: one grouped read of the day
    rows. Exactly ``cost._grouped_revenue`` over the same credit rows, keys included (a
    campaign has an entry when one of its rows has a share under the model)."""
    from .metrics.attribution import MODELS

    if model not in MODELS:
        raise ValueError(model)
    rows = [
        tuple(int(v or 0) for v in r)
        for r in DealCreditDaily.objects.filter(day__gte=start, day__lt=end)
        .values("campaign_id", "n")
        .annotate(**{f"s_{k}": Sum(k) for k in DAY_COLS})
        .values_list("campaign_id", "n", *(f"s_{k}" for k in DAY_COLS))
        .order_by()
    ]
    denom = denominator(max((r[1] for r in rows if r[2]), default=0))
    scale = denom // DENOMINATOR
    acc: dict[int, int] = {}
    deals = 0
    for campaign_id, n, c, f, lt, a, af, al, at, *limbs in rows:
        deals += f
        if not c:  # no credit row left (a row emptied by the upkeep)
            continue
        if model == "first_touch":
            if not f:
                continue
            num = af * denom
        elif model == "last_touch":
            if not lt:
                continue
            num = al * denom
        elif n == 0:  # folded: exact numerators over 100 × DENOMINATOR
            num = _unlimb(*(limbs[:3] if model == "linear" else limbs[3:])) * scale
        else:
            linear, u_shaped = shape_numerators(n, at, af, al, a, denom)
            num = linear if model == "linear" else u_shaped
        acc[campaign_id] = acc.get(campaign_id, 0) + num
    return {k: Fraction(v, 100 * denom) for k, v in acc.items()}, deals
