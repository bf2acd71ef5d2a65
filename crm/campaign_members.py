"""Campaign members: which contacts are in which campaign (``CampaignMember``).

A derived table: one row per (campaign, contact) pair that some activity has, with the
pair's earliest and latest ``occurred_at``, plus one row (no touch times) per contact
acquired by a campaign it has no activity in. It is exactly what the activities and
``Contact.acquired_by`` say:

- ``crm.ingest`` upserts a stored batch's pairs in the batch's transaction
  (:func:`members_touch`): work proportional to the batch, not to the table; a contact it
  creates is acquired by a campaign of one of those activities, so already a member;
- creating, editing, importing or merging contacts publishes "contacts changed";
  :func:`on_contacts_changed` re-syncs the acquisition rows of new contacts and of those
  whose ``acquired_by`` changed; a merge also rebuilds the kept contact's touch rows;
- rows written outside those paths (migrations 0012/0013, the demo seeder's bulk load,
  admin edits) are rebuilt from the source rows by :func:`members_rebuild`;
- erasure keeps activities' contact, campaign and time and the acquisition, so it changes
  no row here; a deleted contact or campaign takes its rows along (cascade), as the
  activities' campaign and the contacts' ``acquired_by`` are cleared (SET NULL).

Tested against the recomputation from raw rows after random ingests, edits, merges,
erasures and deletes (tests/crm/test_campaign_members.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.db.models import DateTimeField, Exists, Max, Min, OuterRef, Value

from . import events
from .models import Activity, CampaignMember, Contact

_TABLE = CampaignMember._meta.db_table
_COLUMNS = "campaign_id, contact_id, first_touch_at, last_touch_at"

# The batch's distinct pairs as four array parameters (see crm.ingest._PG_INSERT), in
# (campaign, contact) order so overlapping batches take the index locks in one order. The
# WHERE skips rows the batch does not widen (a replayed or back-filled touch): no new row
# version, no dead tuple. Identifiers are module constants.
_PG_UPSERT = (
    f"INSERT INTO {_TABLE} AS m ({_COLUMNS}) "  # noqa: S608
    "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::timestamptz[], %b::timestamptz[]) "
    "ON CONFLICT (campaign_id, contact_id) DO UPDATE SET "
    "first_touch_at = LEAST(m.first_touch_at, EXCLUDED.first_touch_at), "
    "last_touch_at = GREATEST(m.last_touch_at, EXCLUDED.last_touch_at) "
    "WHERE m.first_touch_at IS NULL OR m.first_touch_at > EXCLUDED.first_touch_at "
    "OR m.last_touch_at < EXCLUDED.last_touch_at"
)


def _pairs(activities: Iterable[Activity]) -> dict[tuple[int, int], list[datetime]]:
    """(campaign id, contact id) → [first, last] touch among ``activities``."""
    span: dict[tuple[int, int], list[datetime]] = {}
    for a in activities:
        if a.campaign_id is None:
            continue
        key = (a.campaign_id, a.contact_id)
        at = a.occurred_at
        seen = span.get(key)
        if seen is None:
            span[key] = [at, at]
        elif at < seen[0]:
            seen[0] = at
        elif at > seen[1]:
            seen[1] = at
    return span


def members_touch(activities: Iterable[Activity]) -> None:
    """Widen the members of the campaigns ``activities`` (just stored) belong to.

    Call inside the transaction that stored them. One statement on PostgreSQL
    (``INSERT … ON CONFLICT DO UPDATE``); elsewhere (SQLite, whose writers are serialised)
    one read of the pairs' rows and one ``bulk_create`` that inserts or overwrites them.
    """
    span = _pairs(activities)
    if not span:
        return
    keys = sorted(span)
    if connection.vendor == "postgresql":
        from .ingest import _pg_cursor  # binary array parameters, see there

        with _pg_cursor() as cursor:
            cursor.execute(
                _PG_UPSERT,
                [
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [span[k][0] for k in keys],
                    [span[k][1] for k in keys],
                ],
            )
        return
    existing = CampaignMember.objects.filter(
        campaign_id__in={k[0] for k in keys}, contact_id__in={k[1] for k in keys}
    ).values_list("campaign_id", "contact_id", "first_touch_at", "last_touch_at")
    for campaign_id, contact_id, first, last in existing:
        seen = span.get((campaign_id, contact_id))
        if seen is not None and first is not None:  # None: a member by acquisition alone
            seen[0] = min(seen[0], first)
            seen[1] = max(seen[1], last)
    CampaignMember.objects.bulk_create(
        [
            CampaignMember(campaign_id=k[0], contact_id=k[1], first_touch_at=f, last_touch_at=t)
            for k in keys
            for f, t in [span[k]]
        ],
        update_conflicts=True,
        unique_fields=["campaign", "contact"],
        update_fields=["first_touch_at", "last_touch_at"],
    )


def members_from_activities(activities=None):
    """The touch rows ``activities`` (default: all) say there are, as a values queryset of
    ``campaign_id, contact_id, first_touch_at, last_touch_at``."""
    if activities is None:
        activities = Activity.objects.all()
    return (
        activities.filter(campaign__isnull=False)
        .values("campaign_id", "contact_id")
        .annotate(first_touch_at=Min("occurred_at"), last_touch_at=Max("occurred_at"))
        .order_by()
    )


def members_by_acquisition(contacts=None):
    """The acquisition-only rows: contacts (default: all) acquired by a campaign they have
    no activity in, as a values queryset of the same four columns (times empty)."""
    if contacts is None:
        contacts = Contact.objects.all()
    touched = Activity.objects.filter(
        contact_id=OuterRef("pk"), campaign_id=OuterRef("acquired_by_id")
    )
    return (
        contacts.filter(acquired_by__isnull=False)
        .exclude(Exists(touched))
        .annotate(no_touch=Value(None, output_field=DateTimeField()))
        .values_list("acquired_by_id", "pk", "no_touch", "no_touch")
        .order_by()
    )


def _acquisitions_missing(contacts):
    """Acquisition rows of ``contacts`` whose pair has no row yet (once the touch rows are
    in place: the acquisition-only rows), read against this table's primary key instead of
    the activities."""
    present = CampaignMember.objects.filter(
        contact_id=OuterRef("pk"), campaign_id=OuterRef("acquired_by_id")
    )
    return (
        contacts.filter(acquired_by__isnull=False)
        .exclude(Exists(present))
        .annotate(no_touch=Value(None, output_field=DateTimeField()))
        .values_list("acquired_by_id", "pk", "no_touch", "no_touch")
        .order_by()
    )


def _insert_from(queryset) -> None:
    select, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {_TABLE} ({_COLUMNS}) {select}", params)  # noqa: S608


def members_rebuild(*, contact_ids: Iterable[int] | None = None) -> None:
    """Recompute the members of ``contact_ids`` (default: everyone) from their activities
    and acquisition.

    Set-based: one DELETE and two ``INSERT … SELECT`` built by the ORM, so the rows never
    pass through Python (the full rebuild reads each activity once).
    """
    with transaction.atomic(savepoint=False):  # a caller's transaction: no SAVEPOINT
        members = CampaignMember.objects.all()
        activities = Activity.objects.all()
        contacts = Contact.objects.all()
        if contact_ids is not None:
            contact_ids = list(contact_ids)
            members = members.filter(contact_id__in=contact_ids)
            activities = activities.filter(contact_id__in=contact_ids)
            contacts = contacts.filter(pk__in=contact_ids)
        members.delete()
        _insert_from(members_from_activities(activities))
        _insert_from(_acquisitions_missing(contacts))


def members_acquired_sync(*, contact_ids: Iterable[int], created: bool = False) -> None:
    """Re-derive the acquisition-only rows of ``contact_ids`` (their ``acquired_by`` was
    set or changed); their touch rows follow the activities and stay as they are. Contacts
    just ``created`` have no rows yet: one INSERT … SELECT."""
    contact_ids = list(contact_ids)
    with transaction.atomic(savepoint=False):  # a caller's transaction: no SAVEPOINT
        if not created:
            CampaignMember.objects.filter(
                contact_id__in=contact_ids, first_touch_at__isnull=True
            ).delete()
        _insert_from(_acquisitions_missing(Contact.objects.filter(pk__in=contact_ids)))


@events.handler("in_transaction")
def on_contacts_changed(event) -> None:
    """New contacts (the event without fields: crm.services.contacts_create_bulk) and
    changed acquisitions (settings.CONTACTS_CHANGED_HANDLERS)."""
    if not event.fields:
        members_acquired_sync(contact_ids=event.contact_ids, created=True)
    elif "acquired_by" in event.fields:
        members_acquired_sync(contact_ids=event.contact_ids)


def demo_seed(ctx) -> None:
    """settings.DEMO_SEEDERS, last: the seeders bulk-load activities without crm.ingest."""
    members_rebuild()
    ctx.log(f"campaign members: {CampaignMember.objects.count():,}")
