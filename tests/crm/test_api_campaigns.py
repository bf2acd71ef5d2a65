import pytest

from crm.models import CampaignCost
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/campaigns/"


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [("anonymous", 403, 403), ("marketing", 200, 201), ("sales", 200, 403), ("admin", 200, 201)],
    indirect=["persona"],
)
def test_campaigns_are_written_by_marketing(api_client, persona, read, write):
    if persona:
        api_client.force_authenticate(persona)
    assert api_client.get(URL).status_code == read
    r = api_client.post(URL, {"name": "Webinar", "channel": "webinar"}, format="json")
    assert r.status_code == write


def test_costs_are_listed_added_shared_edited_and_deleted(marketing_api, sales_api):
    a, b = CampaignFactory(), CampaignFactory()
    costs = f"{URL}{a.pk}/costs/"
    base = {"period_start": "2026-01-01", "period_end": "2026-01-31", "amount": "100.00"}
    r = marketing_api.post(
        costs, {**base, "category": "media", "shared": True, "shared_with": [b.pk]}, format="json"
    )
    assert r.status_code == 400
    assert "shared" in r.json()
    r = marketing_api.post(
        costs,
        {
            **base,
            "category": "technology",
            "shared": True,
            "split": "emails_sent",
            "shared_with": [b.pk],
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    cost_id = r.json()["id"]
    assert sales_api.post(costs, {**base, "category": "media"}, format="json").status_code == 403
    assert [c["id"] for c in sales_api.get(costs).json()] == [cost_id]
    r = marketing_api.patch(f"{costs}{cost_id}/", {"amount": "150.00"}, format="json")
    assert r.status_code == 200
    assert r.json()["amount"] == "150.00"
    assert r.json()["shared_with"] == [b.pk]
    assert marketing_api.delete(f"{costs}{cost_id}/").status_code == 204
    assert not CampaignCost.objects.exists()


def test_the_campaign_list_pins_queries(sales_api, django_assert_num_queries):
    CampaignFactory.create_batch(5)
    sales_api.get(URL)  # the user's roles are cached after the first request
    with django_assert_num_queries(2):  # count, page
        r = sales_api.get(URL)
    assert r.json()["count"] == 5
