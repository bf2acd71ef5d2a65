import pytest
from django.urls import reverse

from crm.models import Campaign, CampaignCost
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [("anonymous", 302, 302), ("marketing", 200, 302), ("sales", 200, 403), ("admin", 200, 302)],
    indirect=["persona"],
)
def test_campaign_pages_obey_roles(client, persona, read, write):
    campaign = CampaignFactory()
    if persona:
        client.force_login(persona)
    assert client.get(reverse("crm:campaign-list")).status_code == read
    assert client.get(campaign.get_absolute_url()).status_code == read
    r = client.post(
        reverse("crm:campaign-create"),
        {
            "name": "Spring",
            "channel": "email",
            "type": "nurture",
            "status": "draft",
        },
    )
    assert r.status_code == write


def test_costs_are_added_edited_shared_and_deleted(marketing_client, django_assert_num_queries):
    a, b = CampaignFactory(), CampaignFactory()
    url = reverse("crm:cost-create", args=[a.pk])
    base = {"period_start": "2026-01-01", "period_end": "2026-01-31", "amount": "500"}
    r = marketing_client.post(
        url, {**base, "category": "media", "shared": "on", "split": "equal", "shared_with": [b.pk]}
    )
    assert r.status_code == 200
    assert "Only labour and technology" in r.content.decode()
    r = marketing_client.post(
        url,
        {
            **base,
            "category": "labour",
            "shared": "on",
            "split": "emails_sent",
            "shared_with": [b.pk],
        },
    )
    assert r.status_code == 302
    cost = CampaignCost.objects.get()
    assert list(cost.shared_with.all()) == [b]
    r = marketing_client.post(
        reverse("crm:cost-edit", args=[a.pk, cost.pk]),
        {**base, "amount": "750", "category": "media", "split": "equal"},
    )
    assert r.status_code == 302
    cost.refresh_from_db()
    assert (cost.amount, cost.shared, cost.shared_with.count()) == (750, False, 0)
    marketing_client.get(a.get_absolute_url())
    with django_assert_num_queries(8):  # 7 for the page + the top bar's unread-notices count
        assert marketing_client.get(a.get_absolute_url()).status_code == 200
    marketing_client.post(reverse("crm:cost-delete", args=[a.pk, cost.pk]))
    assert not CampaignCost.objects.exists()


def test_the_campaign_list_pins_its_queries(marketing_client, django_assert_num_queries):
    for _ in range(5):
        CampaignFactory()
    marketing_client.get(reverse("crm:campaign-list"))
    with django_assert_num_queries(5):  # 4 for the page + the top bar's unread-notices count
        marketing_client.get(reverse("crm:campaign-list"))
    assert Campaign.objects.count() == 5


def test_a_negative_cost_or_budget_is_refused_with_a_field_message(marketing_client, marketing_api):
    campaign = CampaignFactory()
    r = marketing_client.post(
        reverse("crm:cost-create", args=[campaign.pk]),
        {
            "period_start": "2026-01-01",
            "period_end": "2026-01-31",
            "amount": "-5",
            "category": "media",
            "split": "equal",
        },
    )
    page = r.content.decode()
    assert "greater than or equal to 0" in page
    assert "cost_amount_nonneg" not in page
    assert not CampaignCost.objects.exists()
    r = marketing_client.post(
        reverse("crm:campaign-create"),
        {"name": "Neg", "channel": "email", "type": "nurture", "status": "draft", "budget": "-1"},
    )
    assert "greater than or equal to 0" in r.content.decode()
    assert not Campaign.objects.filter(name="Neg").exists()
    r = marketing_api.post(
        "/api/v1/campaigns/",
        {"name": "Neg", "channel": "email", "type": "nurture", "status": "draft", "budget": "-1"},
        format="json",
    )
    assert r.status_code == 400
    assert "budget" in r.json()
