"""The scoring API: rules (admin writes), settings, rescore runs, back-test, breakdown."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.ingest import activities_record
from crm.lifecycle import stage_change
from crm.models import Stage
from crm.models.choices import ActivityKind
from scoring import tasks
from scoring.models import RescoreRun, Rule, RuleVersion, ScoringSettings
from tests.factories import ContactFactory

from .factories import EngagementRuleFactory

pytestmark = pytest.mark.django_db
RULES = "/api/v1/scoring/rules/"
FIT = {"name": "VP", "kind": "fit", "field": "job_title", "operator": "contains",
       "value": "VP", "points": 15}  # fmt: skip


def test_an_admin_creates_a_rule_and_a_version_is_recorded(admin_api, admin_user):
    response = admin_api.post(RULES, FIT, format="json")
    assert response.status_code == 201, response.json()
    rule = Rule.objects.get()
    version = RuleVersion.objects.get(rule=rule)
    assert version.by == admin_user
    assert "points" in version.changed
    response = admin_api.patch(f"{RULES}{rule.pk}/", {"points": 20}, format="json")
    assert response.status_code == 200
    assert admin_api.get(f"{RULES}{rule.pk}/versions/").json()[0]["changed"] == ["points"]


@pytest.mark.parametrize("client_name", ["marketing_api", "sales_api"])
def test_marketing_and_sales_read_rules_but_cannot_change_them(client_name, request):
    api = request.getfixturevalue(client_name)
    rule = EngagementRuleFactory()
    assert api.get(RULES).status_code == 200
    assert api.post(RULES, FIT, format="json").status_code == 403
    assert api.patch(f"{RULES}{rule.pk}/", {"points": 1}, format="json").status_code == 403
    assert api.put("/api/v1/scoring/settings/", {"mql_threshold": 5}).status_code == 403
    assert api.post("/api/v1/scoring/rescore/").status_code == 403


def test_anonymous_cannot_read_rules(api_client):
    assert api_client.get(RULES).status_code in (401, 403)


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"field": "salary_secret"}, "field", "There is no field"),
        ({"field": "attributes.employees", "operator": "gt", "value": "many"}, "value",
         "not a number"),
        ({"operator": "gt", "value": "5"}, "operator", "numeric comparisons"),
        ({"points": 5000}, "points", "between -1000 and 1000"),
        ({"points": "ten"}, "points", "whole number"),
        ({"kind": "magic"}, "kind", "Choose fit"),
        ({"active_from": "next week"}, "active_from", "ISO 8601"),
        ({"active_from": "2026-02-30T00:00"}, "active_from", "ISO 8601"),  # no such day
    ],
)  # fmt: skip
def test_bad_rules_are_refused_with_a_clear_message(admin_api, change, field, text):
    response = admin_api.post(RULES, {**FIT, **change}, format="json")
    assert response.status_code == 400
    assert text in " ".join(response.json()[field])
    assert not Rule.objects.exists()


def test_a_long_url_filter_is_refused(admin_api):
    data = {"name": "x", "kind": "engagement", "activity_kind": "page_visit", "points": 5,
            "url_contains": "a" * 300}  # fmt: skip
    response = admin_api.post(RULES, data, format="json")
    assert response.status_code == 400
    assert "url_contains" in response.json()


@pytest.mark.parametrize("threshold", [0, -5, "abc"])
def test_a_threshold_of_zero_or_less_is_refused(admin_api, threshold):
    response = admin_api.put("/api/v1/scoring/settings/", {"mql_threshold": threshold})
    assert response.status_code == 400
    assert "above zero" in response.json()["mql_threshold"][0]


def test_an_admin_changes_settings_and_everyone_reads_them(admin_api, sales_api):
    data = {"mql_threshold": 80, "min_fit": 10, "recycle_policy": "reset"}
    assert admin_api.put("/api/v1/scoring/settings/", data, format="json").status_code == 200
    assert sales_api.get("/api/v1/scoring/settings/").json()["mql_threshold"] == 80


def test_starting_a_rescore_returns_its_run_id(admin_api, django_capture_on_commit_callbacks):
    ContactFactory()
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_api.post("/api/v1/scoring/rescore/")
    assert response.status_code == 202
    run = RescoreRun.objects.get(pk=response.json()["id"])
    assert admin_api.get(f"/api/v1/scoring/rescore/{run.pk}/").json()["status"] == "queued"


@pytest.mark.django_db(transaction=True)  # the enqueue runs after a real commit
def test_a_rescore_asked_for_while_the_broker_is_down_is_accepted_and_started_later(
    admin_api, broker_down, caplog
):
    ContactFactory()
    response = admin_api.post("/api/v1/scoring/rescore/")
    assert response.status_code == 202  # not a 500 for a run that was in fact committed
    run = RescoreRun.objects.get(pk=response.json()["id"])
    assert run.status == "queued"
    assert "could not be queued" in caplog.text
    # Beat's minute pick-up leaves a run queued a moment ago to its own task …
    assert tasks.rescores_pick_up.apply().result is None
    # … and starts one still queued minutes later.
    RescoreRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=3))
    assert tasks.rescores_pick_up.apply().result == run.pk
    run.refresh_from_db()
    assert (run.status, run.processed) == ("done", 1)


def test_the_contact_score_breakdown_splits_fit_and_engagement(sales_api):
    EngagementRuleFactory(points=10, name="Visits")
    c = ContactFactory()
    activities_record(items=[{"kind": "page_visit", "contact": c.pk,
                              "occurred_at": timezone.now() - timedelta(minutes=1)}])  # fmt: skip
    body = sales_api.get(f"/api/v1/contacts/{c.pk}/score/").json()
    assert body["score"] == 10
    assert body["engagement"] == 10
    assert body["rules"][0]["name"] == "Visits"


def test_backtest_compares_a_draft_with_the_current_rules(marketing_api):
    ScoringSettings.objects.create(pk=1, mql_threshold=20)
    EngagementRuleFactory(points=5, activity_kind=ActivityKind.DEMO_REQUESTED)
    now = timezone.now()
    good = ContactFactory(created_at=now - timedelta(days=20))
    bad = ContactFactory(created_at=now - timedelta(days=20))
    for c in (good, bad):
        activities_record(items=[{"kind": "demo_requested", "contact": c.pk,
                                  "occurred_at": now - timedelta(days=10)}])  # fmt: skip
        stage_change(contact=c, to_stage=Stage.MQL, at=now - timedelta(days=9))
    stage_change(contact=good, to_stage=Stage.SQL, at=now - timedelta(days=8))
    stage_change(contact=bad, to_stage=Stage.RECYCLED, at=now - timedelta(days=8))
    draft = [{"name": "Demo", "kind": "engagement", "activity_kind": "demo_requested",
              "points": 30}]  # fmt: skip
    response = marketing_api.post("/api/v1/scoring/backtest/", {"days": 30, "rules": draft},
                                  format="json")  # fmt: skip
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["current"]["mqls"] == 0
    assert body["draft"] == {"mqls": 2, "accepted": 1, "rejected": 1, "precision": 0.5}
    assert body["decided"] == {"accepted": 1, "rejected": 1}


def test_backtest_refuses_a_bad_draft(admin_api):
    response = admin_api.post(
        "/api/v1/scoring/backtest/",
        {
            "days": 30,
            "rules": [
                {"kind": "fit", "field": "nope", "operator": "equals", "value": "x", "points": 1}
            ],
        },  # fmt: skip
        format="json",
    )
    assert response.status_code == 400
    assert "There is no field" in str(response.json())


def test_backtest_honours_a_draft_rules_active_from(admin_api):
    """A draft rule "active from 5 days ago" replayed over 30 days does not count a visit
    of 20 days ago, as the saved rule would not; a date that is none is refused."""
    ScoringSettings.objects.create(pk=1, mql_threshold=10)
    now = timezone.now()
    c = ContactFactory(created_at=now - timedelta(days=60))
    activities_record(items=[{"contact": c.pk, "kind": "page_visit",
                              "occurred_at": now - timedelta(days=20)}])  # fmt: skip
    rule = {"kind": "engagement", "activity_kind": "page_visit", "points": 10}
    mqls = []
    for days_ago in (5, 25):
        since = (now - timedelta(days=days_ago)).isoformat()
        body = {"days": 30, "rules": [{**rule, "active_from": since}]}
        response = admin_api.post("/api/v1/scoring/backtest/", body, format="json")
        assert response.status_code == 200, response.content
        mqls.append(response.json()["draft"]["mqls"])
    assert mqls == [0, 1]
    body = {"days": 30, "rules": [{**rule, "active_from": "2026-02-30T00:00"}]}
    response = admin_api.post("/api/v1/scoring/backtest/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"rules[0]": ["active_from: Use an ISO 8601 date-time."]}
