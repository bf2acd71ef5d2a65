"""Dashboard figures under a campaign or channel filter: program cost and cost per MQL are
the filtered campaigns' (as in the cost-per-MQL report), not every campaign's."""

from datetime import date
from decimal import Decimal

import pytest

from crm.models import CampaignCost
from reports.metrics.cost import cost_per_mql
from reports.query import ReportQuery
from reports.registry import dashboard_totals
from tests.factories import CampaignFactory, ContactFactory

from .factories import at, move

pytestmark = pytest.mark.django_db
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))


@pytest.fixture
def programs():
    a = CampaignFactory(name="A", channel="email")
    b = CampaignFactory(name="B", channel="paid")
    # A: 100 in March; 62 over Mar 31–Apr 1, half of it in March (prorated by days)
    for camp, amount, first, last in (
        (a, "100.00", date(2025, 3, 1), date(2025, 3, 31)),
        (a, "62.00", date(2025, 3, 31), date(2025, 4, 1)),
        (b, "900.00", date(2025, 3, 1), date(2025, 3, 31)),
    ):
        CampaignCost.objects.create(
            campaign=camp, category="media", amount=Decimal(amount), period_start=first,
            period_end=last,
        )  # fmt: skip
    for camp, mql_at in ((a, "2025-03-10"), (b, "2025-03-11"), (b, "2025-03-31 23:59")):
        c = ContactFactory(created_at=at("2025-02-02"), acquired_by=camp)
        move(c, "lead", "mql", mql_at)
    late = ContactFactory(created_at=at("2025-02-02"), acquired_by=a)
    move(late, "lead", "mql", "2025-04-01 00:00")  # at the period's end: out
    return a, b


def test_without_a_filter_the_dashboard_counts_every_program(programs):
    t = dashboard_totals(MARCH)
    assert (t["mqls"], t["program_cost"], t["cost_per_mql"]) == (
        3,
        Decimal("1031.00"),
        Decimal("343.67"),
    )


def test_a_campaign_filter_keeps_that_campaigns_cost_and_mqls(programs):
    a, _ = programs
    t = dashboard_totals(ReportQuery(start=MARCH.start, end=MARCH.end, campaign=a.id))
    assert (t["mqls"], t["program_cost"], t["cost_per_mql"]) == (
        1,
        Decimal("131.00"),
        Decimal("131.00"),
    )
    # the cost-per-MQL report's row of A has the same program cost
    rows, _ = cost_per_mql(ReportQuery(start=MARCH.start, end=MARCH.end, campaign=a.id))
    assert [r["program_cost"] for r in rows] == [Decimal("131.00")]


def test_a_channel_filter_keeps_its_campaigns_cost_and_mqls(programs):
    t = dashboard_totals(ReportQuery(start=MARCH.start, end=MARCH.end, channel="paid"))
    assert (t["mqls"], t["program_cost"], t["cost_per_mql"]) == (
        2,
        Decimal("900.00"),
        Decimal("450.00"),
    )
    t = dashboard_totals(ReportQuery(start=MARCH.start, end=MARCH.end, channel="webinar"))
    assert (t["mqls"], t["program_cost"], t["cost_per_mql"]) == (0, Decimal("0.00"), None)
