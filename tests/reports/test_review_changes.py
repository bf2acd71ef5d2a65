"""The changes to a register item listed beside its short-term trend (issue 9: "with the
changes to the item in between listed next to it … so the reviewer can see why it moved")."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.segments import segment_save
from reports.review import services
from reports.review.models import ReviewItem
from reports.review.trends import short_term
from scoring import models as scoring_models
from scoring import services as scoring_services
from scoring.models import AssignmentRule
from tests.nurture.factories import ProgramFactory, TriggerFactory
from tests.scoring.factories import FitRuleFactory

pytestmark = pytest.mark.django_db

T = ReviewItem.Type


def rule_set(type):
    services.register_sync()
    return ReviewItem.objects.get(type=type)


def edits(item) -> list[str]:
    return [e.text for e in short_term(item)["edits"]]


def test_the_scoring_item_lists_a_settings_change_in_between(admin_client_, admin_user):
    item = rule_set(T.SCORING)
    response = admin_client_.post(
        "/scoring/settings/", {"mql_threshold": 60, "min_fit": "", "recycle_policy": "reset"}
    )
    assert response.status_code == 302
    assert edits(item) == [
        f"Scoring settings: MQL threshold 100 → 60, recycle policy halve → reset by {admin_user}"
    ]


def test_a_change_before_the_compared_periods_is_not_listed(admin_user):
    item = rule_set(T.SCORING)
    scoring_services.settings_update(data={"mql_threshold": 60}, by=admin_user)
    # Reviewed 10 days after the item started: the trend compares [now-10d, now) with the
    # ten days before; a change made before those twenty days is history, not "in between".
    now = timezone.now()
    ReviewItem.objects.filter(pk=item.pk).update(
        started_at=now - timedelta(days=60), last_reviewed_at=now - timedelta(days=10)
    )
    scoring_models.SettingsVersion.objects.update(at=now - timedelta(days=21))
    item.refresh_from_db()
    assert edits(item) == []
    scoring_models.SettingsVersion.objects.update(at=now - timedelta(days=19))
    assert len(edits(item)) == 1


def test_the_scoring_item_lists_a_rule_saved_unchanged_as_nothing_not_as_created(admin_user):
    item = rule_set(T.SCORING)
    rule = scoring_services.rule_save(
        data={
            "name": "VP",
            "kind": "fit",
            "field": "job_title",
            "operator": "contains",
            "value": "VP",
            "points": 15,
        },  # fmt: skip
        by=admin_user,
    )
    scoring_services.rule_save(rule=rule, data={"points": 15}, by=admin_user)
    scoring_services.rule_save(rule=rule, data={"points": 20}, by=admin_user)
    assert edits(item) == [
        f"Rule “VP” v3 (points) by {admin_user}",
        f"Rule “VP” v1 (created) by {admin_user}",
    ]


def test_the_assignment_item_lists_rules_added_and_removed_in_between(
    admin_client_, admin_user, sales_user
):
    FitRuleFactory()  # the rule sets go live with the first scoring rule
    item = rule_set(T.ASSIGNMENT)
    admin_client_.post(
        "/scoring/assignment/",
        {"order": 1, "name": "DACH", "countries": "DE,AT", "user": sales_user.pk, "enabled": "on"},
    )
    rule = AssignmentRule.objects.get()
    admin_client_.post(f"/scoring/assignment/{rule.pk}/delete/")
    assert edits(item) == [
        f"Assignment rule “DACH” deleted by {admin_user}",
        f"Assignment rule “DACH” created by {admin_user}",
    ]


def test_the_assignment_item_lists_a_changed_rule_with_the_fields_that_changed(
    admin_user, sales_user, other_sales_user
):
    item = rule_set(T.ASSIGNMENT)
    rule = scoring_services.assignment_rule_save(
        data={"name": "Fintech", "industry": "Fintech", "user": sales_user}, by=admin_user
    )
    scoring_services.assignment_rule_save(
        rule=rule, data={"user": other_sales_user, "enabled": False}, by=admin_user
    )
    assert edits(item)[0] == f"Assignment rule “Fintech” changed (user, enabled) by {admin_user}"


def dynamic(name, definition, *, segment=None, by=None):
    return segment_save(segment=segment, name=name, kind="dynamic", definition=definition, by=by)


EU = {"field": "country", "op": "in", "value": ["DE", "FR"]}
HOT = {"field": "score", "op": "gte", "value": 50}


def test_a_program_item_lists_definition_changes_of_the_segments_that_let_contacts_in(
    admin_user,
):
    audience, joined = dynamic("EU", EU), dynamic("Hot", HOT)
    program = ProgramFactory(audience=audience)
    TriggerFactory(program=program, kind="segment_joined", segment=joined)
    services.register_sync()
    item = ReviewItem.objects.get(type=T.PROGRAM, object_id=program.pk)
    dynamic("EU", {**EU, "value": ["DE", "FR", "IT"]}, segment=audience, by=admin_user)
    dynamic("Hot", {**HOT, "value": 40}, segment=joined, by=admin_user)
    listed = edits(item)
    assert f"Segment “EU” definition changed (v2) by {admin_user}" in listed
    assert f"Segment “Hot” definition changed (v2) by {admin_user}" in listed


def test_an_automation_item_lists_its_segment_but_not_a_rename_that_changed_no_one(
    admin_user,
):
    hot = dynamic("Hot", HOT)
    trigger = TriggerFactory(kind="segment_joined", segment=hot)
    services.register_sync()
    item = ReviewItem.objects.get(type=T.AUTOMATION, object_id=trigger.pk)
    dynamic("Hot leads", HOT, segment=hot, by=admin_user)
    assert segment_edits(item) == []
    dynamic("Hot leads", {**HOT, "value": 30}, segment=hot, by=admin_user)
    assert segment_edits(item) == [f"Segment “Hot leads” definition changed (v3) by {admin_user}"]


def segment_edits(item) -> list[str]:
    return [e for e in edits(item) if e.startswith("Segment")]


def test_the_item_page_lists_the_changes_in_between(marketing_client, admin_user):
    item = rule_set(T.SCORING)
    scoring_services.settings_update(data={"mql_threshold": 75}, by=admin_user)
    page = marketing_client.get(f"/reports/review/{item.pk}/").content.decode()
    assert "Scoring settings: MQL threshold 100 → 75" in page
