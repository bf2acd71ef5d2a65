"""The Django admin (crm.admin_site, crm.admin): the admin role only, and no side door
around the history the pages and the API protect."""

from decimal import Decimal

import pytest
from django.contrib.admin.sites import site
from django.core.cache import cache

from crm.models import Deal, LifecycleTransition, Reopening, SegmentChange, SegmentVersion
from tests.factories import ContactFactory, DealFactory, UserFactory

PASSWORD = "pw-Secret-123"  # tests.factories.UserFactory's password

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_rep(db):
    """A sales rep given the staff flag (e.g. to manage their API token)."""
    rep = UserFactory(username="sam", role="sales")
    rep.is_staff = True
    rep.save(update_fields=["is_staff"])
    return rep


@pytest.fixture
def won_deal(db):
    return DealFactory(contact=ContactFactory(), status=Deal.Status.WON, amount=50000)


@pytest.mark.parametrize("role", ["sales", "marketing"])
def test_staff_without_the_admin_role_are_refused_the_admin(client, role):
    user = UserFactory(username=f"staff-{role}", role=role)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.force_login(user)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_role_gets_the_admin(client, admin_user):
    client.force_login(admin_user)
    assert client.get("/admin/").status_code == 200


def test_the_admin_log_in_refuses_staff_without_the_admin_role(client, staff_rep):
    cache.clear()  # the log-in throttle's counters
    response = client.post("/admin/login/", {"username": "sam", "password": PASSWORD})
    assert response.status_code == 200
    assert "staff account" in str(response.context["form"].non_field_errors())
    assert "_auth_user_id" not in client.session


def test_a_staff_sales_rep_cannot_delete_a_won_deal_in_the_admin(client, staff_rep, won_deal):
    """Review finding: the admin site only checked staff status, and the sales group's
    model permissions (migration crm/0002) let a staff rep delete a won deal there."""
    client.force_login(staff_rep)
    client.post(f"/admin/crm/deal/{won_deal.pk}/delete/", {"post": "yes"})
    assert Deal.objects.filter(pk=won_deal.pk).exists()


@pytest.mark.parametrize("status", [Deal.Status.WON, Deal.Status.LOST])
def test_closed_deals_are_read_only_for_admins_too(client, admin_user, status):
    """README: won and lost deals cannot be edited or deleted: they are revenue history."""
    deal = DealFactory(contact=ContactFactory(), status=status, amount=50000)
    client.force_login(admin_user)
    page = client.get(f"/admin/crm/deal/{deal.pk}/change/")
    assert page.status_code == 200  # viewable
    assert not page.context["has_change_permission"]
    client.post(f"/admin/crm/deal/{deal.pk}/change/", {"name": "x", "amount": "1"})
    assert client.post(f"/admin/crm/deal/{deal.pk}/delete/", {"post": "yes"}).status_code == 403
    deal.refresh_from_db()
    assert (deal.amount, deal.status) == (Decimal("50000"), status)


def test_a_delete_action_over_a_selection_with_a_closed_deal_deletes_nothing(
    client, admin_user, won_deal
):
    open_deal = DealFactory(contact=ContactFactory())
    client.force_login(admin_user)
    client.post(
        "/admin/crm/deal/",
        {
            "action": "delete_selected",
            "_selected_action": [won_deal.pk, open_deal.pk],
            "post": "yes",
        },
    )
    assert Deal.objects.filter(pk__in=[won_deal.pk, open_deal.pk]).count() == 2


def test_an_open_deal_is_edited_and_deleted_through_crm_sales(client, admin_user, sales_user):
    deal = DealFactory(contact=ContactFactory(), amount=100)
    client.force_login(admin_user)
    response = client.post(
        f"/admin/crm/deal/{deal.pk}/change/",
        {"name": "Pilot", "amount": "2500.00", "owner": sales_user.pk, "status": "won"},
    )
    assert response.status_code == 302
    deal.refresh_from_db()
    assert (deal.name, deal.amount, deal.owner) == ("Pilot", Decimal("2500.00"), sales_user)
    assert deal.status == Deal.Status.OPEN, "won only through the deal page or the API"
    client.post(f"/admin/crm/deal/{deal.pk}/delete/", {"post": "yes"})
    assert not Deal.objects.filter(pk=deal.pk).exists()


def test_deals_are_not_opened_in_the_admin(admin_user, rf):
    request = rf.get("/admin/crm/deal/add/")
    request.user = admin_user
    assert not site.get_model_admin(Deal).has_add_permission(request)


@pytest.mark.parametrize("model", [LifecycleTransition, Reopening, SegmentVersion, SegmentChange])
def test_history_is_read_only_in_the_admin(admin_user, rf, model):
    request = rf.get("/admin/")
    request.user = admin_user
    model_admin = site.get_model_admin(model)
    assert model_admin.has_view_permission(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def _activity_form(contact, at, **extra):
    from django.utils import timezone

    local = timezone.localtime(at)
    return {
        "contact": contact.pk,
        "kind": "page_visit",
        "occurred_at_0": local.strftime("%Y-%m-%d"),
        "occurred_at_1": local.strftime("%H:%M:%S"),
        "url": "https://acme.example/pricing",
        "details": "{}",
        **extra,
    }


def test_an_activity_added_in_the_admin_goes_through_ingestion_and_its_handlers(client, admin_user):
    """Not a side door: the activity is recorded by crm.ingest, so the scoring handler
    (among all of them) gives its points, as for the API."""
    from datetime import timedelta

    from django.utils import timezone

    from crm.models import Activity
    from scoring.models import LedgerEntry
    from tests.scoring.factories import EngagementRuleFactory

    rule = EngagementRuleFactory(points=7, url_contains="/pricing")
    contact = ContactFactory()
    client.force_login(admin_user)
    at = timezone.now().replace(microsecond=0) - timedelta(hours=2)
    response = client.post("/admin/crm/activity/add/", _activity_form(contact, at))
    assert response.status_code == 302
    activity = Activity.objects.get(contact=contact)
    assert activity.occurred_at == at
    entry = LedgerEntry.objects.get(contact=contact)
    assert (entry.rule_id, entry.activity_id, entry.points) == (rule.pk, activity.pk, 7)
    contact.refresh_from_db()
    assert contact.scorecard.score == 7


def test_the_admin_refuses_what_ingestion_refuses_and_never_edits_or_deletes_activities(
    client, admin_user
):
    from datetime import timedelta

    from django.utils import timezone

    from crm.models import Activity
    from tests.factories import ActivityFactory

    contact = ContactFactory()
    client.force_login(admin_user)
    future = timezone.now() + timedelta(days=2)
    response = client.post("/admin/crm/activity/add/", _activity_form(contact, future))
    assert response.status_code == 200
    assert "occurred_at" in response.context["adminform"].form.errors
    response = client.post(
        "/admin/crm/activity/add/",
        _activity_form(contact, timezone.now() - timedelta(hours=1), details="[1, 2]"),
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not Activity.objects.filter(contact=contact).exists()

    activity = ActivityFactory(contact=contact, kind="page_visit")
    page = client.get(f"/admin/crm/activity/{activity.pk}/change/")
    assert page.status_code == 200  # viewed, read-only
    assert b'name="_save"' not in page.content
    client.post(
        f"/admin/crm/activity/{activity.pk}/change/",
        _activity_form(ContactFactory(), timezone.now() - timedelta(hours=1)),
    )
    client.post(f"/admin/crm/activity/{activity.pk}/delete/", {"post": "yes"})
    activity.refresh_from_db()
    assert activity.contact_id == contact.pk
