"""Re-openings: a recycled contact's first engagement after being recycled (METRICS.md),
marked by crm.ingest for each stored batch, in its transaction."""

from __future__ import annotations

from django.db import connection

from .models import Activity, Contact, Reopening, Stage
from .models.activities import is_engagement, unsubscribe_link_prefix


def reopenings_mark(activities: list[Activity], locked_recycled: dict[int, dict] | None) -> None:
    """A recycled contact's first engagement after being recycled re-opens it (once a round).

    An engagement is ``crm.models.activities.engagement_q`` (not a machine's, not a click
    on the unsubscribe link), as the re-opened leads report counts it.

    The contact is recycled as stored before the batch's handlers run, so an engagement
    that re-qualifies it at once (its MQL dated at the activity) still re-opens it.

    ``locked_recycled``: the recycled contacts ``crm.ingest.contacts_lock`` read under the lock
    (stages do not change between that read and this call), or ``None`` to read them here.
    """
    prefix = unsubscribe_link_prefix()
    engaging = [a for a in activities if is_engagement(a.kind, a.is_machine, a.url, prefix)]
    engaged = {a.contact_id for a in engaging}
    if not engaged:
        return
    if locked_recycled is not None:
        recycled = {pk: c for pk, c in locked_recycled.items() if pk in engaged}
    else:
        recycled = {
            c["pk"]: c
            for c in Contact.objects.filter(pk__in=engaged, stage=Stage.RECYCLED).values(
                "pk", "recycle_round", "stage_changed_at"
            )
        }
    if not recycled:
        return
    first: dict[int, Activity] = {}
    candidates = [a for a in engaging if a.contact_id in recycled]
    for a in sorted(candidates, key=lambda a: a.occurred_at):
        c = recycled[a.contact_id]
        # strictly after the recycle: an activity at its very instant is not "after" it
        # (reports.metrics.leads.reopened_qs counts by the same rule)
        if c["stage_changed_at"] is None or a.occurred_at > c["stage_changed_at"]:
            first.setdefault(a.contact_id, a)
    if not first:
        return
    if connection.vendor == "postgresql":  # arrays, not per-row placeholders
        from .ingest import _pg_cursor  # binary array parameters, see there

        cids = list(first)
        with _pg_cursor() as cursor:
            cursor.execute(
                _PG_REOPENINGS,
                [
                    cids,
                    [recycled[cid]["recycle_round"] for cid in cids],
                    [first[cid].occurred_at for cid in cids],
                    [first[cid].pk for cid in cids],
                ],
            )
        return
    Reopening.objects.bulk_create(
        [
            Reopening(
                contact_id=cid,
                recycle_round=recycled[cid]["recycle_round"],
                at=a.occurred_at,
                activity_id=a.pk,
            )
            for cid, a in first.items()
        ],
        ignore_conflicts=True,
    )


# A round already marked (a replay, an earlier batch) is skipped by the unique rule.
_PG_REOPENINGS = (
    f"INSERT INTO {Reopening._meta.db_table} (contact_id, recycle_round, at, activity_id) "  # noqa: S608
    "SELECT * FROM unnest(%b::bigint[], %b::integer[], %b::timestamptz[], %b::bigint[]) "
    "ON CONFLICT DO NOTHING"
)
