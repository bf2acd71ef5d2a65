"""Campaign members (crm.campaign_members) stay equal to what the raw activities say, and
the contact list's campaign filter reads them with the same rows as before."""

import random
from datetime import timedelta

import pytest
from django.contrib.admin.sites import site as admin_site
from django.db import connection
from django.db.models import Exists, OuterRef, Q
from django.http import QueryDict
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from crm import campaign_members, privacy, services
from crm.filters import CONTACT_ORDERINGS, ContactFilter
from crm.ingest import activities_record
from crm.models import Activity, ActivityKind, Campaign, CampaignMember, Contact
from crm.views.contacts import contact_queryset
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db

KINDS = [ActivityKind.PAGE_VISIT, ActivityKind.EMAIL_OPENED, ActivityKind.FORM_SUBMITTED]


def table() -> set[tuple]:
    return set(
        CampaignMember.objects.values_list(
            "campaign_id", "contact_id", "first_touch_at", "last_touch_at"
        )
    )


def raw() -> set[tuple]:
    """The reference: recomputed from every activity and every contact's acquisition."""
    return {
        (r["campaign_id"], r["contact_id"], r["first_touch_at"], r["last_touch_at"])
        for r in campaign_members.members_from_activities()
    } | set(campaign_members.members_by_acquisition())


def raw_by_hand() -> set[tuple]:
    """The reference once more, without the ORM's GROUP BY and NOT EXISTS."""
    span: dict = {}
    for campaign_id, contact_id, at in Activity.objects.filter(campaign__isnull=False).values_list(
        "campaign_id", "contact_id", "occurred_at"
    ):
        first, last = span.get((campaign_id, contact_id), (at, at))
        span[campaign_id, contact_id] = (min(first, at), max(last, at))
    rows = {(*key, first, last) for key, (first, last) in span.items()}
    for contact_id, campaign_id in Contact.objects.filter(acquired_by__isnull=False).values_list(
        "pk", "acquired_by_id"
    ):
        if (campaign_id, contact_id) not in span:
            rows.add((campaign_id, contact_id, None, None))
    return rows


def _batch(rng, contacts, campaigns, now, serial):
    items = []
    for _ in range(rng.randint(1, 25)):
        item = {
            "kind": rng.choice(KINDS),
            # Out of order, back-filled and repeated times: first/last must widen both ways.
            "occurred_at": (now - timedelta(hours=rng.randrange(0, 24 * 40))).isoformat(),
            "campaign": rng.choice([None, *campaigns]),
        }
        if rng.random() < 0.3:  # a replay of an earlier delivery: a duplicate, no change
            item["external_id"] = f"ext-{rng.randrange(0, 40)}"
        if contacts and rng.random() < 0.8:
            item["contact"] = rng.choice(contacts)
        else:
            item["kind"] = ActivityKind.FORM_SUBMITTED  # creates the contact
            item["email"] = f"p{serial}-{rng.randrange(0, 1000)}@example.com"
        items.append(item)
    return items


@pytest.mark.parametrize("seed", range(4))
def test_after_random_ingests_edits_merges_erasures_and_deletes_members_equal_the_raw_rows(seed):
    rng = random.Random(seed)
    now = timezone.now()
    campaigns = [Campaign.objects.create(name=f"C{i}").pk for i in range(3)]
    for step in range(40):
        contacts = list(Contact.objects.values_list("pk", flat=True))
        roll = rng.random()
        if roll < 0.6 or len(contacts) < 2:
            activities_record(items=_batch(rng, contacts, campaigns, now, step))
        elif roll < 0.72:  # an edit, an import or a new contact sets the acquisition
            chosen = rng.choice([None, *campaigns])
            campaign = Campaign.objects.get(pk=chosen) if chosen else None
            how = rng.choice(["edit", "upsert", "create"])
            if how == "edit":
                contact = Contact.objects.get(pk=rng.choice(contacts))
                services.contact_update(contact=contact, acquired_by=campaign)
            elif how == "upsert":
                email = Contact.objects.get(pk=rng.choice(contacts)).email
                services.contacts_upsert(rows=[{"email": email, "acquired_by": campaign}])
            else:
                services.contact_create(email=f"n{step}@example.com", acquired_by=campaign)
        elif roll < 0.82:
            keep, duplicate = Contact.objects.filter(pk__in=rng.sample(contacts, 2))
            services.contact_merge(keep=keep, duplicate=duplicate)
        elif roll < 0.9:
            privacy.contact_erase(contact=Contact.objects.get(pk=rng.choice(contacts)))
        elif roll < 0.95:
            Contact.objects.get(pk=rng.choice(contacts)).delete()
        else:
            gone = rng.choice(campaigns)
            Campaign.objects.filter(pk=gone).delete()
            campaigns = [c for c in campaigns if c != gone] + [
                Campaign.objects.create(name=f"C{step}").pk
            ]
        assert table() == raw() == raw_by_hand(), f"step {step}"
    assert table(), "the scenario made some members"


def test_a_replayed_batch_changes_no_member_row():
    contact = ContactFactory()
    campaign = Campaign.objects.create(name="Webinar")
    at = timezone.now() - timedelta(days=1)
    items = [
        {"kind": "page_visit", "contact": contact.pk, "campaign": campaign.pk,
         "occurred_at": (at + timedelta(hours=h)).isoformat(), "external_id": f"e{h}"}
        for h in (0, 5)
    ]  # fmt: skip
    activities_record(items=items)
    before = table()
    assert before == {(campaign.pk, contact.pk, at, at + timedelta(hours=5))}
    assert activities_record(items=items).created == 0
    assert table() == before


def test_a_full_rebuild_equals_the_activities_and_replaces_stale_rows():
    contacts = ContactFactory.create_batch(3)
    campaigns = [Campaign.objects.create(name=n) for n in "AB"]
    now = timezone.now()
    for i, contact in enumerate(contacts):  # bulk-loaded like the demo seeder: no ingest
        ActivityFactory(contact=contact, campaign=campaigns[i % 2], occurred_at=now)
        ActivityFactory(contact=contact, campaign=campaigns[0], occurred_at=now - timedelta(i))
        ActivityFactory(contact=contact, occurred_at=now)
    CampaignMember.objects.create(
        campaign=campaigns[1], contact=contacts[0], first_touch_at=now, last_touch_at=now
    )
    campaign_members.members_rebuild()
    assert table() == raw() == raw_by_hand()
    assert len(table()) == 4


def test_an_activity_added_in_the_admin_and_an_acquisition_changed_there_keep_the_members(
    client, admin_user
):
    """The admin records an activity through ingestion (crm.admin.ActivityAdmin), so its
    campaign's membership follows as for any batch; a contact's acquisition changed
    there is synced too."""
    a = ContactFactory()
    campaign = Campaign.objects.create(name="Ads")
    client.force_login(admin_user)
    at = timezone.now() - timedelta(hours=1)
    response = client.post(
        "/admin/crm/activity/add/",
        {
            "contact": a.pk,
            "kind": "page_visit",
            "occurred_at_0": timezone.localtime(at).strftime("%Y-%m-%d"),
            "occurred_at_1": timezone.localtime(at).strftime("%H:%M:%S"),
            "campaign": campaign.pk,
            "details": "{}",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    activity = Activity.objects.get(contact=a)
    assert table() == raw() == {(campaign.pk, a.pk, activity.occurred_at, activity.occurred_at)}
    b = ContactFactory()
    model_admin = admin_site._registry[Contact]
    request = RequestFactory().post("/")
    request.user = admin_user
    b.acquired_by = campaign
    model_admin.save_model(request, b, form=None, change=True)
    assert (campaign.pk, b.pk, None, None) in table()
    assert table() == raw()


def test_changing_an_acquisition_moves_an_acquisition_only_member_not_a_touched_one():
    webinar, ads = Campaign.objects.create(name="Webinar"), Campaign.objects.create(name="Ads")
    contact = services.contact_create(email="a@example.com", acquired_by=webinar)
    assert table() == {(webinar.pk, contact.pk, None, None)}
    at = timezone.now() - timedelta(days=1)
    activities_record(
        items=[{"kind": "page_visit", "contact": contact.pk, "campaign": webinar.pk,
                "occurred_at": at.isoformat()}]
    )  # fmt: skip
    assert table() == {(webinar.pk, contact.pk, at, at)}
    services.contact_update(contact=contact, acquired_by=ads)
    assert table() == raw() == {(webinar.pk, contact.pk, at, at), (ads.pk, contact.pk, None, None)}
    services.contact_update(contact=contact, acquired_by=None)
    assert table() == raw() == {(webinar.pk, contact.pk, at, at)}


# --- the contact list's campaign filter ---------------------------------------------------


@pytest.fixture
def touched():
    """Contacts acquired by, touched in, touched elsewhere, both, and untouched."""
    webinar, ads = Campaign.objects.create(name="Webinar"), Campaign.objects.create(name="Ads")
    people = {
        name: services.contact_create(
            email=f"{name}@example.com",
            last_name=name,
            acquired_by=webinar if name in ("acquired", "both") else None,
        )
        for name in ("acquired", "touched", "elsewhere", "both", "none")
    }
    at = (timezone.now() - timedelta(days=2)).isoformat()
    activities_record(
        items=[
            {"kind": "page_visit", "contact": people[n].pk, "campaign": c.pk, "occurred_at": at}
            for n, c in (("touched", webinar), ("both", webinar), ("elsewhere", ads))
        ]
        + [{"kind": "page_visit", "contact": people["none"].pk, "occurred_at": at}]
    )
    return webinar, ads, people


def _reference_ids(campaign) -> set[int]:
    """The filter as it read the activities before campaign members existed."""
    touched = Activity.objects.filter(contact=OuterRef("pk"), campaign=campaign)
    return set(
        Contact.objects.filter(Q(acquired_by=campaign) | Exists(touched)).values_list(
            "pk", flat=True
        )
    )


def test_the_campaign_filter_lists_contacts_acquired_by_or_active_in_it(touched):
    webinar, ads, people = touched
    ids = {p.pk: n for n, p in people.items()}
    for campaign, expected in ((webinar, {"acquired", "touched", "both"}), (ads, {"elsewhere"})):
        qs = ContactFilter(QueryDict(f"campaign={campaign.pk}"), queryset=contact_queryset()).qs
        found = set(qs.values_list("pk", flat=True))
        assert {ids[pk] for pk in found} == expected
        assert found == _reference_ids(campaign)


@pytest.mark.parametrize("sort", [None, *CONTACT_ORDERINGS])
def test_the_campaign_filter_combines_with_sorts_and_filters_like_the_activity_read(touched, sort):
    webinar, _ads, _people = touched
    query = f"campaign={webinar.pk}&q=b&stage=lead" + (f"&sort={sort}" if sort else "")
    qs = ContactFilter(QueryDict(query), queryset=contact_queryset()).qs
    plain = ContactFilter(QueryDict(query.replace(f"campaign={webinar.pk}&", "")), queryset=(
        contact_queryset().filter(pk__in=_reference_ids(webinar))
    )).qs  # fmt: skip
    assert list(qs.values_list("pk", flat=True)) == list(plain.values_list("pk", flat=True))


def test_the_campaign_filter_on_the_page_and_the_api_pins_its_queries(
    touched, marketing_client, marketing_api, django_assert_num_queries
):
    webinar, _ads, people = touched
    expected = {people[n].pk for n in ("acquired", "touched", "both")}
    marketing_client.get(reverse("crm:contact-list"))  # warm the session
    # session, user, roles, the chosen campaign, page rows, owner and campaign choices,
    # static segments, bulk-action owner choices, the top bar's unread-notices count
    with django_assert_num_queries(10):
        r = marketing_client.get(reverse("crm:contact-list"), {"campaign": webinar.pk})
    assert {row["pk"] for row in r.context["page"].object_list} == expected
    marketing_api.get("/api/v1/contacts/")
    with django_assert_num_queries(2):  # the chosen campaign, the page
        r = marketing_api.get("/api/v1/contacts/", {"campaign": webinar.pk, "sort": "score"})
    assert {row["id"] for row in r.json()["results"]} == expected


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL plans")
@pytest.mark.parametrize("sort", ["created", "score", "name", "-name"])
def test_the_campaign_filter_reads_members_not_activities_on_postgresql(touched, sort):
    webinar, _ads, _people = touched
    qs = ContactFilter(
        QueryDict(f"campaign={webinar.pk}&sort={sort}"), queryset=contact_queryset()
    ).qs
    plan = qs[:51].explain()
    assert "campaignmember" in plan
    assert "crm_activity" not in plan
