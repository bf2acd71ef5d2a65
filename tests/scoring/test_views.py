"""Scoring pages: who may see and change what, back-test on a draft, rescore progress."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.ingest import activities_record
from crm.lifecycle import stage_change
from crm.models import Stage
from scoring.models import AssignmentRule, RescoreRun, Rule, ScoringSettings
from tests.factories import ContactFactory, UserFactory

from .factories import EngagementRuleFactory, FitRuleFactory

pytestmark = pytest.mark.django_db
RULE_POST = {"name": "Pricing", "kind": "engagement", "activity_kind": "page_visit",
             "url_contains": "/pricing", "frequency": "once_per_day", "points": "10",
             "enabled": "on"}  # fmt: skip


def test_marketing_reads_the_rules_list(marketing_client, django_assert_max_num_queries):
    for _ in range(5):
        FitRuleFactory()
    with django_assert_max_num_queries(12):
        response = marketing_client.get("/scoring/")
    assert response.status_code == 200
    assert b"Fit rule" in response.content
    assert b"Edit</a>" not in response.content


def test_sales_cannot_open_the_rules_editor_or_settings(sales_client):
    assert sales_client.get("/scoring/rules/new/").status_code == 403
    assert sales_client.post("/scoring/rules/new/", RULE_POST).status_code == 403
    assert sales_client.post("/scoring/settings/", {"mql_threshold": 1}).status_code == 403
    assert not Rule.objects.exists()


def test_marketing_cannot_change_rules_or_settings(marketing_client):
    rule = FitRuleFactory()
    assert marketing_client.post(f"/scoring/rules/{rule.pk}/", RULE_POST).status_code == 403
    assert marketing_client.post(f"/scoring/rules/{rule.pk}/toggle/").status_code == 403
    assert marketing_client.post("/scoring/settings/", {"mql_threshold": 1}).status_code == 403
    rule.refresh_from_db()
    assert rule.enabled


def test_an_admin_back_tests_a_draft_without_saving_it(admin_client_):
    ScoringSettings.objects.create(pk=1, mql_threshold=10)
    c = ContactFactory(created_at=timezone.now() - timedelta(days=10))
    activities_record(items=[{"kind": "page_visit", "contact": c.pk,
                              "url": "https://x.example/pricing",
                              "occurred_at": timezone.now() - timedelta(days=2)}])  # fmt: skip
    response = admin_client_.post("/scoring/rules/new/", {**RULE_POST, "backtest": "1",
                                                          "days": "30"})  # fmt: skip
    assert response.status_code == 200
    assert response.context["result"]["draft"]["mqls"] == 1
    assert response.context["result"]["current"]["mqls"] == 0
    assert not Rule.objects.exists()


def test_saving_a_rule_starts_a_rescore_and_shows_its_progress(
    admin_client_, django_capture_on_commit_callbacks
):
    ContactFactory()
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client_.post("/scoring/rules/new/", {**RULE_POST, "save": "1"})
    run = RescoreRun.objects.get()
    assert response.status_code == 302
    assert response.url == f"/scoring/rescore/{run.pk}/"
    assert Rule.objects.get().versions.count() == 1
    page = admin_client_.get(response.url, headers={"HX-Request": "true"})
    assert b'hx-trigger="every 1s"' in page.content


@pytest.mark.django_db(transaction=True)  # the enqueue runs after a real commit
@pytest.mark.parametrize("action", ["save", "toggle"])
def test_a_rule_is_saved_while_the_broker_is_down_and_its_rescore_waits_queued(
    admin_client_, broker_down, action
):
    ContactFactory()
    if action == "save":
        response = admin_client_.post("/scoring/rules/new/", {**RULE_POST, "save": "1"})
    else:
        rule = FitRuleFactory(enabled=True)
        response = admin_client_.post(f"/scoring/rules/{rule.pk}/toggle/")
    assert response.status_code == 302  # not a 500 after the rule was committed
    assert Rule.objects.get().versions.exists()
    run = RescoreRun.objects.get()
    assert run.status == "queued"  # started by the minute's pick-up (tests/scoring/test_api.py)
    page = admin_client_.get(response.url)
    assert "Waiting for a worker" in page.content.decode()
    assert any(m.message.startswith(("Saved", "“")) for m in page.context["messages"])


def test_editing_a_rule_records_what_changed(admin_client_, django_capture_on_commit_callbacks):
    """A version says who changed what: the rule page's edit of the points records
    ``changed == ["points"]``, as the API does (the form had already written the new
    values into the rule the "before" snapshot was taken from)."""
    with django_capture_on_commit_callbacks(execute=False):
        admin_client_.post("/scoring/rules/new/", {**RULE_POST, "save": "1"})
        rule = Rule.objects.get()
        response = admin_client_.post(
            f"/scoring/rules/{rule.pk}/", {**RULE_POST, "points": "25", "save": "1"}
        )
    assert response.status_code == 302
    latest = rule.versions.first()
    assert (latest.number, latest.snapshot["points"], latest.changed) == (2, 25, ["points"])


@pytest.mark.parametrize(("enabled", "now"), [(True, "off"), (False, "on")])
def test_switching_a_rule_says_its_new_state(
    admin_client_, django_capture_on_commit_callbacks, enabled, now
):
    rule = EngagementRuleFactory(enabled=enabled)
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client_.post(f"/scoring/rules/{rule.pk}/toggle/", follow=True)
    rule.refresh_from_db()
    assert rule.enabled is not enabled
    assert [str(m) for m in response.context["messages"]] == [f"“{rule.name}” is now {now}."]


def test_a_bad_rule_shows_a_clear_form_error(admin_client_):
    data = {**RULE_POST, "kind": "fit", "field": "password", "operator": "equals",
            "value": "x", "save": "1"}  # fmt: skip
    response = admin_client_.post("/scoring/rules/new/", data)
    assert response.status_code == 200
    assert "There is no field" in response.content.decode()
    assert not Rule.objects.exists()


def test_a_threshold_of_zero_is_refused_in_the_form(admin_client_):
    response = admin_client_.post(
        "/scoring/settings/", {"mql_threshold": "0", "recycle_policy": "keep"}
    )
    assert response.status_code == 200
    assert "above zero" in response.content.decode()


def test_an_admin_adds_an_assignment_rule(admin_client_, sales_user):
    response = admin_client_.post(
        "/scoring/assignment/",
        {
            "order": 1,
            "name": "DACH",
            "countries": "DE,AT,CH",
            "user": sales_user.pk,
            "enabled": "on",
        },  # fmt: skip
    )
    assert response.status_code == 302
    assert AssignmentRule.objects.get().user == sales_user


def test_the_health_page_alerts_when_most_decided_mqls_were_rejected(
    sales_client, django_assert_max_num_queries
):
    now = timezone.now()
    for i in range(3):
        c = ContactFactory(created_at=now - timedelta(days=30))
        stage_change(contact=c, to_stage=Stage.MQL, at=now - timedelta(days=20))
        stage_change(
            contact=c,
            to_stage=Stage.SQL if i == 0 else Stage.RECYCLED,
            at=now - timedelta(days=10),
        )
    with django_assert_max_num_queries(12):
        response = sales_client.get("/scoring/health/")
    assert response.status_code == 200
    assert response.context["alert"]["alert"] is True
    assert b"Review the scoring model" in response.content


def test_hostile_rule_names_render_escaped(marketing_client):
    FitRuleFactory(name="<script>alert(1)</script>")
    body = marketing_client.get("/scoring/").content.decode()
    assert "<script>alert(1)" not in body
    assert "&lt;script&gt;" in body


def test_the_contact_panel_and_summaries_use_a_fixed_number_of_queries(
    django_assert_num_queries, rf
):
    from scoring import extensions

    EngagementRuleFactory(points=10, name="Visit")
    contacts = [ContactFactory() for _ in range(5)]
    at = timezone.now() - timedelta(minutes=1)
    for c in contacts:
        activities_record(items=[{"kind": "page_visit", "contact": c.pk, "occurred_at": at}])
    with django_assert_num_queries(1):
        lines = extensions.summaries([c.pk for c in contacts])
    assert lines[contacts[0].pk] == ["Why: Visit +10"]
    request = rf.get("/")
    request.user = UserFactory(username="viewer", role="sales")
    with django_assert_num_queries(1):
        panel = extensions.panel(request, contacts[0])
    assert "Visit" in panel.html
    with django_assert_num_queries(1):
        entries = extensions.timeline(contacts[0], before=None, limit=10)
    assert entries[0].title == "Score +10: Visit"
