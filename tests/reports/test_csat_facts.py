"""Property: the customers report's CSAT served by the day rows (reports.csat_facts) equals
the figure read from the answer activities, for random answers — out-of-range ones, answers
given as strings, missing ones, answers near day boundaries in the site time zone, and a
contact erased (its answers' details cleared); the rebuild gives the rows the upkeep kept
and the reconciliation finds nothing to repair."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Activity, Contact
from crm.models import ActivityKind as K
from crm.privacy import contact_erase
from reports.csat_facts import (
    answer_of,
    csat_apply_activities,
    csat_daily_rebuild,
    csat_daily_reconcile,
)
from reports.metrics.customers import csat, csat_raw
from reports.models import CsatDaily
from reports.query import ReportQuery
from tests.factories import CampaignFactory, ContactFactory

from .factories import act, at

pytestmark = pytest.mark.django_db

BASE = at("2025-01-01")
ANSWER = st.one_of(st.integers(0, 6), st.sampled_from(["4", " 3 ", "5", None]))
answer_event = st.tuples(st.integers(0, 2), st.integers(0, 60), st.integers(0, 23), ANSWER)

PERIODS = [
    ReportQuery(start=date(2025, 1, 1), end=date(2025, 3, 1)),
    ReportQuery(start=date(2025, 1, 10), end=date(2025, 1, 11)),
    ReportQuery(start=date(2025, 2, 3), end=date(2025, 2, 20)),
    ReportQuery(start=date(2024, 1, 1), end=date(2024, 2, 1)),  # empty
]


def _stored():
    return sorted(CsatDaily.objects.exclude(n=0).values_list("day", "answer", "n"))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(evs=st.lists(answer_event, min_size=1, max_size=15), erase=st.booleans())
def test_served_csat_equals_the_answers(evs, erase):
    CsatDaily.objects.all().delete()
    Activity.objects.all().delete()
    Contact.objects.all().delete()
    contacts = [Contact.objects.create(email=f"c{i}@x.example", created_at=BASE) for i in range(3)]
    for c, day, hour, answer in evs:
        details = {} if answer is None else {"answer": answer}
        acts = Activity.objects.bulk_create(
            [
                Activity(
                    contact=contacts[c],
                    kind=K.CSAT_ANSWER,
                    occurred_at=BASE + timedelta(days=day, hours=hour),
                    details=details,
                ),
                Activity(contact=contacts[c], kind=K.PAGE_VISIT, occurred_at=BASE, details={}),
            ]
        )
        csat_apply_activities(acts)  # what the activities-recorded handler does
    if erase:
        contact_erase(contact=contacts[0])
    for q in PERIODS:
        assert csat(q) == csat_raw(q), q
    kept = _stored()
    csat_daily_rebuild()
    assert _stored() == kept
    assert csat_daily_reconcile() == {}


def test_an_answer_is_an_integer_from_1_to_5():
    assert [answer_of(v) for v in (1, 5, "4", " 2 ", "+3")] == [1, 5, 4, 2, 3]
    assert {answer_of(v) for v in (0, 6, "x", "4.0", 4.0, True, None, "", [4])} == {None}


def test_a_campaign_or_channel_filter_keeps_the_answers_of_its_contacts():
    webinar = CampaignFactory(name="W", channel="webinar")
    mine = ContactFactory(created_at=BASE, acquired_by=webinar)
    other = ContactFactory(created_at=BASE)  # acquired by no campaign
    act(mine, K.CSAT_ANSWER, "2025-01-31 23:59", details={"answer": 5})
    act(mine, K.CSAT_ANSWER, "2025-01-10 10:00", details={"answer": 2})
    act(mine, K.CSAT_ANSWER, "2025-02-01 00:00", details={"answer": 1})  # at the end: out
    act(other, K.CSAT_ANSWER, "2025-01-10 10:00", details={"answer": 1})
    jan = {"start": date(2025, 1, 1), "end": date(2025, 2, 1)}
    assert csat(ReportQuery(**jan)) == {"csat_answers": 3, "csat": 1 / 3, "csat_mean": 2.67}
    expected = {"csat_answers": 2, "csat": 0.5, "csat_mean": 3.5}
    for q in (
        ReportQuery(**jan, campaign=webinar.id),
        ReportQuery(**jan, channel="webinar"),
    ):
        assert csat(q) == csat_raw(q) == expected
    assert csat(ReportQuery(**jan, channel="event"))["csat_answers"] == 0
