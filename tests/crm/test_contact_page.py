"""The contact page's timeline prints each source's facts, in the site time zone."""

from datetime import UTC, datetime

import pytest

from crm import ingest, services
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def test_activity_entries_show_campaign_link_machine_flag_and_details(marketing_client, settings):
    settings.CONTACT_TIMELINE_PROVIDERS = []
    settings.TIME_ZONE = "Europe/Paris"
    contact = services.contact_create(email="d@example.com")
    campaign = CampaignFactory(name="Spring <launch>")
    at = datetime(2026, 3, 1, 23, 30, 15, 123456, tzinfo=UTC)
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "email_opened",
                "occurred_at": at,
                "campaign": campaign.pk,
                "url": "https://example.com/a?b=<c>",
                "is_machine": True,
                "details": {"link": "https://example.com/l", "amount": 12, "other": "x"},
            }
        ]
    )
    body = marketing_client.get(contact.get_absolute_url()).content.decode()
    assert '<time datetime="2026-03-02T00:30:15.123456+01:00">2026-03-02 00:30</time>' in body
    assert "<strong>Email opened</strong>" in body
    assert (
        "campaign Spring &lt;launch&gt; · https://example.com/a?b=&lt;c&gt; · machine open"
        " · link: https://example.com/l · amount: 12</span>"
    ) in body
    assert "other: x" not in body


def test_an_activity_without_campaign_or_details_has_no_detail_line(marketing_client, settings):
    settings.CONTACT_TIMELINE_PROVIDERS = []
    contact = services.contact_create(email="e@example.com")
    ingest.activities_record(
        items=[{"contact": contact.pk, "kind": "page_visit", "occurred_at": contact.created_at}]
    )
    body = marketing_client.get(contact.get_absolute_url()).content.decode()
    entry = body[body.index("<strong>Page visit</strong>") :]
    assert entry[: entry.index("</li>")].strip() == "<strong>Page visit</strong>"
