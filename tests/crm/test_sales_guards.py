"""An MQL leaves only by a sales decision; what edits, imports and deals may not do."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm import lifecycle, sales, services
from crm.lifecycle import StageChangeError
from crm.models import Company, Contact, Deal, LifecycleTransition, Stage
from tests.crm.sales_factories import make_mql
from tests.factories import CampaignFactory, ContactFactory, UserFactory, rejection_reasons

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts/"


@pytest.fixture(autouse=True)
def _reasons(db):
    rejection_reasons()


def _path(contact):
    return list(
        LifecycleTransition.objects.filter(contact=contact)
        .order_by("at", "id")
        .values_list("from_stage", "to_stage")
    )


# --- The lifecycle: an MQL moves on only to a decision -----------------------------------


@pytest.mark.parametrize("to", [Stage.OPPORTUNITY, Stage.CUSTOMER, Stage.LEAD, Stage.CHURNED])
def test_an_mql_cannot_skip_the_decision(to):
    contact = make_mql()
    with pytest.raises(StageChangeError):
        lifecycle.stage_change(contact=contact, to_stage=to, by_system="test")


def test_a_deal_on_an_mql_accepts_it_first(sales_user):
    contact = make_mql()
    deal = sales.deal_create(contact=contact, amount=1000, by=sales_user)
    contact.refresh_from_db()
    assert contact.stage == Stage.OPPORTUNITY
    assert contact.owner == sales_user  # accepting claims an unassigned lead
    assert _path(contact)[-3:] == [
        ("lead", "mql"),
        ("mql", "sql"),
        ("sql", "opportunity"),
    ]
    accepted = LifecycleTransition.objects.get(contact=contact, from_stage=Stage.MQL)
    assert (accepted.to_stage, accepted.by_user) == (Stage.SQL, sales_user)
    assert accepted.at == deal.created_at


def test_winning_a_deal_of_a_contact_that_became_an_mql_again_accepts_it(sales_user):
    contact = make_mql()
    deal = Deal.objects.create(
        contact=contact, amount=500, owner=sales_user, name="d", created_at=timezone.now()
    )
    sales.deal_win(deal=deal, by=sales_user)
    contact.refresh_from_db()
    assert contact.stage == Stage.CUSTOMER
    assert _path(contact)[-2:] == [("mql", "sql"), ("sql", "customer")]


def test_a_rep_retrying_after_an_accept_that_opened_a_deal_is_told_who(
    sales_user, other_sales_user
):
    other_sales_user.first_name, other_sales_user.last_name = "Sasha", "Ivanova"
    other_sales_user.save()
    contact = make_mql()
    sales.mql_accept(contact_id=contact.pk, by=other_sales_user, amount="100")
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_accept(contact_id=contact.pk, by=sales_user)
    assert str(err.value) == "Sasha Ivanova accepted this lead just now; it is Opportunity now."
    assert err.value.decided_by == "Sasha Ivanova"
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_accept(contact_id=contact.pk, by=other_sales_user)
    assert str(err.value).startswith("You accepted this lead just now")


def test_the_latest_decision_is_the_one_reported(sales_user, other_sales_user):
    other_sales_user.first_name, other_sales_user.last_name = "Sasha", "Ivanova"
    other_sales_user.save()
    contact = make_mql(hours_ago=5)
    sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="bad_timing")
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL, by_system="scoring")
    sales.mql_accept(contact_id=contact.pk, by=other_sales_user)
    with pytest.raises(sales.AlreadyDecided) as err:
        sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="bad_fit")
    assert str(err.value) == "Sasha Ivanova accepted this lead just now; it is SQL now."


# --- Edits and imports do not decide MQLs ------------------------------------------------


def test_editing_an_mql_stage_is_refused_and_nothing_else_is_lost(marketing_user):
    contact = make_mql()
    with pytest.raises(StageChangeError, match="MQL queue"):
        services.contact_update(
            contact=contact, by=marketing_user, stage=Stage.SQL, job_title="CTO"
        )
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL
    assert not LifecycleTransition.objects.filter(contact=contact, from_stage=Stage.MQL).exists()


@pytest.mark.parametrize("to", ["sql", "recycled", "disqualified"])
def test_a_patch_cannot_decide_an_mql(marketing_api, sales_api, to):
    contact = make_mql()
    for api in (marketing_api, sales_api):
        r = api.patch(f"{URL}{contact.pk}/", {"stage": to}, format="json")
        assert r.status_code == 409, r.json()
        assert "MQL queue" in r.json()["detail"]
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL


def test_an_upsert_reports_the_refused_mql_move_and_saves_the_rest(marketing_api):
    contact = make_mql()
    r = marketing_api.post(
        URL + "upsert/",
        [{"email": contact.email, "stage": "sql", "job_title": "VP Sales"}],
        format="json",
    )
    assert r.status_code == 200
    assert "MQL queue" in r.json()["errors"]["0"]["stage"][0]
    contact.refresh_from_db()
    assert (contact.stage, contact.job_title) == (Stage.MQL, "VP Sales")


def test_the_edit_page_says_why_an_mql_stage_cannot_change(client, marketing_user):
    contact = make_mql()
    client.force_login(marketing_user)
    page = client.get(f"/crm/contacts/{contact.pk}/edit/")
    form = page.context["form"]
    data = {k: v for k, v in form.initial.items() if v is not None and k != "attributes"}
    data.update(email=contact.email, stage="sql")
    r = client.post(f"/crm/contacts/{contact.pk}/edit/", data)
    assert r.status_code == 200
    assert "MQL queue" in r.content.decode()
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL


def test_a_non_mql_stage_edit_still_works(sales_api):
    contact = services.contact_create(email="n@example.com")
    r = sales_api.patch(f"{URL}{contact.pk}/", {"stage": "sql"}, format="json")
    assert r.status_code == 200
    assert r.json()["stage"] == "sql"


# --- History import: admin only, appended oldest first -----------------------------------


def test_importing_history_is_for_admins(marketing_api, sales_api, admin_api):
    contact = services.contact_create(email="h@example.com")
    body = {"to_stage": "mql", "at": timezone.now().isoformat()}
    for api in (marketing_api, sales_api):
        assert api.post(f"{URL}{contact.pk}/history/", body, format="json").status_code == 403
        assert api.get(f"{URL}{contact.pk}/history/").status_code == 200
    assert admin_api.post(f"{URL}{contact.pk}/history/", body, format="json").status_code == 201


def test_a_contact_brought_over_keeps_its_creation_time_and_takes_its_history(admin_api):
    created = timezone.now() - timedelta(days=400)
    r = admin_api.post(
        URL, {"email": "old@example.com", "created_at": created.isoformat()}, format="json"
    )
    assert r.status_code == 201, r.json()
    pk = r.json()["id"]
    for days, stage in [(300, "mql"), (290, "recycled"), (100, "mql"), (95, "sql")]:
        at = (timezone.now() - timedelta(days=days)).isoformat()
        r = admin_api.post(f"{URL}{pk}/history/", {"to_stage": stage, "at": at}, format="json")
        assert r.status_code == 201, r.json()
    contact = Contact.objects.get(pk=pk)
    assert (contact.stage, contact.recycle_round) == (Stage.SQL, 1)
    path = _path(contact)
    # Every change starts where the one before it ended.
    assert all(prev[1] == nxt[0] for prev, nxt in zip(path, path[1:], strict=False))
    assert path == [
        ("", "lead"),
        ("lead", "mql"),
        ("mql", "recycled"),
        ("recycled", "mql"),
        ("mql", "sql"),
    ]


def test_a_change_older_than_the_latest_is_refused(admin_api):
    contact = services.contact_create(email="o@example.com")
    at = (contact.created_at - timedelta(days=3)).isoformat()
    r = admin_api.post(f"{URL}{contact.pk}/history/", {"to_stage": "mql", "at": at}, format="json")
    assert r.status_code == 409
    assert "oldest first" in r.json()["detail"]
    assert _path(contact) == [("", "lead")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2020-01-01T10:00:00", "time zone"),
        ("2199-01-01T00:00:00Z", "future"),
    ],
)
def test_a_creation_time_without_a_zone_or_in_the_future_is_refused(admin_api, value, message):
    r = admin_api.post(URL, {"email": "c@example.com", "created_at": value}, format="json")
    assert r.status_code == 400
    assert message in r.json()["created_at"][0]


def test_the_creation_time_cannot_be_edited(marketing_api):
    contact = services.contact_create(email="e@example.com")
    other = (contact.created_at - timedelta(days=1)).isoformat()
    r = marketing_api.patch(f"{URL}{contact.pk}/", {"created_at": other}, format="json")
    assert r.status_code == 400
    same = marketing_api.patch(
        f"{URL}{contact.pk}/",
        {"created_at": contact.created_at.isoformat(), "first_name": "E"},
        format="json",
    )
    assert same.status_code == 200, same.json()


# --- Deletes and owners ------------------------------------------------------------------


def test_contacts_companies_and_campaigns_are_not_deleted_through_the_api(admin_api, sales_api):
    contact = make_mql()
    Deal.objects.create(
        contact=contact, amount=10, status=Deal.Status.WON, name="won", created_at=timezone.now()
    )
    company = Company.objects.create(name="Acme")
    campaign = CampaignFactory()
    for api in (sales_api, admin_api):
        for url, says in [
            (f"{URL}{contact.pk}/", "erase"),
            (f"/api/v1/companies/{company.pk}/", "not deleted"),
            (f"/api/v1/campaigns/{campaign.pk}/", "archived"),
        ]:
            r = api.delete(url)
            assert r.status_code in (403, 405), (url, r.status_code)
            if r.status_code == 405:
                assert says in r.json()["detail"]
    assert Deal.objects.filter(contact=contact).count() == 1
    assert Company.objects.filter(pk=company.pk).exists()


@pytest.mark.parametrize("kind", ["inactive", "no_role"])
def test_an_owner_must_be_an_active_user_with_a_role(marketing_api, kind):
    user = UserFactory(username=f"u-{kind}", role="sales" if kind == "inactive" else None)
    if kind == "inactive":
        user.is_active = False
        user.save()
    r = marketing_api.post(URL, {"email": "o@example.com", "owner": user.pk}, format="json")
    assert r.status_code == 400
    assert "owner" in r.json()
    contact = ContactFactory()
    deal = Deal.objects.create(contact=contact, amount=10, name="d", created_at=timezone.now())
    admin = UserFactory(username="adm", role="admin")
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(admin)
    r = api.patch(f"/api/v1/deals/{deal.pk}/", {"owner": user.pk}, format="json")
    assert r.status_code == 400
