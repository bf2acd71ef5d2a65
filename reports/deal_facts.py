"""Keeping ``DealCredit`` current (see its docstring in reports.models).

Recomputed per won deal from raw data (idempotent): when its contact changes stage (a
deal is won together with the move to ``customer``), when its contact records a campaign
touch at or before the close (a late or back-dated touch), and in rebuilds/reconciliation.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Exists, OuterRef

from crm.models import Activity, Deal

from .fact_writes import facts_insert
from .lifecycle_facts import SHAPE_FIELDS, touch_shapes
from .models import DealCredit, WonDealFact

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
    and their :class:`WonDealFact` (a deal has both or neither: the revenue report serves
    from them the deals that have credit rows and computes the others). ``won_facts``
    False: migration 0007, before that table."""
    contact_ids = sorted(set(contact_ids))
    for i in range(0, len(contact_ids), CHUNK):
        chunk = contact_ids[i : i + CHUNK]
        qs = Deal.objects.filter(contact_id__in=chunk, status=Deal.Status.WON)
        if since is not None:
            qs = qs.filter(closed_at__gte=since)
        deals = list(won_deals(qs))
        DealCredit.objects.filter(deal_id__in=[d[0] for d in deals]).delete()
        if won_facts:
            WonDealFact.objects.filter(deal_id__in=[d[0] for d in deals]).delete()
        if since is None:  # also drop rows of deals that are no longer won
            DealCredit.objects.filter(contact_id__in=chunk).delete()
            if won_facts:
                WonDealFact.objects.filter(contact_id__in=chunk).delete()
        facts_insert(DealCredit, _rows(deals))
        if won_facts:
            facts_insert(WonDealFact, _won_facts([d[0] for d in deals]), fields=WON_FIELDS)


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
