"""Drill-down lists the contacts its count is made of: the email figures' first-event-per-
email rule (an open includes a click; machine and unsubscribe-link clicks are not clicks)
and the CLV cohort's first customer entries."""

import re
from datetime import date
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings

from crm.models import ActivityKind as K
from crm.models import Segment, SegmentMembership
from nurture.models import EmailSend, Enrollment
from reports.drilldown import contacts_for, narrow
from reports.facts import facts_rebuild
from reports.holdout_facts import holdout_rebuild
from reports.landing_rollup import landing_rollup_rebuild
from reports.lifecycle_facts import new_leads_rebuild
from reports.metrics.cost import cost_per_mql
from reports.metrics.customers import clv_by_cohort
from reports.metrics.email import email_by_campaign, email_by_step, landing_pages
from reports.metrics.funnel import holdout_lift, nurtured_vs_non
from reports.nurtured_facts import nurtured_rebuild
from reports.query import ReportQuery
from reports.rollups import rollups_rebuild
from tests.factories import CampaignFactory, ContactFactory
from tests.nurture.factories import ProgramFactory, StepFactory

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


# --- Every table's counts link to their contacts (issue 8: "every count links to the
# contacts … behind it"): the per-step, landing-page, holdout and nurtured tables, the cost
# report's credits and the dashboard's cards.

DRILL_LINK = re.compile(r'<a href="(/reports/drilldown/\?[^"]+)"[^>]*>([\d,]+)</a>')
PERIOD = "start=2025-03-01&end=2025-04-01"


def _links(page: str) -> list[tuple[str, int]]:
    return [(unescape(href), int(n.replace(",", ""))) for href, n in DRILL_LINK.findall(page)]


def assert_links_list_their_counts(client, url: str, *, expect: int) -> list[str]:
    """Every drill-down link of the page (a whole number) lists as many contacts — or,
    where a count of entries and its count of unique contacts link to the same list (the
    funnel's "Entries" and "Contacts entering"), as many as the unique count."""
    links = _links(client.get(url).content.decode())
    figures: dict[str, set[int]] = {}
    for href, n in links:
        figures.setdefault(href, set()).add(n)
    for href, ns in figures.items():
        r = client.get(href)
        assert r.status_code == 200, href
        assert f"· {min(ns)} contact" in r.content.decode(), (href, ns)
    assert len(links) >= expect
    return list(figures)


@pytest.fixture
def program_world():
    """A two-step nurture program of campaign A: step 0's email to c0 (opened) and c1,
    step 1's to c2 (clicked); a treated and a held-out enrollment of a holdout program in
    March (and a treated one in February); a landing page visited by c0 (who submitted its
    form) and c1, its form submitted by c3 without a visit."""
    a = CampaignFactory(name="A")
    c = [ContactFactory(created_at=at("2025-03-01 09:00")) for _ in range(5)]
    program = ProgramFactory(campaign=a)
    steps = [StepFactory(program=program, position=i) for i in range(2)]
    holdout = ProgramFactory(name="Holdout", holdout_percent=50)
    for i, (contact, step) in enumerate([(c[0], 0), (c[1], 0), (c[2], 1)]):
        enrollment = Enrollment.objects.create(
            contact=contact, program=program, entered_at=at("2025-03-01 10:00")
        )
        EmailSend.objects.create(
            enrollment=enrollment,
            step=steps[step],
            contact=contact,
            program=program,
            message_id=f"m{i}",
            status=EmailSend.Status.SENT,
        )
        act(contact, K.EMAIL_SENT, "2025-03-02", a, f"m{i}")
    act(c[0], K.EMAIL_OPENED, "2025-03-03", a, "m0")
    act(c[2], K.EMAIL_CLICKED, "2025-03-03", a, "m2", url="https://x.example/a")
    held = Enrollment.State.HELD_OUT
    Enrollment.objects.create(contact=c[3], program=holdout, entered_at=at("2025-03-05"))
    Enrollment.objects.create(
        contact=c[4], program=holdout, entered_at=at("2025-03-05"), state=held
    )
    Enrollment.objects.create(contact=c[2], program=holdout, entered_at=at("2025-02-05"))
    move(c[3], "lead", "opportunity", "2025-03-20")
    url = "https://x.example/offer"
    act(c[0], K.PAGE_VISIT, "2025-03-04", url=url)
    act(c[0], K.FORM_SUBMITTED, "2025-03-04 10:00", url=url)
    act(c[1], K.PAGE_VISIT, "2025-03-06", url=url)
    act(c[3], K.FORM_SUBMITTED, "2025-03-06", url=url)
    rollups_rebuild(start_day=date(2025, 2, 1), end_day=date(2025, 4, 1))
    facts_rebuild(start_day=date(2025, 2, 1), end_day=date(2025, 4, 1))
    landing_rollup_rebuild()
    holdout_rebuild()
    new_leads_rebuild()
    nurtured_rebuild()
    everybody = Segment.objects.create(name="everybody")
    SegmentMembership.objects.bulk_create(
        SegmentMembership(segment=everybody, contact=x, joined_at=at("2025-01-01")) for x in c
    )
    return a, steps, holdout, c, everybody


def test_the_per_step_drill_downs_list_each_steps_contacts(program_world):
    a, steps, _, c, everybody = program_world
    raw_q = ReportQuery(start=MARCH.start, end=MARCH.end, segment=everybody.pk)
    for q in (MARCH, raw_q):  # the step rollup and the raw activities
        rows = {r["step_id"]: r for r in email_by_step(q)}
        for step, sent, opened, clicked in [
            (steps[0], [c[0], c[1]], [c[0]], []),
            (steps[1], [c[2]], [c[2]], [c[2]]),
        ]:
            row = rows[step.pk]
            for metric, key, who in [
                ("email_sent", "sent", sent),
                ("email_opened", "unique_opens", opened),
                ("email_clicked", "unique_clicks", clicked),
            ]:
                got = listed(q, metric, row_campaign=a.pk, step=step.pk)
                assert (row[key], got) == (len(who), sorted(x.pk for x in who))


def test_the_landing_page_drill_downs_list_its_visitors_and_converted_visitors(program_world):
    *_, c, everybody = program_world
    url = "https://x.example/offer"
    for q in (MARCH, ReportQuery(start=MARCH.start, end=MARCH.end, segment=everybody.pk)):
        (row,) = landing_pages(q)
        assert (row["unique_visitors"], listed(q, "landing_visitors", url=url)) == (
            2,
            sorted([c[0].pk, c[1].pk]),
        )
        assert (row["converted_visitors"], listed(q, "landing_converted", url=url)) == (
            1,
            [c[0].pk],
        )


def test_the_holdout_drill_downs_list_the_treated_and_held_out_contacts(program_world):
    _, _, holdout, c, everybody = program_world
    for q in (MARCH, ReportQuery(start=MARCH.start, end=MARCH.end, segment=everybody.pk)):
        (row,) = holdout_lift(q)
        assert (row["treated"], listed(q, "holdout_treated", program=holdout.pk)) == (1, [c[3].pk])
        assert (row["held_out"], listed(q, "holdout_held_out", program=holdout.pk)) == (
            1,
            [c[4].pk],
        )


def test_the_nurtured_drill_downs_list_each_group_and_its_opportunities(program_world):
    *_, c, everybody = program_world
    for q in (MARCH, ReportQuery(start=MARCH.start, end=MARCH.end, segment=everybody.pk)):
        n = nurtured_vs_non(q)
        # c0–c2 are in the drip, c3 treated by the holdout program, c4 only held out
        assert (n["nurtured"], listed(q, "nurtured")) == (4, sorted(x.pk for x in c[:4]))
        assert (n["nurtured_opportunities"], listed(q, "nurtured_opportunities")) == (
            1,
            [c[3].pk],
        )
        assert (n["non_nurtured"], listed(q, "non_nurtured")) == (0, [])


def test_the_email_and_funnel_pages_link_every_count_to_as_many_contacts(
    program_world, marketing_client
):
    hrefs = assert_links_list_their_counts(marketing_client, f"/reports/email/?{PERIOD}", expect=10)
    assert any("row_step=" in h for h in hrefs)
    assert any("metric=landing_converted" in h for h in hrefs)
    hrefs = assert_links_list_their_counts(marketing_client, f"/reports/funnel/?{PERIOD}", expect=6)
    assert any("metric=holdout_held_out" in h for h in hrefs)
    assert any("metric=nurtured_opportunities" in h for h in hrefs)


def test_the_cost_reports_credits_link_to_the_contacts_whose_changes_gave_them():
    """x touched A then B, z only B, y nothing, before entering mql in March."""
    a, b = CampaignFactory(name="A"), CampaignFactory(name="B")
    x, y, z = (ContactFactory(created_at=at("2025-01-01")) for _ in range(3))
    act(x, K.PAGE_VISIT, "2025-02-01", a)
    act(x, K.PAGE_VISIT, "2025-02-02", b)
    act(z, K.PAGE_VISIT, "2025-02-02", b)
    for contact in (x, y, z):
        move(contact, "lead", "mql", "2025-03-10")
    expected = {  # model → campaign → (MQL credit, contacts listed)
        "last_touch": {a.pk: (0, []), b.pk: (2.0, [x, z]), 0: (1.0, [y])},
        "first_touch": {a.pk: (1.0, [x]), b.pk: (1.0, [z]), 0: (1.0, [y])},
        "linear": {a.pk: (0.5, [x]), b.pk: (1.5, [x, z]), 0: (1.0, [y])},
        "u_shaped": {a.pk: (0.5, [x]), b.pk: (1.5, [x, z]), 0: (1.0, [y])},
    }
    for model, campaigns in expected.items():
        q = ReportQuery(start=MARCH.start, end=MARCH.end, attribution=model)
        rows = {r["campaign_id"] or 0: r for r in cost_per_mql(q)[0]}
        for campaign, (credit, who) in campaigns.items():
            got = listed(q, "mql_credits", row_campaign=campaign)
            assert (rows.get(campaign, {}).get("mqls", 0), got) == (
                credit,
                sorted(p.pk for p in who),
            ), (model, campaign)


def test_the_dashboard_cards_link_their_counts_to_their_contacts(marketing_client):
    lead = ContactFactory(created_at=at("2025-03-02"))
    move(lead, "lead", "mql", "2025-03-05")
    move(lead, "mql", "sql", "2025-03-06")
    new_leads_rebuild()
    hrefs = assert_links_list_their_counts(marketing_client, f"/?{PERIOD}", expect=4)
    assert {parse_qs(urlsplit(h).query)["metric"][0] for h in hrefs} == {
        "new_leads",
        "mqls",
        "sqls",
    }


def test_a_drill_down_pinned_to_a_missing_row_is_a_400(marketing_client):
    for query in (
        "metric=landing_visitors",
        "metric=holdout_treated",
        "metric=email_sent&row_step=x",
    ):
        r = marketing_client.get(f"/reports/drilldown/?{PERIOD}&{query}")
        assert r.status_code == 400


def test_the_machine_open_and_conversion_drill_downs_list_the_contacts_counted():
    a = CampaignFactory(name="A", goal_action=K.DEMO_REQUESTED)
    c = [ContactFactory(created_at=at("2025-01-01")) for _ in range(3)]
    for i, contact in enumerate(c):
        act(contact, K.EMAIL_SENT, "2025-03-02 09:00", a, f"m{i}")
    act(c[0], K.EMAIL_OPENED, "2025-03-03 09:00", a, "m0", is_machine=True)
    act(c[1], K.EMAIL_CLICKED, "2025-03-03 09:00", a, "m1", url="https://x.example/a")
    act(c[1], K.DEMO_REQUESTED, "2025-03-05 09:00", a)  # within 7 days of the click
    act(c[2], K.EMAIL_CLICKED, "2025-03-03 09:00", a, "m2", url="https://x.example/a")
    act(c[2], K.DEMO_REQUESTED, "2025-03-12 09:00", a)  # too late
    rollups_rebuild(start_day=date(2025, 3, 1), end_day=date(2025, 4, 1))
    (row,), _ = email_by_campaign(MARCH)
    machine = listed(MARCH, "email_machine_opened", row_campaign=a.pk)
    assert (row["machine_opens"], machine) == (1, [c[0].pk])
    converted = listed(MARCH, "email_converted", row_campaign=a.pk)
    assert (row["conversions"], converted) == (1, [c[1].pk])
