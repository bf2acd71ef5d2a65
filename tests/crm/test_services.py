from datetime import date

import pytest
from django.core.exceptions import ValidationError

from crm import services
from crm.models import CampaignCost, Contact, LifecycleTransition, Stage
from tests.factories import CampaignFactory, CompanyFactory

pytestmark = pytest.mark.django_db


def _row(**raw):
    clean, errors = services.contact_row_clean(raw)
    assert not errors, errors
    return clean


def test_it_upserts_by_normalised_email_and_is_idempotent(marketing_user):
    rows = [_row(email=" Ann@Example.com ", first_name="Ann", company_name="Acme", stage="MQL")]
    first = services.contacts_upsert(rows=rows, by=marketing_user)
    again = services.contacts_upsert(rows=rows, by=marketing_user)
    assert (first.created, again.created, again.updated, again.unchanged) == (1, 0, 0, 1)
    contact = Contact.objects.get()
    assert contact.email == "ann@example.com"
    assert contact.stage == Stage.MQL
    assert contact.company.name == "Acme"
    assert LifecycleTransition.objects.filter(contact=contact).count() == 1


def test_upsert_moves_existing_stage_through_the_lifecycle_and_reports_refusals():
    services.contacts_upsert(rows=[_row(email="a@example.com"), _row(email="b@example.com")])
    result = services.contacts_upsert(
        rows=[
            _row(email="a@example.com", stage="sql"),
            _row(email="b@example.com", stage="churned"),
        ]
    )
    assert Contact.objects.get(email="a@example.com").stage == Stage.SQL
    assert Contact.objects.get(email="b@example.com").stage == Stage.LEAD
    assert list(result.errors) == [1]
    assert LifecycleTransition.objects.filter(to_stage=Stage.SQL, reason_code="import").count() == 1


def test_upsert_never_resubscribes_a_suppressed_address():
    services.contact_create(email="u@example.com", email_status="unsubscribed")
    services.contacts_upsert(rows=[_row(email="u@example.com", email_status="active")])
    assert Contact.objects.get().email_status == "unsubscribed"


def test_row_clean_maps_hubspot_values_and_rejects_bad_email():
    clean, errors = services.contact_row_clean(
        {
            "email": "x@example.com",
            "stage": "Marketing Qualified Lead",
            "source": "Trade Show",
            "lead_status": "Open",
        }
    )
    assert not errors
    assert (clean["stage"], clean["source"]) == ("mql", "event")
    assert clean["attributes"] == {"lead_status": "Open"}
    _, errors = services.contact_row_clean({"email": "not-an-email"})
    assert "email" in errors


def test_contact_update_records_stage_moves_and_changed_fields(sales_user):
    contact = services.contact_create(email="c@example.com")
    changed = services.contact_update(
        contact=contact, by=sales_user, first_name="Cy", stage=Stage.MQL
    )
    assert changed == {"first_name", "stage"}
    contact.refresh_from_db()
    assert (contact.first_name, contact.stage) == ("Cy", Stage.MQL)
    assert contact.transitions.filter(to_stage=Stage.MQL, by_user=sales_user).exists()


def test_assign_owner_updates_many_contacts(sales_user):
    ids = [services.contact_create(email=f"o{i}@example.com").pk for i in range(3)]
    assert services.contacts_assign_owner(contact_ids=ids, owner=sales_user) == 3
    assert Contact.objects.filter(owner=sales_user).count() == 3


def test_only_labour_and_technology_costs_may_be_shared():
    a, b = CampaignFactory(), CampaignFactory()
    fields = {"period_start": date(2026, 1, 1), "period_end": date(2026, 1, 31), "amount": 100}
    with pytest.raises(ValidationError):
        services.cost_create(campaign=a, shared_with=[b], category="media", shared=True, **fields)
    with pytest.raises(ValidationError):
        services.cost_create(campaign=a, shared_with=[], category="labour", shared=True, **fields)
    cost = services.cost_create(
        campaign=a, shared_with=[b], category="labour", shared=True, split="emails_sent", **fields
    )
    assert list(cost.shared_with.all()) == [b]
    services.cost_update(cost=cost, shared=False, split="equal", category="media")
    assert CampaignCost.objects.get().shared_with.count() == 0


def test_company_update_changes_fields():
    company = CompanyFactory(name="Old")
    services.company_update(company=company, name="New")
    company.refresh_from_db()
    assert company.name == "New"
