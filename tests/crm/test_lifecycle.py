from datetime import timedelta

import pytest
from django.utils import timezone

from crm import lifecycle
from crm.lifecycle import StageChangeError
from crm.models import LifecycleTransition, Stage
from crm.services import contact_create

pytestmark = pytest.mark.django_db


def test_it_records_the_first_stage_when_a_contact_is_created():
    contact = contact_create(email="Ann@Example.com ")
    assert contact.email == "ann@example.com"
    (t,) = LifecycleTransition.objects.filter(contact=contact)
    assert (t.from_stage, t.to_stage, t.at) == ("", Stage.LEAD, contact.created_at)


def test_it_moves_a_lead_to_mql_with_the_real_time():
    contact = contact_create(email="a@example.com", created_at=timezone.now() - timedelta(days=3))
    at = timezone.now() - timedelta(days=1)
    t = lifecycle.stage_change(contact=contact, to_stage=Stage.MQL, at=at, by_system="scoring")
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL
    assert contact.stage_changed_at == at
    assert (t.from_stage, t.to_stage, t.at, t.by_system) == (Stage.LEAD, Stage.MQL, at, "scoring")


def test_it_refuses_a_move_the_lifecycle_does_not_allow():
    contact = contact_create(email="a@example.com")
    with pytest.raises(StageChangeError) as err:
        lifecycle.stage_change(contact=contact, to_stage=Stage.CHURNED)
    assert err.value.current_stage == Stage.LEAD
    assert LifecycleTransition.objects.filter(contact=contact).count() == 1


def test_recycling_numbers_the_round():
    contact = contact_create(email="a@example.com")
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
    t = lifecycle.stage_change(contact=contact, to_stage=Stage.RECYCLED, reason_code="no_budget")
    assert t.recycle_round == 1
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
    t2 = lifecycle.stage_change(contact=contact, to_stage=Stage.RECYCLED)
    assert t2.recycle_round == 2
    contact.refresh_from_db()
    assert contact.recycle_round == 2


def test_a_decision_on_a_contact_that_moved_meanwhile_is_refused():
    contact = contact_create(email="a@example.com")
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
    lifecycle.stage_change(contact=contact, to_stage=Stage.SQL, expected_from=[Stage.MQL])
    with pytest.raises(StageChangeError) as err:
        lifecycle.stage_change(contact=contact, to_stage=Stage.RECYCLED, expected_from=[Stage.MQL])
    assert err.value.current_stage == Stage.SQL


def test_a_late_change_is_never_dated_before_the_previous_one():
    contact = contact_create(email="a@example.com")
    first = lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
    late = lifecycle.stage_change(
        contact=contact, to_stage=Stage.SQL, at=first.at - timedelta(days=2)
    )
    assert late.at == first.at


def test_bulk_moves_skip_contacts_whose_stage_does_not_allow_it():
    a = contact_create(email="a@example.com")
    b = contact_create(email="b@example.com")
    lifecycle.stage_change(contact=b, to_stage=Stage.MQL)
    lifecycle.stage_change(contact=b, to_stage=Stage.SQL)
    at = timezone.now()
    moved = lifecycle.stages_change_bulk(
        to_stage=Stage.MQL, at_by_contact={a.pk: at, b.pk: at}, by_system="scoring"
    )
    assert [t.contact_id for t in moved] == [a.pk]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.stage, b.stage) == (Stage.MQL, Stage.SQL)


def test_importing_past_history_checks_the_stage_at_that_time():
    created = timezone.now() - timedelta(days=30)
    contact = contact_create(email="a@example.com", created_at=created)
    lifecycle.stage_import(contact=contact, to_stage=Stage.MQL, at=created + timedelta(days=5))
    lifecycle.stage_import(contact=contact, to_stage=Stage.SQL, at=created + timedelta(days=9))
    contact.refresh_from_db()
    assert contact.stage == Stage.SQL
    with pytest.raises(StageChangeError):
        lifecycle.stage_import(
            contact=contact, to_stage=Stage.CHURNED, at=created + timedelta(days=1)
        )
