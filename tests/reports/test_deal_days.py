"""The deal day rows (reports.deal_facts ``DealCreditDaily``) credit attributed revenue
exactly, to the cent, under every model: large amounts whose folded numerators exceed 64
bits (kept as limbs), shapes folded (n ≤ FOLD_N) and kept (n > FOLD_N), rows added and
taken out by the upkeep, and a rebuild giving the same values."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from crm.models import Deal
from reports.credit_facts import FOLD_N
from reports.deal_facts import (
    _DAY_FIELDS,
    DAY_COLS,
    DAY_KEY,
    _normal,
    deal_day_revenue,
    deal_days_apply,
    deal_days_rebuild,
    deal_days_reconcile,
)
from reports.metrics.attribution import MODELS, weighted_credits
from reports.models import DealCredit, DealCreditDaily
from tests.factories import ContactFactory, DealFactory

from .factories import at

pytestmark = pytest.mark.django_db

# (campaign, touches, n, first, last) per deal: no touch, folded shapes, longer ones
SHAPES = [
    [(0, 0, 0, True, True)],
    [(3, 1, 1, True, True)],
    [(3, 1, 2, True, False), (4, 1, 2, False, True)],
    [(3, 2, 5, True, False), (4, 2, 5, False, False), (5, 1, 5, False, True)],
    [(4, FOLD_N - 1, FOLD_N, True, False), (5, 1, FOLD_N, False, True)],
    [(3, 20, FOLD_N + 12, True, True), (5, FOLD_N - 8, FOLD_N + 12, False, False)],
]
AMOUNTS = [Decimal("999999999999.99"), Decimal("0.01"), Decimal("0.00"), Decimal("12345.67")]


def _stored():
    return _normal(
        {
            tuple(r[:3]): dict(zip(DAY_COLS, r[3:], strict=True))
            for r in DealCreditDaily.objects.values_list(*DAY_KEY, *DAY_COLS)
        }
    )


def _tuples(rows):
    return [tuple(getattr(r, f) for f in _DAY_FIELDS) for r in rows]


def _want(rows, model):
    return weighted_credits(
        [(r.campaign_id, r.touches, r.n, r.first, r.last, r.amount) for r in rows], model
    )


def test_deal_day_rows_credit_every_model_exactly():
    contact = ContactFactory()
    rows = []
    for i, shape in enumerate(SHAPES * 2):
        closed = at("2025-03-01") + timedelta(days=i % 3, hours=5)
        deal = DealFactory(
            contact=contact,
            amount=AMOUNTS[i % len(AMOUNTS)],
            status=Deal.Status.WON,
            created_at=closed - timedelta(days=9),
            closed_at=closed,
        )
        rows += [
            DealCredit(
                deal=deal,
                contact=contact,
                closed_at=closed,
                amount=deal.amount,
                campaign_id=c,
                touches=t,
                n=n,
                first=f,
                last=lt,
            )
            for c, t, n, f, lt in shape
        ]
    DealCredit.objects.bulk_create(rows)
    deal_days_apply(old=[], new=_tuples(rows))
    start, end = date(2025, 3, 1), date(2025, 3, 4)
    for model in MODELS:
        credits, deals = deal_day_revenue(start, end, model)
        assert credits == _want(rows, model), model
        assert deals == len(SHAPES) * 2
    assert deal_days_reconcile() == {}
    upkept = _stored()
    deal_days_rebuild()
    assert _stored() == upkept
    # a day's first deal taken out (the rebuilt rows hold other limbs than the upkept ones)
    gone = [r for r in rows if r.closed_at.day == 1]
    deal_days_apply(old=_tuples(gone), new=[])
    DealCredit.objects.filter(pk__in=[r.pk for r in gone]).delete()
    kept = [r for r in rows if r.closed_at.day != 1]
    for model in MODELS:
        assert deal_day_revenue(start, end, model)[0] == _want(kept, model), model
    assert deal_days_reconcile() == {}
    deal_days_apply(old=_tuples(kept), new=[])
    assert deal_day_revenue(start, end, "linear") == ({}, 0)
    assert _stored() == {}
