from datetime import timedelta

import pytest
from django.utils import timezone

from crm import sales
from crm.models import Deal, LifecycleTransition, Stage
from tests.factories import ContactFactory, DealFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/deals/"


def test_creating_a_deal_moves_the_contact_to_opportunity(sales_api, sales_user):
    contact = ContactFactory(stage=Stage.SQL, created_at=timezone.now() - timedelta(days=9))
    at = timezone.now() - timedelta(days=2)
    response = sales_api.post(
        URL, {"contact": contact.pk, "amount": "1500.00", "name": "Pilot", "created_at": at}
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["contact_stage"], body["status"], body["amount"]) == (
        Stage.OPPORTUNITY,
        "open",
        "1500.00",
    )
    assert body["owner"]["id"] == sales_user.pk
    contact.refresh_from_db()
    assert contact.stage_changed_at == at


@pytest.mark.parametrize(
    "data",
    [
        {"amount": "1"},
        {"contact": 999999, "amount": "1"},
        {"contact": "abc", "amount": "1"},
        {"contact": None, "amount": "-1"},
        {"contact": None, "amount": "1", "created_at": "2020-01-01T00:00:00"},
    ],
)
def test_bad_deals_are_a_400(sales_api, data):
    contact = ContactFactory(stage=Stage.SQL)
    if data.get("contact", 0) is None:
        data["contact"] = contact.pk
    response = sales_api.post(URL, data)
    assert response.status_code == 400, response.json()
    assert not Deal.objects.exists()


def test_a_deal_for_a_disqualified_contact_is_a_409(sales_api):
    contact = ContactFactory(stage=Stage.DISQUALIFIED)
    response = sales_api.post(URL, {"contact": contact.pk, "amount": "1"})
    assert (response.status_code, response.json()["current_stage"]) == (409, Stage.DISQUALIFIED)


def test_winning_and_repeating_the_win(sales_api, sales_user):
    deal = sales.deal_create(contact=ContactFactory(stage=Stage.SQL), amount=10, by=sales_user)
    response = sales_api.post(f"{URL}{deal.pk}/win/", {})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["contact_stage"]) == ("won", "customer")
    again = sales_api.post(f"{URL}{deal.pk}/win/", {})
    assert again.status_code == 409
    assert (
        LifecycleTransition.objects.filter(contact=deal.contact, to_stage="customer").count() == 1
    )


def test_losing_with_a_recycle_reason(sales_api, sales_user):
    deal = sales.deal_create(contact=ContactFactory(stage=Stage.SQL), amount=10, by=sales_user)
    bad = sales_api.post(f"{URL}{deal.pk}/lose/", {"reason": "x", "recycle_reason": "bad_fit"})
    assert bad.status_code == 400
    assert sales_api.post(f"{URL}{deal.pk}/lose/", {}).status_code == 400
    response = sales_api.post(
        f"{URL}{deal.pk}/lose/", {"reason": "Timing", "recycle_reason": "bad_timing"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["lost_reason"], body["contact_stage"]) == (
        "lost",
        "Timing",
        "recycled",
    )


def test_editing_and_deleting(sales_api, sales_user, other_sales_user):
    deal = sales.deal_create(contact=ContactFactory(stage=Stage.SQL), amount=10, by=sales_user)
    response = sales_api.patch(f"{URL}{deal.pk}/", {"amount": "20", "owner": other_sales_user.pk})
    assert response.status_code == 200, response.json()
    assert (response.json()["amount"], response.json()["owner"]["id"]) == (
        "20.00",
        other_sales_user.pk,
    )
    assert sales_api.patch(f"{URL}{deal.pk}/", {"status": "won"}).json()["status"] == "open"
    sales.deal_win(deal=deal, by=sales_user)
    assert sales_api.patch(f"{URL}{deal.pk}/", {"amount": "1"}).status_code == 409
    assert sales_api.delete(f"{URL}{deal.pk}/").status_code == 409
    other = sales.deal_create(contact=ContactFactory(stage=Stage.SQL), amount=1, by=sales_user)
    assert sales_api.delete(f"{URL}{other.pk}/").status_code == 204


def test_the_list_filters_and_keeps_a_fixed_query_count(
    sales_api, sales_user, django_assert_num_queries
):
    for amount in (10, 500, 900):
        DealFactory(amount=amount, owner=sales_user)
    DealFactory(amount=5, status=Deal.Status.WON, closed_at=timezone.now())
    assert sales_api.get(URL, {"status": "won"}).json()["count"] == 1
    assert sales_api.get(URL, {"min_amount": 400, "max_amount": 900}).json()["count"] == 2
    assert sales_api.get(URL, {"owner": sales_user.pk}).json()["count"] == 3
    assert sales_api.get(URL, {"ordering": "amount"}).json()["results"][0]["amount"] == "5.00"
    assert sales_api.get(URL, {"created_after": "nope"}).status_code == 400
    with django_assert_num_queries(2):  # count, page
        sales_api.get(URL)
    for _ in range(10):
        DealFactory(owner=sales_user)
    with django_assert_num_queries(2):
        assert sales_api.get(URL).json()["count"] == 14


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [
        ("anonymous", (401, 403), (401, 403)),
        ("marketing", (200,), (403,)),
        ("sales", (200,), (201,)),
        ("admin", (200,), (201,)),
    ],
    indirect=["persona"],
)
def test_only_sales_and_admin_write_deals(api_client, persona, read, write):
    contact = ContactFactory(stage=Stage.SQL)
    deal = DealFactory()
    if persona is not None:
        api_client.force_authenticate(persona)
    assert api_client.get(URL).status_code in read
    assert api_client.get(f"{URL}{deal.pk}/").status_code in read
    assert api_client.post(URL, {"contact": contact.pk, "amount": "1"}).status_code in write
    win = api_client.post(f"{URL}{deal.pk}/win/", {}).status_code
    assert win in ((401, 403) if 201 not in write else (200,))


@pytest.mark.parametrize(
    "query",
    [
        "closed_before=0098-05-22T21%3A49%3A47%2B17%3A02",
        "min_amount=-3.7074802069338905e%2B199",
        "created_after=9999-12-31T23%3A59%3A59-23%3A59",
    ],
)
def test_out_of_range_filters_are_a_400_not_a_500(sales_api, query):
    response = sales_api.get(f"/api/v1/deals/?{query}")
    assert response.status_code == 400


def test_an_impossible_or_far_away_deal_time_is_refused(sales_api):
    from crm.services import contact_create

    contact = contact_create(email="far@example.com")
    for created_at in ("2026-13-45T10:00:00Z", "0001-01-01T00:00:00+17:00"):
        response = sales_api.post(
            "/api/v1/deals/", {"contact": contact.pk, "amount": "10", "created_at": created_at}
        )
        assert response.status_code == 400, created_at
