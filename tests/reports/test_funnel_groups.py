"""The funnel by campaign, source or segment (issue 8): each group's rows are the funnel's
with that group as its filter; the largest groups are shown, the rest as "(other)"."""

import io
from datetime import date

import pytest
from openpyxl import load_workbook

from crm.models import Segment, SegmentMembership
from reports.lifecycle_facts import new_leads_rebuild
from reports.metrics.funnel import funnel_report
from reports.metrics.funnel_groups import funnel_groups
from reports.query import ReportQuery
from tests.factories import CampaignFactory, ContactFactory

from .factories import at, move
from .test_drilldown import assert_links_list_their_counts

pytestmark = pytest.mark.django_db
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))
PERIOD = "start=2025-03-01&end=2025-04-01"


@pytest.fixture
def world():
    """Leads of campaigns A (web form) and B (paid) and of none (event), in segments S1
    and S2 (one contact in both, one in none); entries into mql and sql in March, one
    the second of the contact in March, one of a lead created in February, one after the
    period."""
    a, b = CampaignFactory(name="A"), CampaignFactory(name="B")
    s1, s2 = Segment.objects.create(name="S1"), Segment.objects.create(name="S2")
    specs = [  # created, acquiring campaign, source, segments, moves
        ("2025-03-02", a, "web_form", [s1], [("lead", "mql", "2025-03-05")]),
        (
            "2025-03-03",
            a,
            "web_form",
            [s1, s2],
            [("lead", "mql", "2025-03-06"), ("mql", "sql", "2025-03-07")],
        ),
        ("2025-03-04", b, "paid", [s2], [("lead", "mql", "2025-04-02")]),  # after the end
        (
            "2025-02-10",
            b,
            "paid",
            [],
            [
                ("lead", "mql", "2025-03-08"),  # an older lead
                ("mql", "recycled", "2025-03-09"),
                ("recycled", "mql", "2025-03-10"),
            ],
        ),
        ("2025-03-05", None, "event", [s1], []),
    ]
    contacts = []
    for created, campaign, source, segments, moves in specs:
        c = ContactFactory(created_at=at(created), acquired_by=campaign, source=source)
        for seg in segments:
            SegmentMembership.objects.create(segment=seg, contact=c, joined_at=at(created))
        for frm, to, when in moves:
            move(c, frm, to, when)
        contacts.append(c)
    new_leads_rebuild()
    return {"A": a, "B": b, "S1": s1, "S2": s2, "contacts": contacts}


def _by_group(rows) -> dict:
    out = {}
    for r in rows:
        out.setdefault(r["group"], {})[r["stage"]] = (r["cohort"], r["entries"], r["contacts"])
    return out


def _funnel(q: ReportQuery) -> dict:
    return {
        r["stage"]: (r["cohort"], r["entries"], r["contacts"]) for r in funnel_report(q)["stages"]
    }


@pytest.mark.parametrize("group_by", ["campaign", "source", "segment"])
def test_each_groups_rows_are_the_funnel_filtered_by_the_group(group_by, world):
    rows = funnel_groups(MARCH, group_by)["rows"]
    groups = _by_group(rows)
    for r in rows:
        if r["group_id"] is None:
            continue
        filtered = ReportQuery(start=MARCH.start, end=MARCH.end, **{group_by: r["group_id"]})
        assert groups[r["group"]] == _funnel(filtered), r["group"]


def test_the_groups_by_campaign(world):
    groups = _by_group(funnel_groups(MARCH, "campaign")["rows"])
    assert list(groups) == ["A", "B", "(no campaign)"]  # by new leads, then entries
    assert groups["A"]["lead"] == (2, 0, 0)
    assert groups["A"]["mql"] == (2, 2, 2)
    assert groups["A"]["sql"] == (1, 1, 1)
    # B: one new lead (its mql after the end), an older lead entering mql twice
    assert groups["B"]["lead"] == (1, 0, 0)
    assert groups["B"]["mql"] == (0, 2, 1)
    assert groups["(no campaign)"]["lead"] == (1, 0, 0)


def test_the_groups_beyond_the_limit_are_one_other_group_counting_each_contact_once(world):
    got = funnel_groups(MARCH, "segment", limit=1)
    groups = _by_group(got["rows"])
    # S1 (3 new leads) is shown; S2 and "(no segment)" are the other: 2 new leads (the
    # contact in S1 and S2 counts once, and the older lead in no segment is not new)
    assert list(groups) == ["S1", "(other)"]
    assert groups["(other)"]["lead"] == (2, 0, 0)
    assert groups["(other)"]["mql"] == (1, 3, 2)
    assert got["note"] == "The 1 largest of 3 groups by new leads; the other 2 together as (other)."
    partition = _by_group(funnel_groups(MARCH, "campaign", limit=1)["rows"])
    assert partition["(other)"]["lead"] == (2, 0, 0)  # B and no campaign, summed
    assert partition["(other)"]["mql"] == (0, 2, 1)


def test_the_api_serves_the_groups_and_refuses_a_bad_grouping(
    world, marketing_api, django_assert_max_num_queries
):
    with django_assert_max_num_queries(12):  # the funnel's 8, three grouped reads, the names
        body = marketing_api.get(f"/api/v1/reports/funnel/?{PERIOD}&group_by=campaign").json()
    assert body["group_by"] == "campaign"
    assert len(body["groups"]) == 3 * 5
    assert body["groups"][0] | {"cohort": 0} == {
        "group_by": "campaign",
        "group_id": world["A"].pk,
        "group": "A",
        "other": False,
        "stage": "lead",
        "cohort": 0,
        "entries": 0,
        "contacts": 0,
    }
    assert "groups" not in marketing_api.get(f"/api/v1/reports/funnel/?{PERIOD}").json()
    for query in ("group_by=owner", "group_by=Campaign"):
        r = marketing_api.get(f"/api/v1/reports/funnel/?{PERIOD}&{query}")
        assert r.status_code == 400
    r = marketing_api.get(f"/api/v1/reports/email/?{PERIOD}&group_by=campaign")
    assert (r.status_code, r.json()["detail"]) == (400, "'group_by' applies to the funnel only.")


def test_the_page_shows_and_exports_the_groups_with_their_drill_downs(world, marketing_client):
    url = f"/reports/funnel/?{PERIOD}&group_by=segment"
    page = marketing_client.get(url).content.decode()
    assert "Funnel by segment" in page
    assert 'name="group_by"' in page
    hrefs = assert_links_list_their_counts(marketing_client, url, expect=10)
    assert any(f"segment={world['S2'].pk}" in h for h in hrefs)
    r = marketing_client.get(f"{url}&format=xlsx")
    sheets = {
        ws.title: list(ws.iter_rows(values_only=True))
        for ws in load_workbook(io.BytesIO(r.content)).worksheets
    }
    header, first, *_ = sheets["Funnel by segment"]
    assert header == ("Group", "Stage", "Cohort reached", "Entries", "Contacts entering")
    assert first == ("S1", "lead", 3, 0, 0)


def test_grouped_rows_compare_with_the_same_groups_previous_rows(world, marketing_api):
    body = marketing_api.get(
        f"/api/v1/reports/funnel/?{PERIOD}&group_by=campaign&compare=previous"
    ).json()
    b_lead = next(r for r in body["groups"] if r["group"] == "B" and r["stage"] == "lead")
    # B's February lead was the previous period's only new lead of B
    assert b_lead["change"]["cohort"] == {"absolute": 0, "relative": 0.0}
