import pytest
from django.urls import reverse

from crm import services
from crm.models import Company
from tests.factories import CompanyFactory, DealFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [("anonymous", 302, 302), ("marketing", 200, 302), ("sales", 200, 403), ("admin", 200, 302)],
    indirect=["persona"],
)
def test_companies_are_read_by_all_roles_and_written_by_marketing(client, persona, read, write):
    company = CompanyFactory()
    if persona:
        client.force_login(persona)
    assert client.get(reverse("crm:company-list")).status_code == read
    assert client.get(company.get_absolute_url()).status_code == read
    r = client.post(reverse("crm:company-create"), {"name": "New Co"})
    assert r.status_code == write


def test_the_company_page_lists_contacts_and_deals(marketing_client, django_assert_num_queries):
    company = CompanyFactory(name="Acme <b>")
    contact = services.contact_create(email="a@example.com", company=company)
    DealFactory(contact=contact, company=company, name="Big deal")
    marketing_client.get(company.get_absolute_url())
    with django_assert_num_queries(7):  # 6 for the page + the top bar's unread-notices count
        r = marketing_client.get(company.get_absolute_url())
    body = r.content.decode()
    assert "a@example.com" in body
    assert "Big deal" in body
    assert "Acme &lt;b&gt;" in body


def test_marketing_edits_a_company(marketing_client):
    company = CompanyFactory(name="Old")
    r = marketing_client.post(
        reverse("crm:company-edit", args=[company.pk]), {"name": "New", "country": "DE"}
    )
    assert r.status_code == 302
    assert Company.objects.get().name == "New"
