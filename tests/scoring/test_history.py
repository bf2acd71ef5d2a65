"""The history of the scoring settings and of the lead-assignment rules: who changed what,
when — through every door that writes them (page, API, service)."""

import pytest

from scoring import services
from scoring.models import AssignmentRule, AssignmentRuleChange, ScoringSettings, SettingsVersion
from tests.scoring.factories import AssignmentRuleFactory

pytestmark = pytest.mark.django_db


def test_a_settings_change_on_the_page_is_recorded_with_who_and_what_from_what(
    admin_client_, admin_user
):
    ScoringSettings.objects.create(pk=1, mql_threshold=100, recycle_policy="halve")
    response = admin_client_.post(
        "/scoring/settings/", {"mql_threshold": 80, "min_fit": "", "recycle_policy": "halve"}
    )
    assert response.status_code == 302
    version = SettingsVersion.objects.get()
    assert version.by == admin_user
    assert version.changed == ["mql_threshold"]
    assert version.previous == {"mql_threshold": 100}
    assert version.snapshot == {"mql_threshold": 80, "min_fit": None, "recycle_policy": "halve"}
    assert version.summary() == "MQL threshold 100 → 80"


def test_a_settings_change_through_the_api_is_recorded(admin_api, admin_user):
    ScoringSettings.objects.create(pk=1, mql_threshold=100, recycle_policy="halve")
    response = admin_api.patch(
        "/api/v1/scoring/settings/", {"recycle_policy": "reset", "min_fit": 10}, format="json"
    )
    assert response.status_code == 200
    version = SettingsVersion.objects.get()
    assert (version.by, version.changed) == (admin_user, ["min_fit", "recycle_policy"])
    assert version.summary() == "minimum fit none → 10, recycle policy halve → reset"


def test_saving_the_same_settings_again_records_no_change(admin_user):
    services.settings_update(data={"mql_threshold": 90}, by=admin_user)
    services.settings_update(data={"mql_threshold": 90, "recycle_policy": "halve"}, by=admin_user)
    assert SettingsVersion.objects.count() == 1


def test_a_refused_settings_change_records_nothing(admin_user):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.settings_update(data={"mql_threshold": 0}, by=admin_user)
    assert not SettingsVersion.objects.exists()


def test_the_settings_page_shows_the_changes(admin_client_, admin_user):
    services.settings_update(data={"mql_threshold": 70}, by=admin_user)
    page = admin_client_.get("/scoring/settings/").content.decode()
    assert "MQL threshold 100 → 70" in page
    assert str(admin_user) in page


def test_adding_an_assignment_rule_on_the_page_records_who_added_it(
    admin_client_, admin_user, sales_user
):
    response = admin_client_.post(
        "/scoring/assignment/",
        {"order": 1, "name": "DACH", "countries": "DE,AT", "user": sales_user.pk, "enabled": "on"},
    )
    assert response.status_code == 302
    change = AssignmentRuleChange.objects.get()
    assert (change.action, change.by, change.rule) == (
        "created",
        admin_user,
        AssignmentRule.objects.get(),
    )
    assert change.snapshot["name"] == "DACH"
    assert change.snapshot["user"] == sales_user.pk


def test_removing_an_assignment_rule_keeps_its_history(admin_client_, admin_user, sales_user):
    rule = services.assignment_rule_save(
        data={"name": "Fintech", "industry": "Fintech", "user": sales_user}, by=admin_user
    )
    response = admin_client_.post(f"/scoring/assignment/{rule.pk}/delete/")
    assert response.status_code == 302
    assert not AssignmentRule.objects.exists()
    created, deleted = AssignmentRuleChange.objects.order_by("at", "pk")
    assert (created.action, created.rule) == ("created", None)
    assert (deleted.action, deleted.by, deleted.snapshot["name"]) == (
        "deleted",
        admin_user,
        "Fintech",
    )


def test_changing_an_assignment_rule_records_the_fields_that_changed(
    admin_user, sales_user, other_sales_user
):
    rule = AssignmentRuleFactory(user=sales_user)
    services.assignment_rule_save(
        rule=rule, data={"user": other_sales_user, "countries": "FR", "order": rule.order}
    )
    change = AssignmentRuleChange.objects.get()
    assert (change.action, change.changed) == ("changed", ["countries", "user"])
    assert change.summary() == "changed (countries, user)"
    services.assignment_rule_save(rule=rule, data={"countries": "FR"}, by=admin_user)
    assert AssignmentRuleChange.objects.count() == 1  # the same values again: no change


def test_the_assignment_page_shows_the_changes(admin_client_, admin_user, sales_user):
    rule = services.assignment_rule_save(
        data={"name": "Enterprise", "size_band": "1000+", "user": sales_user}, by=admin_user
    )
    services.assignment_rule_delete(rule=rule, by=admin_user)
    page = admin_client_.get("/scoring/assignment/").content.decode()
    assert page.count("Enterprise") == 2
    assert "deleted" in page
