"""Keeping ``DealCredit`` current (see its docstring in reports.models).

Recomputed per won deal from raw data (idempotent): when its contact changes stage (a
deal is won together with the move to ``customer``), when its contact records a campaign
touch at or before the close (a late or back-dated touch), and in rebuilds/reconciliation.
"""

from __future__ import annotations

from crm.models import Deal

from .fact_writes import facts_insert
from .lifecycle_facts import SHAPE_FIELDS, touch_shapes
from .models import DealCredit

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


def deal_credits_refresh(*, contact_ids, since=None) -> None:
    """Recompute the credit rows of these contacts' won deals (closed at/after ``since``)."""
    contact_ids = sorted(set(contact_ids))
    for i in range(0, len(contact_ids), CHUNK):
        chunk = contact_ids[i : i + CHUNK]
        qs = Deal.objects.filter(contact_id__in=chunk, status=Deal.Status.WON)
        if since is not None:
            qs = qs.filter(closed_at__gte=since)
        deals = list(won_deals(qs))
        DealCredit.objects.filter(deal_id__in=[d[0] for d in deals]).delete()
        if since is None:  # also drop rows of deals that are no longer won
            DealCredit.objects.filter(contact_id__in=chunk).delete()
        facts_insert(DealCredit, _rows(deals))


def deal_credits_snapshot(contact_ids) -> dict:
    return {
        r[:2]: r[2:]
        for r in DealCredit.objects.filter(contact_id__in=contact_ids).values_list(
            "deal_id", "campaign_id", "closed_at", "amount", "touches", "n", "first", "last"
        )
    }
