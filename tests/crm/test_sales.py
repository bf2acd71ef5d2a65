import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import override_settings
from django.utils import timezone

from crm import ingest, lifecycle, sales
from crm.lifecycle import StageChangeError
from crm.models import (
    ActivityKind,
    Contact,
    Deal,
    LifecycleTransition,
    Notification,
    RejectionReason,
    Reopening,
    Stage,
)
from crm.sales_queries import mql_queue
from tests.crm.sales_factories import make_mql
from tests.factories import ContactFactory, UserFactory, rejection_reasons

pytestmark = pytest.mark.django_db

RECYCLE_CODES = ["no_budget", "bad_timing", "no_project", "no_authority"]
DISQUALIFY_CODES = ["bad_fit", "wrong_contact", "duplicate", "competitor"]


def decisions(contact):
    return LifecycleTransition.objects.filter(contact=contact, from_stage=Stage.MQL)


def test_the_default_rejection_reasons_exist_with_their_outcomes():
    outcomes = dict(RejectionReason.objects.values_list("code", "outcome"))
    assert {c: outcomes[c] for c in RECYCLE_CODES} == dict.fromkeys(RECYCLE_CODES, "recycled")
    assert {c: outcomes[c] for c in DISQUALIFY_CODES} == dict.fromkeys(
        DISQUALIFY_CODES, "disqualified"
    )


def test_accepting_an_mql_moves_it_to_sql_and_claims_it(sales_user):
    contact = make_mql()
    decision = sales.mql_accept(contact_id=contact.pk, by=sales_user)
    contact.refresh_from_db()
    assert contact.stage == Stage.SQL
    assert contact.owner == sales_user
    t = decision.transition
    assert (t.from_stage, t.to_stage, t.by_user) == (Stage.MQL, Stage.SQL, sales_user)
    assert decision.deal is None


def test_accepting_keeps_an_existing_owner_and_tells_them(sales_user, other_sales_user):
    contact = make_mql(owner=other_sales_user, first_name="Ann", last_name="Lee")
    sales.mql_accept(contact_id=contact.pk, by=sales_user)
    contact.refresh_from_db()
    assert contact.owner == other_sales_user
    (notice,) = Notification.objects.filter(user=other_sales_user)
    assert notice.text == f"{sales_user.get_full_name()} accepted your lead Ann Lee."
    assert notice.url == f"/crm/mqls/{contact.pk}/"


def test_rejecting_my_own_lead_notifies_nobody(sales_user):
    contact = make_mql(owner=sales_user)
    sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="no_budget")
    assert not Notification.objects.exists()


def test_accepting_with_an_amount_opens_a_deal_and_makes_an_opportunity(sales_user):
    contact = make_mql()
    decision = sales.mql_accept(contact_id=contact.pk, by=sales_user, amount="1200.50")
    contact.refresh_from_db()
    assert contact.stage == Stage.OPPORTUNITY
    deal = decision.deal
    assert (deal.amount, deal.status, deal.owner, deal.company_id) == (
        Decimal("1200.50"),
        Deal.Status.OPEN,
        sales_user,
        contact.company_id,
    )
    stages = list(
        LifecycleTransition.objects.filter(contact=contact)
        .order_by("at", "id")
        .values_list("to_stage", flat=True)
    )
    assert stages == [Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY]


def test_a_bad_amount_is_refused_before_anything_changes(sales_user):
    contact = make_mql()
    for bad in ["abc", "-5", "NaN", "1e20"]:
        with pytest.raises(ValidationError):
            sales.mql_accept(contact_id=contact.pk, by=sales_user, amount=bad)
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL


@pytest.mark.parametrize("code", RECYCLE_CODES)
def test_rejecting_as_not_ready_recycles_with_a_numbered_round(sales_user, code):
    contact = make_mql()
    decision = sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code=code, note=" n ")
    t = decision.transition
    assert (t.to_stage, t.reason_code, t.recycle_round, t.note) == (Stage.RECYCLED, code, 1, "n")
    contact.refresh_from_db()
    assert (contact.stage, contact.recycle_round) == (Stage.RECYCLED, 1)


@pytest.mark.parametrize("code", DISQUALIFY_CODES)
def test_rejecting_as_a_bad_fit_disqualifies(sales_user, code):
    contact = make_mql()
    t = sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code=code).transition
    assert (t.to_stage, t.reason_code, t.recycle_round) == (Stage.DISQUALIFIED, code, 0)
    contact.refresh_from_db()
    assert contact.stage == Stage.DISQUALIFIED


def test_an_unknown_or_inactive_reason_is_refused(sales_user):
    contact = make_mql()
    RejectionReason.objects.filter(code="no_budget").update(active=False)
    for code in ["nope", "no_budget", ""]:
        with pytest.raises(ValidationError) as err:
            sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code=code)
        assert "reason" in err.value.message_dict
    assert not decisions(contact).exists()


def test_the_second_round_of_recycling_is_numbered_two(sales_user):
    contact = make_mql()
    sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="bad_timing")
    lifecycle.stage_change(contact=contact.pk, to_stage=Stage.MQL, by_system="scoring")
    t = sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="no_budget").transition
    assert t.recycle_round == 2


# Scoring is left out: the test plays its part (the MQL move) explicitly.
@override_settings(ACTIVITIES_RECORDED_HANDLERS=[])
def test_a_recycled_lead_that_engages_is_reopened_and_can_qualify_again(sales_user):
    contact = make_mql()
    sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="no_budget")
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": ActivityKind.EMAIL_CLICKED,
                "occurred_at": timezone.now(),
                "external_id": "click-1",
            }
        ]
    )
    (reopening,) = Reopening.objects.filter(contact=contact)
    assert reopening.recycle_round == 1
    assert list(mql_queue(tab="reengaged").values_list("pk", flat=True)) == [contact.pk]
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL, by_system="scoring")
    assert not mql_queue(tab="reengaged").exists()  # re-opened in a past round only
    assert list(mql_queue(tab="team").values_list("pk", flat=True)) == [contact.pk]
    sales.mql_accept(contact_id=contact.pk, by=sales_user)
    contact.refresh_from_db()
    assert contact.stage == Stage.SQL


def test_repeating_a_decision_is_refused_without_a_second_history_row(sales_user):
    contact = make_mql()
    sales.mql_accept(contact_id=contact.pk, by=sales_user)
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_accept(contact_id=contact.pk, by=sales_user)
    assert err.value.current_stage == Stage.SQL
    assert str(err.value).startswith("You accepted this lead")
    with pytest.raises(sales.AlreadyDecided):
        sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="no_budget")
    assert decisions(contact).count() == 1


def test_the_loser_is_told_who_decided(sales_user, other_sales_user):
    other_sales_user.first_name, other_sales_user.last_name = "Sasha", "Ivanova"
    other_sales_user.save()
    contact = make_mql()
    t = sales.mql_reject(contact_id=contact.pk, by=other_sales_user, reason_code="bad_fit")
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_accept(contact_id=contact.pk, by=sales_user)
    assert (
        str(err.value) == "Sasha Ivanova disqualified this lead just now; it is Disqualified now."
    )
    LifecycleTransition.objects.filter(pk=t.transition.pk).update(
        at=timezone.now() - timedelta(minutes=2, seconds=5)
    )
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_accept(contact_id=contact.pk, by=sales_user)
    assert str(err.value) == (
        "Sasha Ivanova disqualified this lead 2 minutes ago; it is Disqualified now."
    )
    assert err.value.decided_by == "Sasha Ivanova"


def test_deciding_a_contact_that_never_was_an_mql_says_its_stage(sales_user):
    contact = ContactFactory(stage=Stage.LEAD)
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_accept(contact_id=contact.pk, by=sales_user)
    assert err.value.current_stage == Stage.LEAD
    assert "not an MQL" in str(err.value)


def test_claiming_assigns_an_unassigned_mql_only(sales_user, other_sales_user):
    contact = make_mql()
    sales.mql_claim(contact_id=contact.pk, by=sales_user)
    contact.refresh_from_db()
    assert contact.owner == sales_user
    sales.mql_claim(contact_id=contact.pk, by=sales_user)  # harmless repeat
    with pytest.raises(ValidationError):
        sales.mql_claim(contact_id=contact.pk, by=other_sales_user)


def test_creating_a_deal_makes_an_opportunity_and_winning_a_customer(sales_user):
    contact = ContactFactory(stage=Stage.SQL, created_at=timezone.now() - timedelta(days=30))
    created = timezone.now() - timedelta(days=10)
    deal = sales.deal_create(contact=contact, amount=5000, by=sales_user, created_at=created)
    contact.refresh_from_db()
    assert (contact.stage, contact.stage_changed_at) == (Stage.OPPORTUNITY, created)
    won = sales.deal_win(deal=deal, by=sales_user)
    assert (won.status, won.closed_at is not None) == (Deal.Status.WON, True)
    contact.refresh_from_db()
    assert contact.stage == Stage.CUSTOMER
    with pytest.raises(sales.DealClosed):
        sales.deal_win(deal=deal, by=sales_user)
    with pytest.raises(sales.DealClosed):
        sales.deal_lose(deal=deal, by=sales_user, reason="x")


def test_a_second_deal_for_a_customer_keeps_it_a_customer(sales_user):
    contact = ContactFactory(stage=Stage.CUSTOMER)
    sales.deal_create(contact=contact, amount=10, by=sales_user)
    contact.refresh_from_db()
    assert contact.stage == Stage.CUSTOMER


def test_losing_a_deal_needs_a_reason_and_may_recycle(sales_user):
    contact = ContactFactory(stage=Stage.SQL)
    deal = sales.deal_create(contact=contact, amount=100, by=sales_user)
    with pytest.raises(ValidationError):
        sales.deal_lose(deal=deal, by=sales_user, reason=" ")
    with pytest.raises(ValidationError):
        sales.deal_lose(deal=deal, by=sales_user, reason="x", recycle_reason_code="bad_fit")
    lost = sales.deal_lose(
        deal=deal, by=sales_user, reason="Chose a rival", recycle_reason_code="no_budget"
    )
    assert (lost.status, lost.lost_reason) == (Deal.Status.LOST, "Chose a rival")
    contact.refresh_from_db()
    assert (contact.stage, contact.recycle_round) == (Stage.RECYCLED, 1)
    t = LifecycleTransition.objects.filter(contact=contact).order_by("-id").first()
    assert (t.reason_code, t.note) == ("no_budget", "Deal lost: Chose a rival")


def test_losing_without_recycling_leaves_the_stage(sales_user):
    contact = ContactFactory(stage=Stage.SQL)
    deal = sales.deal_create(contact=contact, amount=100, by=sales_user)
    sales.deal_lose(deal=deal, by=sales_user, reason="Went quiet")
    contact.refresh_from_db()
    assert contact.stage == Stage.OPPORTUNITY


def test_recycling_is_refused_while_another_deal_is_open(sales_user):
    contact = ContactFactory(stage=Stage.SQL)
    deal = sales.deal_create(contact=contact, amount=100, by=sales_user)
    sales.deal_create(contact=contact, amount=200, by=sales_user)
    with pytest.raises(ValidationError):
        sales.deal_lose(deal=deal, by=sales_user, reason="x", recycle_reason_code="no_budget")
    deal.refresh_from_db()
    assert deal.status == Deal.Status.OPEN  # nothing half-done


def test_a_customer_can_churn_and_only_a_customer(sales_user):
    contact = ContactFactory(stage=Stage.CUSTOMER)
    t = sales.customer_churn(contact=contact, by=sales_user)
    assert (t.from_stage, t.to_stage) == (Stage.CUSTOMER, Stage.CHURNED)
    with pytest.raises(StageChangeError) as err:
        sales.customer_churn(contact=contact, by=sales_user)
    assert err.value.current_stage == Stage.CHURNED


def test_editing_a_closed_deal_is_refused(sales_user):
    deal = sales.deal_create(contact=ContactFactory(stage=Stage.SQL), amount=1, by=sales_user)
    sales.deal_update(deal=deal, by=sales_user, amount="2", name="Bigger")
    deal.refresh_from_db()
    assert (deal.amount, deal.name) == (Decimal("2.00"), "Bigger")
    sales.deal_win(deal=deal, by=sales_user)
    with pytest.raises(sales.DealClosed):
        sales.deal_update(deal=deal, by=sales_user, amount="3")


# transaction=True without serialized_rollback: restoring the serialized database after
# another transactional test's flush collides with the content types that flush recreated.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["accept", "reject"])
def test_two_reps_deciding_at_once_make_exactly_one_decision(second):
    """Two threads, two connections, released together: one transition, one clear refusal."""
    rejection_reasons()
    reps = [UserFactory(username="r1", role="sales"), UserFactory(username="r2", role="sales")]
    contact = make_mql()
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def decide(rep, action):
        try:
            barrier.wait(timeout=10)
            if action == "accept":
                sales.mql_accept(contact_id=contact.pk, by=rep, amount="10")
            else:
                sales.mql_reject(contact_id=contact.pk, by=rep, reason_code="no_budget")
            outcomes.append("ok")
        except sales.AlreadyDecided as err:
            outcomes.append(err)
        except Exception as err:  # noqa: BLE001 — reported by the assertion below
            outcomes.append(repr(err))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=decide, args=(reps[0], "accept")),
        threading.Thread(target=decide, args=(reps[1], second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(map(type, outcomes), key=str) == sorted([str, sales.AlreadyDecided], key=str), (
        outcomes
    )
    assert decisions(contact).count() == 1
    contact = Contact.objects.get(pk=contact.pk)
    assert contact.stage in (Stage.OPPORTUNITY, Stage.RECYCLED)
    loser = next(o for o in outcomes if isinstance(o, sales.AlreadyDecided))
    assert loser.current_stage == contact.stage
