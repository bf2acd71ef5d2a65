"""Re-opened leads (METRICS.md "re-opened leads"): the stage at an engagement is the stage
just before it, so an engagement that re-qualifies the contact at its own instant counts,
and one at the very instant of the recycle does not; served, raw, drill-down and the
re-opening marked at ingestion agree."""

from datetime import date

import pytest

from crm.ingest import activities_record
from crm.lifecycle import stage_change
from crm.models import ActivityKind as K
from crm.models import Contact, Reopening, Stage
from reports.drilldown import contacts_for
from reports.lifecycle_facts import lifecycle_facts_rebuild
from reports.metrics.leads import reopened_counts, reopened_counts_raw
from reports.models import ReopenedDayFact
from reports.query import ReportQuery
from scoring.models import ScoringSettings
from tests.factories import ContactFactory
from tests.scoring.factories import EngagementRuleFactory

from .factories import act, at, move

pytestmark = pytest.mark.django_db
MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))


def _figures(q: ReportQuery) -> tuple:
    """(served total, raw total, drill-down contacts) for the period."""
    return (
        reopened_counts(q)[1],
        reopened_counts_raw(q)[1],
        sorted(contacts_for(q, "reopened").values_list("pk", flat=True)),
    )


def test_an_engagement_that_requalifies_the_recycled_contact_re_opens_it():
    ScoringSettings.objects.create(pk=1, mql_threshold=30, recycle_policy="reset")
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    c = ContactFactory(created_at=at("2025-02-01"))
    demo = {"kind": K.DEMO_REQUESTED, "contact": c.pk}
    activities_record(items=[{**demo, "occurred_at": "2025-02-10T09:00:00Z"}], source="test")
    stage_change(contact=c, to_stage=Stage.RECYCLED, at=at("2025-03-05 09:00"))
    # the demo request re-qualifies it: scoring dates its MQL at the request's instant
    activities_record(items=[{**demo, "occurred_at": "2025-03-20T09:00:00Z"}], source="test")
    c.refresh_from_db()
    assert (c.stage, c.stage_changed_at) == (Stage.MQL, at("2025-03-20 09:00"))
    (reopening,) = Reopening.objects.filter(contact=c)  # marked at ingestion
    assert reopening.at == at("2025-03-20 09:00")
    assert _figures(MARCH) == (1, 1, [c.pk])
    assert _figures(ReportQuery(start=date(2025, 3, 21), end=date(2025, 4, 1))) == (0, 0, [])
    assert list(ReopenedDayFact.objects.values_list("day", "prev_day")) == [
        (date(2025, 3, 20), None)
    ]


def test_an_engagement_at_the_instant_of_the_recycle_is_not_after_it():
    c = ContactFactory(created_at=at("2025-02-01"))
    move(c, "lead", "mql", "2025-03-02 09:00")
    move(c, "mql", "recycled", "2025-03-05 09:00")
    act(c, K.PAGE_VISIT, "2025-03-05 09:00")  # the recycle's own instant: not after it
    assert _figures(MARCH) == (0, 0, [])
    act(c, K.PAGE_VISIT, "2025-03-05 09:01")  # a minute later: re-opened
    assert _figures(MARCH) == (1, 1, [c.pk])
    # the upkeep's rows are those a rebuild computes
    rows = sorted(ReopenedDayFact.objects.values_list("contact_id", "day", "prev_day"))
    lifecycle_facts_rebuild(contact_ids=[c.pk])
    assert sorted(ReopenedDayFact.objects.values_list("contact_id", "day", "prev_day")) == rows
    assert rows == [(c.pk, date(2025, 3, 5), None)]


def test_ingestion_marks_no_re_opening_at_the_instant_of_the_recycle():
    c = ContactFactory(created_at=at("2025-02-01"))
    stage_change(contact=c, to_stage=Stage.MQL, at=at("2025-03-02 09:00"))
    stage_change(contact=c, to_stage=Stage.RECYCLED, at=at("2025-03-05 09:00"))
    visit = {"kind": K.PAGE_VISIT, "contact": c.pk}
    activities_record(items=[{**visit, "occurred_at": "2025-03-05T09:00:00Z"}], source="test")
    assert not Reopening.objects.filter(contact=c).exists()
    assert _figures(MARCH) == (0, 0, [])
    activities_record(items=[{**visit, "occurred_at": "2025-03-06T09:00:00Z"}], source="test")
    assert Reopening.objects.get(contact=c).at == at("2025-03-06 09:00")
    assert _figures(MARCH) == (1, 1, [c.pk])
    assert Contact.objects.get(pk=c.pk).stage == Stage.RECYCLED


def test_a_click_on_the_unsubscribe_link_is_not_a_re_opening(settings):
    """An unsubscribe-link click (reported by the provider's click tracking) is no click
    (METRICS.md "unique clicks"), so no engagement; nor is a machine's click."""
    settings.SITE_URL = "https://crm.example.com"
    c = ContactFactory(created_at=at("2025-02-01"))
    move(c, "lead", "mql", "2025-03-02 09:00")
    move(c, "mql", "recycled", "2025-03-05 09:00")
    act(c, K.EMAIL_CLICKED, "2025-03-10 09:00", url="https://CRM.example.com/u/token")
    act(c, K.EMAIL_CLICKED, "2025-03-11 09:00", url="https://x.example/offer", is_machine=True)
    assert _figures(MARCH) == (0, 0, [])
    act(c, K.EMAIL_CLICKED, "2025-03-12 09:00", url="https://x.example/offer")
    assert _figures(MARCH) == (1, 1, [c.pk])
    assert list(ReopenedDayFact.objects.values_list("day", "prev_day")) == [
        (date(2025, 3, 12), None)
    ]
    rows = sorted(ReopenedDayFact.objects.values_list("contact_id", "day", "prev_day"))
    lifecycle_facts_rebuild(contact_ids=[c.pk])
    assert sorted(ReopenedDayFact.objects.values_list("contact_id", "day", "prev_day")) == rows
