"""Keeping ``TransitionCredit`` current: each stage change's campaign touches.

Per credited change (MQL, SQL, customer), one row per campaign of the contact's touches at
or before the change — its touch count, the change's touch count, and whether it holds the
first / last touch — from which every attribution model's credit follows exactly
(reports.metrics.attribution). Recomputed from raw data by the lifecycle upkeep
(reports.lifecycle_facts) and for won deals by reports.deal_facts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict

from django.db import connection

from crm.models import Activity, Stage

from .credit_facts import credit_daily_apply, credit_rows_delete
from .fact_writes import facts_insert
from .models import TransitionCredit

CREDIT_STAGES = (Stage.MQL, Stage.SQL, Stage.CUSTOMER)
CHUNK = 2000  # transitions per statement (SQLite's bound-parameter limit)


def touch_shapes(items: list[tuple[int, object]]) -> list[list[tuple[int, int, int, bool, bool]]]:
    """Per ``(contact_id, at)`` item: ``(campaign_id, touches, n, first, last)`` of its
    contact's campaign touches at or before ``at`` (``[(0, 0, 0, True, True)]`` if none).

    One read of the contacts' campaign touches up to the latest item, in (time, id) order
    (METRICS.md "attribution": ties in time are ordered by activity id).
    """
    if not items:
        return []
    if connection.vendor == "postgresql":
        return _touch_shapes_sql(items)
    touches: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
    for contact_id, campaign_id, occurred_at in (
        Activity.objects.filter(
            contact_id__in={c for c, _ in items},
            campaign__isnull=False,
            occurred_at__lte=max(at for _, at in items),
        )
        .order_by("contact_id", "occurred_at", "id")
        .values_list("contact_id", "campaign_id", "occurred_at")
    ):
        times, camps = touches[contact_id]
        times.append(occurred_at)
        camps.append(campaign_id)
    out = []
    for contact_id, at in items:
        times, camps = touches.get(contact_id, ([], []))
        seq = camps[: bisect_right(times, at)]
        if not seq:
            out.append([(0, 0, 0, True, True)])
            continue
        out.append(
            [
                (campaign_id, k, len(seq), seq[0] == campaign_id, seq[-1] == campaign_id)
                for campaign_id, k in Counter(seq).items()
            ]
        )
    return out


# Per item (its ordinal ``k``) and campaign: the touches at or before the item's time, the
# item's touches in all, and whether the item's first / last touch (by time, then id) is
# this campaign's. Grouped in the database: a batch's contacts have ~10 touches each, and
# reading them all into Python cost more (timestamp decoding) than the aggregate.
SHAPES_SQL = """
WITH item AS (
    SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]) WITH ORDINALITY AS i(contact_id, at, k)
), touch AS (
    SELECT item.k, a.campaign_id,
           row_number() OVER (PARTITION BY item.k ORDER BY a.occurred_at, a.id) AS from_first,
           row_number() OVER (PARTITION BY item.k ORDER BY a.occurred_at DESC, a.id DESC)
               AS from_last
    FROM item
    JOIN crm_activity a
      ON a.contact_id = item.contact_id AND a.campaign_id IS NOT NULL AND a.occurred_at <= item.at
)
SELECT k, campaign_id, count(*)::int, (sum(count(*)) OVER (PARTITION BY k))::int,
       bool_or(from_first = 1), bool_or(from_last = 1)
FROM touch GROUP BY k, campaign_id ORDER BY k, min(from_first)
"""


def _touch_shapes_sql(items: list[tuple[int, object]]) -> list[list[tuple]]:
    """:func:`touch_shapes` as one grouped query (PostgreSQL): rows per item and campaign
    instead of every touch of the items' contacts."""
    out: list[list[tuple]] = [[] for _ in items]
    with connection.cursor() as cursor:
        cursor.execute(SHAPES_SQL, [[c for c, _ in items], [at for _, at in items]])
        for k, *shape in cursor.fetchall():
            out[k - 1].append(tuple(shape))
    return [rows or [(0, 0, 0, True, True)] for rows in out]


SHAPE_FIELDS = ("campaign_id", "touches", "n", "first", "last")


CREDIT_FIELDS = ("transition", "contact", "to_stage", "at", *SHAPE_FIELDS)


def _credits_for(transitions: list[tuple[int, int, str, object]]) -> list[tuple]:
    """Credit rows (:data:`CREDIT_FIELDS`) of ``(id, contact_id, to_stage, at)`` changes
    from their contacts' touches; tuples, not instances (a batch makes thousands)."""
    shapes = touch_shapes([(c, at) for _, c, _, at in transitions])
    return [
        (*transition, *shape)
        for transition, rows in zip(transitions, shapes, strict=True)
        for shape in rows
    ]


def transition_credits_refresh(*, transitions, day_rows: bool = True) -> None:
    """Recompute the credit rows of these ``(id, contact_id, to_stage, at)`` changes, and
    move their sums in ``CreditDaily`` (reports.credit_facts: the deleted rows come back
    from the DELETE; one upsert). ``day_rows`` False: migration 0004, before that table."""
    transitions = [t for t in transitions if t[2] in CREDIT_STAGES]
    for i in range(0, len(transitions), CHUNK):
        chunk = transitions[i : i + CHUNK]
        old = credit_rows_delete(transition_ids=[t[0] for t in chunk])
        rows = _credits_for(chunk)
        facts_insert(TransitionCredit, rows, fields=CREDIT_FIELDS)
        if day_rows:
            credit_daily_apply(old=old, new=rows)
