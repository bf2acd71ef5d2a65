"""Compare with the previous period (issue 8, METRICS.md "Short-term trend"): every figure
with its absolute and relative change — the totals and every row, joined by its key
(campaign, stage …), month rows by place counted from the end."""

import csv
import io
from datetime import date

import pytest
from openpyxl import load_workbook

from crm.models import ActivityKind as K
from reports.lifecycle_facts import new_leads_rebuild
from reports.rollups import rollups_rebuild
from tests.factories import CampaignFactory, ContactFactory

from .factories import act, at, move

pytestmark = pytest.mark.django_db
MARCH = "start=2025-03-01&end=2025-04-01&compare=previous"  # previous: Jan 29 – Mar 1
Q2 = "start=2025-04-01&end=2025-07-01&compare=previous"  # previous: Dec 31 – Apr 1
NONE = {"absolute": None, "relative": None}


@pytest.fixture
def emails():
    """Campaign A: February 2 sent, 1 opened; March 4 sent, 1 opened, 1 unsubscribed.
    Campaign B sends in March only."""
    a, b = CampaignFactory(name="A"), CampaignFactory(name="B")
    people = [ContactFactory(created_at=at("2025-01-01")) for _ in range(4)]
    for i, c in enumerate(people[:2]):
        act(c, K.EMAIL_SENT, "2025-02-10", a, f"f{i}")
    act(people[0], K.EMAIL_OPENED, "2025-02-11", a, "f0")
    for i, c in enumerate(people):
        act(c, K.EMAIL_SENT, "2025-03-10", a, f"m{i}")
    act(people[0], K.EMAIL_OPENED, "2025-03-11", a, "m0")
    act(people[1], K.EMAIL_UNSUBSCRIBED, "2025-03-11", a, "m1")
    act(people[2], K.EMAIL_SENT, "2025-03-12", b, "b0")
    rollups_rebuild(start_day=date(2025, 1, 1), end_day=date(2025, 4, 1))
    return a, b


def test_every_campaign_row_carries_its_change_against_the_previous_period(emails, marketing_api):
    a, b = emails
    body = marketing_api.get(f"/api/v1/reports/email/?{MARCH}").json()
    rows = {r["campaign"]: r for r in body["rows"]}
    ch = rows["A"]["change"]
    assert ch["sent"] == {"absolute": 2, "relative": 1.0}
    assert ch["unique_opens"] == {"absolute": 0, "relative": 0.0}
    # a rate changes in points (a difference of fractions): 1/4 against 1/2
    assert ch["open_rate"] == {"absolute": -0.25, "relative": -0.5}
    # on a zero base the relative change is undefined (METRICS.md: zero denominators)
    assert ch["unsubscribe_rate"] == {"absolute": 0.25, "relative": None}
    assert "campaign_id" not in ch  # ids are keys, not figures
    # B sent nothing before: no previous row, no change
    assert rows["B"]["change"]["sent"] == NONE
    assert body["previous"]["change"]["sent"] == {"absolute": 3, "relative": 1.5}


def test_the_page_shows_each_row_figure_with_its_change(emails, marketing_client):
    page = marketing_client.get(f"/reports/email/?{MARCH}").content.decode()
    assert "+2 (+100.0%)" in page  # A's sent
    assert "-25.0 pp (-50.0%)" in page  # A's open rate
    assert "+25.0 pp</span>" in page  # A's unsubscribe rate: no relative change on a zero base


def test_exports_with_compare_on_give_each_figure_its_change_columns(emails, marketing_api):
    r = marketing_api.get(f"/api/v1/reports/email/?{MARCH}&format=xlsx")
    header, row_a, row_b, total = load_workbook(io.BytesIO(r.content)).active.iter_rows(
        values_only=True
    )
    assert header[:5] == ("Campaign", "Sent", "Sent change", "Sent relative change", "Delivered")
    assert row_a[:4] == ("A", 4, 2, 1)
    assert row_b[:4] == ("B", 1, None, None)
    assert total[:4] == ("Total", 5, 3, 1.5)
    r = marketing_api.get(f"/api/v1/reports/email/?{MARCH}&format=csv")
    text = b"".join(r.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][:4] == ["Campaign", "Sent", "Sent change", "Sent relative change"]


@pytest.fixture
def quarter_leads():
    """New leads: January 1, February 2; April 3, May 2 (none in March and June)."""
    for day in ["2025-01-10", "2025-02-10", "2025-02-11", "2025-04-02", "2025-04-03"]:
        ContactFactory(created_at=at(day))
    for day in ["2025-04-04", "2025-05-05", "2025-05-06"]:
        ContactFactory(created_at=at(day))
    new_leads_rebuild()


def test_a_month_row_compares_with_the_previous_periods_month_at_its_place_from_the_end(
    quarter_leads, marketing_api
):
    """Q2 (91 days) against the 91 days before it, Dec 31 – Mar 31: April meets January,
    not the one day of December the previous period starts with."""
    body = marketing_api.get(f"/api/v1/reports/leads/?{Q2}").json()
    got = [
        (r["month"], r["compared_with"], r["new_leads"], r["change"]["new_leads"])
        for r in body["rows"]
    ]
    assert got == [
        ("2025-04", "2025-01", 3, {"absolute": 2, "relative": 2.0}),
        ("2025-05", "2025-02", 2, {"absolute": 0, "relative": 0.0}),
        ("2025-06", "2025-03", 0, {"absolute": 0, "relative": None}),
    ]
    # the score histogram changes bucket by bucket
    assert body["rows"][0]["change"]["score_histogram"]["0–19"] == {"absolute": 2, "relative": 2.0}


def test_month_rows_show_the_month_they_are_compared_with(quarter_leads, marketing_client):
    page = marketing_client.get(f"/reports/leads/?{Q2}").content.decode()
    assert "vs 2025-01" in page
    r = marketing_client.get(f"/reports/leads/?{Q2}&format=xlsx")
    sheets = {
        ws.title: list(ws.iter_rows(values_only=True))
        for ws in load_workbook(io.BytesIO(r.content)).worksheets
    }
    header, april, *_ = sheets["Leads"]
    assert header[:5] == (
        "Month",
        "Compared with",
        "New leads",
        "New leads change",
        "New leads relative change",
    )
    assert april[:5] == ("2025-04", "2025-01", 3, 2, 2)
    score_header, score_april, *_ = sheets["Score profile of new leads"]
    assert score_header[:2] == ("Month", "Compared with")
    assert score_april[:2] == ("2025-04", "2025-01")


def test_funnel_stage_rows_and_the_nurtured_comparison_carry_their_change(marketing_api):
    for day in ["2025-02-10", "2025-03-10", "2025-03-11"]:
        c = ContactFactory(created_at=at(day))
        move(c, "lead", "mql", day + " 12:00")
    new_leads_rebuild()
    body = marketing_api.get(f"/api/v1/reports/funnel/?{MARCH}").json()
    stages = {r["stage"]: r for r in body["rows"]}
    assert stages["mql"]["change"]["cohort"] == {"absolute": 1, "relative": 1.0}
    assert stages["mql"]["change"]["entries"] == {"absolute": 1, "relative": 1.0}
    nurtured = body["nurtured_vs_non_nurtured"]["change"]
    assert nurtured["non_nurtured"] == {"absolute": 1, "relative": 1.0}
    assert nurtured["non_nurtured_opportunity_rate"] == {"absolute": 0.0, "relative": None}
