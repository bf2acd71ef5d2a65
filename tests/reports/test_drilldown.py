"""Drill-down lists the contacts its count is made of: the email figures' first-event-per-
email rule (an open includes a click; machine and unsubscribe-link clicks are not clicks)
and the CLV cohort's first customer entries."""

from datetime import date

import pytest
from django.conf import settings

from crm.models import ActivityKind as K
from crm.models import Segment, SegmentMembership
from reports.drilldown import contacts_for, narrow
from reports.metrics.customers import clv_by_cohort
from reports.metrics.email import email_by_campaign
from reports.query import ReportQuery
from reports.rollups import rollups_rebuild
from tests.factories import CampaignFactory, ContactFactory

from .factories import act, at, move

pytestmark = pytest.mark.django_db
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))


def listed(q: ReportQuery, metric: str, **kw) -> list[int]:
    return sorted(contacts_for(q, metric, **kw).values_list("pk", flat=True))


def test_the_email_drill_downs_list_the_contacts_counted():
    a = CampaignFactory(name="A")
    c = [ContactFactory(created_at=at("2025-01-01")) for _ in range(6)]
    for i, contact in enumerate(c):
        act(contact, K.EMAIL_SENT, "2025-02-20 09:00", a, f"m{i}")
    act(c[0], K.EMAIL_OPENED, "2025-03-03 09:00", a, "m0")  # an open
    act(c[1], K.EMAIL_CLICKED, "2025-03-31 23:59", a, "m1", url="https://x.example/a")
    act(c[2], K.EMAIL_OPENED, "2025-03-03 09:00", a, "m2", is_machine=True)  # a machine's
    act(c[3], K.EMAIL_OPENED, "2025-02-28 23:59", a, "m3")  # opened in February first …
    act(c[3], K.EMAIL_OPENED, "2025-03-01 00:00", a, "m3")  # … so March's is no unique open
    act(c[4], K.EMAIL_CLICKED, "2025-03-04 09:00", a, "m4", url=f"{settings.SITE_URL}/u/t")
    scanner = {"is_machine": True, "url": "https://x.example/a"}
    act(c[5], K.EMAIL_CLICKED, "2025-03-04 09:00", a, "m5", **scanner)
    act(c[5], K.EMAIL_OPENED, "2025-04-01 00:00", a, "m5")  # at the period's end: out
    rollups_rebuild(start_day=date(2025, 2, 1), end_day=date(2025, 4, 2))
    everybody = Segment.objects.create(name="everybody")
    SegmentMembership.objects.bulk_create(
        SegmentMembership(segment=everybody, contact=x, joined_at=at("2025-01-01")) for x in c
    )
    raw_q = ReportQuery(start=MARCH.start, end=MARCH.end, segment=everybody.pk)
    for q in (MARCH, raw_q):  # the rollup and the raw activities
        (row,), _ = email_by_campaign(q)
        opened = listed(q, "email_opened", row_campaign=a.pk)
        clicked = listed(q, "email_clicked", row_campaign=a.pk)
        assert (row["unique_opens"], opened) == (2, [c[0].pk, c[1].pk])
        assert (row["unique_clicks"], clicked) == (1, [c[1].pk])
    feb = ReportQuery(start=date(2025, 2, 1), end=date(2025, 3, 1))
    (row,), _ = email_by_campaign(feb)
    assert (row["unique_opens"], listed(feb, "email_opened", row_campaign=a.pk)) == (1, [c[3].pk])


def test_the_clv_drill_down_lists_the_customers_who_started_in_the_month():
    returning = ContactFactory(created_at=at("2024-12-01"))
    move(returning, "opportunity", "customer", "2025-01-10")
    move(returning, "customer", "churned", "2025-02-10")
    move(returning, "churned", "customer", "2025-03-10")  # back: not a new customer
    first = ContactFactory(created_at=at("2024-12-01"))
    move(first, "opportunity", "customer", "2025-03-31 23:59")
    late = ContactFactory(created_at=at("2024-12-01"))
    move(late, "opportunity", "customer", "2025-04-01 00:00")  # at the period's end: out
    (cohort,) = clv_by_cohort(MARCH)
    assert cohort["customers"] == 1
    for q in (MARCH, narrow(MARCH, "2025-03")):
        assert listed(q, "customer_cohort") == [first.pk]
    (jan,) = clv_by_cohort(ReportQuery(start=date(2025, 1, 1), end=date(2025, 2, 1)))
    jan_q = ReportQuery(start=date(2025, 1, 1), end=date(2025, 2, 1))
    assert (jan["customers"], listed(jan_q, "customer_cohort")) == (1, [returning.pk])
