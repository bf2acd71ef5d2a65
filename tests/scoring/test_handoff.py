"""Owner assignment for new MQLs: rules first, then territory, then round-robin in the DB."""

import pytest

from crm.models import UserProfile
from scoring.handoff import owners_assign
from scoring.models import ScoringSettings
from tests.factories import CompanyFactory, ContactFactory, UserFactory

from .factories import AssignmentRuleFactory

pytestmark = pytest.mark.django_db


def test_round_robin_alternates_between_sales_users_and_keeps_its_place_in_the_db():
    a = UserFactory(username="rr-a", role="sales")
    b = UserFactory(username="rr-b", role="sales")
    contacts = [ContactFactory() for _ in range(3)]
    chosen = owners_assign(contact_ids=[c.pk for c in contacts[:2]])
    assert sorted(chosen.values()) == sorted([a.pk, b.pk])
    assert ScoringSettings.load().rr_position == 2
    third = owners_assign(contact_ids=[contacts[2].pk])
    assert third[contacts[2].pk] == chosen[contacts[0].pk]


def test_users_who_do_not_accept_leads_are_skipped():
    a = UserFactory(username="rr-a", role="sales")
    b = UserFactory(username="rr-b", role="sales")
    UserProfile.objects.create(user=b, accepts_leads=False)
    contacts = [ContactFactory() for _ in range(2)]
    assert set(owners_assign(contact_ids=[c.pk for c in contacts]).values()) == {a.pk}


def test_an_assignment_rule_wins_over_round_robin():
    UserFactory(username="rr-a", role="sales")
    fintech = UserFactory(username="fin", role="sales")
    AssignmentRuleFactory(order=1, industry="Fintech", user=fintech)
    c = ContactFactory(company=CompanyFactory(industry="fintech"))
    assert owners_assign(contact_ids=[c.pk]) == {c.pk: fintech.pk}
    c.refresh_from_db()
    assert c.owner == fintech


def test_a_territory_sends_the_lead_to_the_local_seller():
    UserFactory(username="rr-a", role="sales")
    local = UserFactory(username="dach", role="sales")
    UserProfile.objects.create(user=local, territory="DE, AT")
    c = ContactFactory(country="AT")
    assert owners_assign(contact_ids=[c.pk]) == {c.pk: local.pk}


def test_a_contact_with_an_owner_keeps_it():
    UserFactory(username="rr-a", role="sales")
    owner = UserFactory(username="mine", role="sales")
    c = ContactFactory(owner=owner)
    assert owners_assign(contact_ids=[c.pk]) == {}


@pytest.mark.parametrize("gone", ["inactive", "opted_out", "no_longer_sales"])
def test_a_requalified_lead_whose_owner_no_longer_takes_leads_is_assigned_again(gone):
    taker = UserFactory(username="rr-a", role="sales")
    old = UserFactory(username="left", role="sales")
    if gone == "inactive":
        old.is_active = False
        old.save()
    elif gone == "opted_out":
        UserProfile.objects.create(user=old, accepts_leads=False)
    else:
        old.groups.clear()
    c = ContactFactory(owner=old)
    assert owners_assign(contact_ids=[c.pk]) == {c.pk: taker.pk}
    c.refresh_from_db()
    assert c.owner == taker


def test_an_admin_owner_keeps_the_lead():
    UserFactory(username="rr-a", role="sales")
    boss = UserFactory(username="boss", role="admin")
    c = ContactFactory(owner=boss)
    assert owners_assign(contact_ids=[c.pk]) == {}
