"""``manage.py reports_rebuild``: after an upgrade, the email rollups and re-opened lead
facts counted under the old rules are rebuilt from raw data (queued batches first)."""

from datetime import date

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import ActivityKind as K
from crm.models import QueuedBatch
from reports.metrics.email import email_by_campaign
from reports.metrics.leads import reopened_counts
from reports.models import EmailDaily, ReopenedDayFact
from reports.query import ReportQuery
from tests.factories import CampaignFactory, ContactFactory

from .factories import at, move

pytestmark = pytest.mark.django_db
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))


def test_it_rebuilds_rows_counted_under_old_rules(queued_handlers):
    a = CampaignFactory(name="A")
    c = ContactFactory(created_at=at("2025-01-01"))
    move(c, "lead", "mql", "2025-03-01 09:00")
    move(c, "mql", "recycled", "2025-03-02 09:00")
    items = [
        {"kind": K.EMAIL_SENT, "occurred_at": "2025-03-05T09:00:00Z"},
        {"kind": K.EMAIL_CLICKED, "occurred_at": "2025-03-06T09:00:00Z", "url": "https://x.ex/"},
    ]
    activities_record(
        items=[{**i, "contact": c.pk, "campaign": a.pk, "message_id": "m1"} for i in items],
        source="test",
    )
    assert QueuedBatch.objects.count() == 1  # not applied yet: the command drains it first
    # rows as the old rules left them: a click on the unsubscribe link counted, and the
    # re-opening day of an engagement at the recycle's instant
    EmailDaily.objects.create(day=date(2025, 3, 7), campaign_id=a.pk, unique_clicks=1)
    ReopenedDayFact.objects.create(contact=c, day=date(2025, 3, 2))
    call_command("reports_rebuild")
    assert not QueuedBatch.objects.exists()
    (row,), _ = email_by_campaign(MARCH)
    assert (row["sent"], row["unique_opens"], row["unique_clicks"]) == (1, 1, 1)
    assert list(EmailDaily.objects.filter(unique_clicks=1).values_list("day", flat=True)) == [
        date(2025, 3, 6)
    ]
    assert list(ReopenedDayFact.objects.values_list("day", flat=True)) == [date(2025, 3, 6)]
    assert reopened_counts(MARCH)[1] == 1


def test_it_refuses_while_a_batch_stays_queued(queued_handlers):
    c = ContactFactory(created_at=at("2025-01-01"))
    activities_record(
        items=[{"kind": K.PAGE_VISIT, "contact": c.pk, "occurred_at": "2025-03-05T09:00:00Z"}],
        source="test",
    )
    QueuedBatch.objects.update(parked_at=timezone.now())  # failed too often: an admin's turn
    with pytest.raises(CommandError, match="1 activity batches are queued"):
        call_command("reports_rebuild", "--only", "email")
