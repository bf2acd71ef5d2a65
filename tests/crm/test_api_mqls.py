import pytest
from django.test.utils import override_settings

from crm.models import LifecycleTransition, Stage
from tests.crm.sales_factories import make_mql
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/mqls/"


def accept_url(pk):
    return f"{URL}{pk}/accept/"


def reject_url(pk):
    return f"{URL}{pk}/reject/"


def test_it_lists_mqls_with_age_and_recent_activities(sales_api):
    old = make_mql(hours_ago=30, score=40)
    new = make_mql(hours_ago=2, score=90)
    ContactFactory(stage=Stage.SQL)
    for _ in range(5):
        ActivityFactory(contact=old)
    body = sales_api.get(URL).json()
    assert [r["id"] for r in body["results"]] == [new.pk, old.pk]  # highest score first
    row = body["results"][1]
    assert row["overdue"] is True
    assert 29.9 < row["age_hours"] < 30.1
    assert len(row["recent_activities"]) == 3
    assert body["results"][0]["overdue"] is False


def test_it_filters_by_owner_age_and_score_and_orders_by_age(sales_api, sales_user):
    mine = make_mql(hours_ago=30, score=10, owner=sales_user)
    free = make_mql(hours_ago=5, score=60)

    def ids(**params):
        return [r["id"] for r in sales_api.get(URL, params).json()["results"]]

    assert ids(owner="me") == [mine.pk]
    assert ids(owner=str(sales_user.pk)) == [mine.pk]
    assert ids(owner="none") == [free.pk]
    assert ids(min_age_hours=24) == [mine.pk]
    assert ids(max_age_hours=24) == [free.pk]
    assert ids(min_score=50) == [free.pk]
    assert ids(ordering="age") == [mine.pk, free.pk]
    assert ids(ordering="-age") == [free.pk, mine.pk]


@pytest.mark.parametrize(
    "params", [{"owner": "x"}, {"min_age_hours": "abc"}, {"min_score": "1.5"}, {"ordering": "?"}]
)
def test_bad_filters_are_a_400(sales_api, params):
    response = sales_api.get(URL, params)
    assert response.status_code == 400
    assert set(params) <= set(response.json())


@override_settings(CONTACT_SUMMARY_PROVIDERS=[])
def test_the_list_query_count_does_not_grow_with_rows(sales_api, django_assert_max_num_queries):
    for i in range(3):
        ActivityFactory(contact=make_mql(hours_ago=i + 1))
    with django_assert_max_num_queries(6) as small:
        sales_api.get(URL)
    for i in range(10):
        ActivityFactory(contact=make_mql(hours_ago=i + 1))
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert len(sales_api.get(URL).json()["results"]) == 13


def test_accepting_returns_the_decision_and_a_deal(sales_api):
    contact = make_mql()
    response = sales_api.post(accept_url(contact.pk), {"amount": "2500.00"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["from_stage"], body["stage"]) == (Stage.MQL, Stage.SQL)
    assert body["deal"] is not None
    contact.refresh_from_db()
    assert contact.stage == Stage.OPPORTUNITY


def test_repeating_an_accept_is_a_409_and_writes_nothing(sales_api):
    contact = make_mql()
    assert sales_api.post(accept_url(contact.pk), {}).status_code == 200
    again = sales_api.post(accept_url(contact.pk), {})
    assert again.status_code == 409
    body = again.json()
    assert body["current_stage"] == Stage.SQL
    assert body["detail"].startswith("You accepted this lead")
    assert LifecycleTransition.objects.filter(contact=contact, from_stage=Stage.MQL).count() == 1


@pytest.mark.parametrize(
    ("reason", "stage", "round_"),
    [("no_budget", Stage.RECYCLED, 1), ("competitor", Stage.DISQUALIFIED, 0)],
)
def test_rejecting_with_a_reason(sales_api, reason, stage, round_):
    contact = make_mql()
    response = sales_api.post(reject_url(contact.pk), {"reason": reason, "note": "call in Q3"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["stage"], body["reason"], body["recycle_round"]) == (stage, reason, round_)
    again = sales_api.post(reject_url(contact.pk), {"reason": reason})
    assert (again.status_code, again.json()["current_stage"]) == (409, stage)


def test_acting_on_a_contact_that_is_not_an_mql_is_a_409_with_its_stage(sales_api):
    lead = ContactFactory(stage=Stage.LEAD)
    for url, data in [(accept_url(lead.pk), {}), (reject_url(lead.pk), {"reason": "bad_fit"})]:
        response = sales_api.post(url, data)
        assert response.status_code == 409
        assert response.json()["current_stage"] == Stage.LEAD


@pytest.mark.parametrize(
    "data", [{}, {"reason": "nope"}, {"reason": "no_budget", "note": "x" * 3000}]
)
def test_a_bad_reject_is_a_400(sales_api, data):
    contact = make_mql()
    assert sales_api.post(reject_url(contact.pk), data).status_code == 400
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL


@pytest.mark.parametrize("amount", ["abc", "-1", "1e20"])
def test_a_bad_amount_is_a_400(sales_api, amount):
    contact = make_mql()
    assert sales_api.post(accept_url(contact.pk), {"amount": amount}).status_code == 400


def test_an_unknown_contact_is_a_404(sales_api):
    assert sales_api.post(accept_url(999999), {}).status_code == 404


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [
        ("anonymous", (401, 403), (401, 403)),
        ("marketing", (200,), (403,)),
        ("sales", (200,), (200,)),
        ("admin", (200,), (200,)),
    ],
    indirect=["persona"],
)
def test_only_sales_and_admin_decide(api_client, persona, read, write):
    contact = make_mql()
    if persona is not None:
        api_client.force_authenticate(persona)
    assert api_client.get(URL).status_code in read
    assert api_client.post(accept_url(contact.pk), {}).status_code in write
    assert api_client.post(reject_url(contact.pk), {"reason": "bad_fit"}).status_code in (
        (401, 403) if 200 not in write else (409,)
    )
