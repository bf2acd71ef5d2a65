from datetime import timedelta

import pytest
from django.utils import timezone

from crm import sales
from crm.models import Deal, Stage
from tests.factories import ContactFactory, DealFactory

pytestmark = pytest.mark.django_db

LIST = "/crm/deals/"
HOSTILE = "<img src=x onerror=alert(1)>"


def open_deal(user, **contact_fields):
    contact = ContactFactory(stage=Stage.SQL, **contact_fields)
    return sales.deal_create(contact=contact, amount=1000, by=user)


def test_it_lists_deals_with_filters(sales_client, sales_user, other_sales_user):
    won = open_deal(sales_user)
    sales.deal_win(deal=won, by=sales_user)
    open_ = open_deal(other_sales_user)
    big = sales.deal_create(contact=ContactFactory(stage=Stage.SQL), amount=90000, by=sales_user)

    def ids(**params):
        return {d.pk for d in sales_client.get(LIST, params).context["page"].object_list}

    assert ids() == {won.pk, open_.pk, big.pk}
    assert ids(status="won") == {won.pk}
    assert ids(owner=other_sales_user.pk) == {open_.pk}
    assert ids(min_amount=5000) == {big.pk}
    assert ids(max_amount=5000) == {won.pk, open_.pk}
    today = timezone.localdate()
    assert ids(closed_from=today.isoformat()) == {won.pk}
    assert ids(created_to=(today - timedelta(days=1)).isoformat()) == set()


def test_a_bad_filter_shows_the_error_not_a_500(sales_client):
    response = sales_client.get(LIST, {"min_amount": "lots", "created_from": "yesterday"})
    assert response.status_code == 200
    assert response.context["filter"].errors


def test_the_deal_list_query_count_is_fixed(sales_client, sales_user, django_assert_num_queries):
    for _ in range(3):
        DealFactory(owner=sales_user)
    sales_client.get(LIST)
    # session, user, groups, owner choices, count, page (contact/company/owner joined), the
    # top bar's unread-notices count
    with django_assert_num_queries(7):
        sales_client.get(LIST)
    for _ in range(10):
        DealFactory(owner=sales_user)
    with django_assert_num_queries(7):
        response = sales_client.get(LIST)
    assert len(response.context["page"].object_list) == 13


def test_hostile_names_render_escaped(sales_client, sales_user):
    deal = open_deal(sales_user, first_name=HOSTILE)
    sales.deal_update(deal=deal, by=sales_user, name=HOSTILE)
    for url in (LIST, deal.get_absolute_url()):
        html = sales_client.get(url).content.decode()
        assert HOSTILE not in html
        assert "&lt;img" in html


def test_creating_a_deal_from_a_contact_makes_it_an_opportunity(sales_client):
    contact = ContactFactory(stage=Stage.SQL)
    url = f"/crm/deals/new/?contact={contact.pk}"
    assert sales_client.get(url).status_code == 200
    response = sales_client.post(url, {"name": "Pilot", "amount": "4200"})
    deal = Deal.objects.get(contact=contact)
    assert response.url == deal.get_absolute_url()
    assert (deal.name, str(deal.amount)) == ("Pilot", "4200.00")
    contact.refresh_from_db()
    assert contact.stage == Stage.OPPORTUNITY


def test_creating_a_deal_with_a_bad_amount_shows_the_form_again(sales_client):
    contact = ContactFactory(stage=Stage.SQL)
    response = sales_client.post(f"/crm/deals/new/?contact={contact.pk}", {"amount": "-3"})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert sales_client.get("/crm/deals/new/?contact=abc").status_code == 404


def test_a_disqualified_contact_cannot_get_a_deal(sales_client):
    contact = ContactFactory(stage=Stage.DISQUALIFIED)
    response = sales_client.post(f"/crm/deals/new/?contact={contact.pk}", {"amount": "1"})
    assert response.status_code == 200
    assert "cannot move" in response.content.decode()
    assert not Deal.objects.filter(contact=contact).exists()


def test_winning_then_churning(sales_client, sales_user):
    deal = open_deal(sales_user)
    response = sales_client.post(f"/crm/deals/{deal.pk}/win/", follow=True)
    assert "customer now" in response.content.decode()
    deal.contact.refresh_from_db()
    assert deal.contact.stage == Stage.CUSTOMER
    html = sales_client.get(deal.get_absolute_url()).content.decode()
    assert "Mark customer churned" in html
    response = sales_client.post(
        f"/crm/deals/contacts/{deal.contact_id}/churn/", {"deal": deal.pk}, follow=True
    )
    assert "marked churned" in response.content.decode()
    deal.contact.refresh_from_db()
    assert deal.contact.stage == Stage.CHURNED
    again = sales_client.post(f"/crm/deals/{deal.pk}/win/", follow=True)
    assert "already won" in again.content.decode()


def test_losing_offers_to_recycle(sales_client, sales_user):
    deal = open_deal(sales_user)
    page = sales_client.get(deal.get_absolute_url()).content.decode()
    assert "No budget" in page
    assert "Bad fit" not in page  # only not-ready reasons recycle
    response = sales_client.post(f"/crm/deals/{deal.pk}/lose/", {"reason": ""}, follow=True)
    assert "Say why" in response.content.decode()
    sales_client.post(
        f"/crm/deals/{deal.pk}/lose/", {"reason": "Budget frozen", "recycle_reason": "no_budget"}
    )
    deal.refresh_from_db()
    deal.contact.refresh_from_db()
    assert (deal.status, deal.lost_reason) == (Deal.Status.LOST, "Budget frozen")
    assert (deal.contact.stage, deal.contact.recycle_round) == (Stage.RECYCLED, 1)


def test_marketing_reads_deals_but_cannot_write(marketing_client, sales_user):
    deal = open_deal(sales_user)
    assert marketing_client.get(LIST).status_code == 200
    html = marketing_client.get(deal.get_absolute_url()).content.decode()
    assert "Mark won" not in html
    assert marketing_client.post(f"/crm/deals/{deal.pk}/win/").status_code == 403
    assert marketing_client.post(f"/crm/deals/{deal.pk}/lose/", {"reason": "x"}).status_code == 403
    url = f"/crm/deals/new/?contact={deal.contact_id}"
    assert marketing_client.post(url, {"amount": "1"}).status_code == 403
    deal.refresh_from_db()
    assert deal.status == Deal.Status.OPEN


def test_anonymous_is_sent_to_log_in(client):
    assert client.get(LIST).status_code == 302
    assert client.post("/crm/deals/1/win/").status_code == 302


@pytest.mark.parametrize("persona", ["admin"], indirect=True)
def test_admin_can_win_a_deal(client, persona, sales_user):
    client.force_login(persona)
    deal = open_deal(sales_user)
    client.post(f"/crm/deals/{deal.pk}/win/")
    deal.refresh_from_db()
    assert deal.status == Deal.Status.WON
