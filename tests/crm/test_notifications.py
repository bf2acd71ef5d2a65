"""In-app notices: the notifications page, opening one, mark all read, the top-bar count
and the API — each user only ever sees and marks their own."""

from datetime import timedelta
from html import unescape

import pytest
from django.utils import timezone

from crm import sales
from crm.ingest import activities_record
from crm.models import ActivityKind, Notification, Stage
from crm.notifications import UNREAD_SHOWN_MAX
from scoring.models import ScoringSettings
from tests.crm.sales_factories import make_mql
from tests.factories import ContactFactory
from tests.scoring.factories import EngagementRuleFactory

pytestmark = pytest.mark.django_db

LIST = "/crm/notifications/"
READ_ALL = "/crm/notifications/read-all/"
API = "/api/v1/notifications/"
API_READ = "/api/v1/notifications/read/"
HOSTILE = '<script>alert("x")</script>'


def notice(user, text="New MQL: Ann Lee (score 40)", url="/crm/contacts/1/", **fields):
    return Notification.objects.create(user=user, text=text, url=url, **fields)


def open_url(n) -> str:
    return f"/crm/notifications/{n.pk}/open/"


def listed(response) -> list[int]:
    return [n.pk for n in response.context["page"].object_list]


# --- The page ----------------------------------------------------------------------------


def test_it_lists_my_notices_newest_first_and_marks_the_unread(sales_client, sales_user):
    old = notice(sales_user, text="Older notice", read_at=timezone.now())
    new = notice(sales_user, text="Newer notice")
    Notification.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    response = sales_client.get(LIST)
    assert response.status_code == 200
    assert listed(response) == [new.pk, old.pk]
    html = response.content.decode()
    assert html.index("Newer notice") < html.index("Older notice")
    assert html.count('<tr class="unread">') == 1
    assert html.count('<tr class="read">') == 1
    assert f'action="{open_url(new)}"' in html  # opened by a POST form, not a GET link
    assert "Mark all as read" in html


def test_another_users_notices_are_not_listed(sales_client, sales_user, other_sales_user):
    mine = notice(sales_user, text="Mine")
    notice(other_sales_user, text="Sasha's secret")
    response = sales_client.get(LIST)
    assert listed(response) == [mine.pk]
    assert "Sasha&#x27;s secret" not in response.content.decode()
    assert "Sasha's secret" not in response.content.decode()


def test_the_page_paginates(sales_client, sales_user):
    Notification.objects.bulk_create(
        Notification(user=sales_user, text=f"Notice {i}") for i in range(55)
    )
    first = sales_client.get(LIST)
    assert len(listed(first)) == 50
    assert 'href="?page=2"' in first.content.decode()
    assert len(listed(sales_client.get(LIST, {"page": 2}))) == 5
    assert len(listed(sales_client.get(LIST, {"page": "nonsense"}))) == 50


def test_a_notice_text_is_escaped(sales_client, sales_user):
    notice(sales_user, text=f"New MQL: {HOSTILE}")
    html = sales_client.get(LIST).content.decode()
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


@pytest.mark.parametrize("persona", ["marketing", "sales", "admin"], indirect=True)
def test_every_role_has_the_page(client, persona):
    notice(persona, text="For you")
    client.force_login(persona)
    response = client.get(LIST)
    assert response.status_code == 200
    assert "For you" in response.content.decode()


def test_anonymous_is_sent_to_log_in(client, sales_user):
    n = notice(sales_user)
    for response in (client.get(LIST), client.post(open_url(n)), client.post(READ_ALL)):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    n.refresh_from_db()
    assert n.read_at is None


def test_a_user_without_a_role_is_refused(client, no_role_user):
    notice(no_role_user)
    client.force_login(no_role_user)
    assert client.get(LIST).status_code == 403


# --- Opening a notice and marking all read -----------------------------------------------


def test_opening_a_notice_marks_it_read_and_follows_its_link(sales_client, sales_user):
    n = notice(sales_user, url="/crm/mqls/7/")
    response = sales_client.post(open_url(n))
    assert response.status_code == 302
    assert response["Location"] == "/crm/mqls/7/"
    n.refresh_from_db()
    assert n.read_at is not None


def test_opening_it_again_keeps_the_first_read_time(sales_client, sales_user):
    first = timezone.now() - timedelta(days=2)
    n = notice(sales_user, read_at=first)
    sales_client.post(open_url(n))
    n.refresh_from_db()
    assert n.read_at == first


def test_opening_takes_a_post(sales_client, sales_user):
    n = notice(sales_user)
    assert sales_client.get(open_url(n)).status_code == 405
    n.refresh_from_db()
    assert n.read_at is None


def test_opening_needs_the_csrf_token(client, sales_user):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(sales_user)
    n = notice(sales_user)
    assert csrf_client.post(open_url(n)).status_code == 403
    n.refresh_from_db()
    assert n.read_at is None


def test_another_users_notice_is_a_404_and_stays_unread(sales_client, other_sales_user):
    theirs = notice(other_sales_user)
    assert sales_client.post(open_url(theirs)).status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "http:/evil.example",
        "",
    ],
)
def test_opening_never_leaves_the_site(sales_client, sales_user, url):
    n = notice(sales_user, url=url)
    response = sales_client.post(open_url(n))
    assert response.status_code == 302
    assert response["Location"] == LIST
    n.refresh_from_db()
    assert n.read_at is not None  # still read: the notice was opened


def test_the_page_shows_only_a_local_link(sales_client, sales_user):
    notice(sales_user, text="Local", url="/crm/mqls/7/")
    notice(sales_user, text="Foreign", url="//evil.example/phish")
    html = sales_client.get(LIST).content.decode()
    assert "/crm/mqls/7/" in html
    assert "evil.example" not in html
    assert 'href="//evil.example' not in html


def test_mark_all_as_read_marks_only_mine(sales_client, sales_user, other_sales_user):
    mine = [notice(sales_user), notice(sales_user)]
    theirs = notice(other_sales_user)
    response = sales_client.post(READ_ALL, follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert "Marked 2 notices read." in response.content.decode()
    assert not Notification.objects.filter(pk__in=[n.pk for n in mine], read_at=None).exists()
    theirs.refresh_from_db()
    assert theirs.read_at is None
    assert "Mark all as read" not in response.content.decode()


def test_mark_all_as_read_takes_a_post(sales_client, sales_user):
    notice(sales_user)
    assert sales_client.get(READ_ALL).status_code == 405
    assert Notification.objects.filter(read_at=None).count() == 1


# --- The top-bar count -------------------------------------------------------------------


def badge(response) -> str | None:
    html = response.content.decode()
    start = html.find('<span class="notice-count">')
    if start < 0:
        return None
    return html[start + len('<span class="notice-count">') : html.index("</span>", start)]


def test_the_top_bar_counts_my_unread_notices(sales_client, sales_user, other_sales_user):
    notice(sales_user)
    notice(sales_user)
    notice(sales_user, read_at=timezone.now())
    notice(other_sales_user)
    response = sales_client.get("/crm/deals/")  # any page
    assert badge(response) == "2"
    assert 'aria-label="Notifications, 2 unread"' in response.content.decode()


def test_the_top_bar_shows_no_count_when_all_are_read(sales_client, sales_user):
    notice(sales_user, read_at=timezone.now())
    response = sales_client.get("/crm/deals/")
    assert badge(response) is None
    assert 'href="/crm/notifications/"' in response.content.decode()


def test_the_top_bar_caps_the_count(sales_client, sales_user):
    Notification.objects.bulk_create(
        Notification(user=sales_user, text=f"n{i}") for i in range(UNREAD_SHOWN_MAX + 5)
    )
    assert badge(sales_client.get("/crm/deals/")) == f"{UNREAD_SHOWN_MAX}+"
    Notification.objects.filter(pk__in=Notification.objects.values("pk")[:5]).delete()
    assert badge(sales_client.get("/crm/deals/")) == str(UNREAD_SHOWN_MAX)


def test_the_count_is_one_query_per_page(sales_client, sales_user, django_assert_num_queries):
    notice(sales_user)
    # The session, the user, the roles, the page (a count and the rows), the badge's COUNT.
    with django_assert_num_queries(6) as captured:
        response = sales_client.get(LIST)
    assert badge(response) == "1"
    counts = [q["sql"] for q in captured.captured_queries if "crm_notification" in q["sql"]]
    assert len([q for q in counts if "read_at" in q and "IS NULL" in q]) == 1


def test_the_log_in_page_reads_no_notices(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert badge(response) is None


# --- API ---------------------------------------------------------------------------------


def test_the_api_lists_my_notices_newest_first(sales_api, sales_user, other_sales_user):
    old = notice(sales_user, text="Old", read_at=timezone.now())
    new = notice(sales_user, text=HOSTILE)
    Notification.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    notice(other_sales_user, text="Not yours")
    body = sales_api.get(API).json()
    assert body["count"] == 2
    assert [r["id"] for r in body["results"]] == [new.pk, old.pk]
    first = body["results"][0]
    assert first == {
        "id": new.pk,
        "text": HOSTILE,  # JSON carries the text as stored; escaping is the renderer's job
        "url": "/crm/contacts/1/",
        "created_at": first["created_at"],
        "read_at": None,
        "unread": True,
    }


def test_the_api_filters_unread_and_read(sales_api, sales_user):
    read = notice(sales_user, read_at=timezone.now())
    unread = notice(sales_user)
    assert [r["id"] for r in sales_api.get(API, {"unread": "1"}).json()["results"]] == [unread.pk]
    assert [r["id"] for r in sales_api.get(API, {"unread": "true"}).json()["results"]] == [
        unread.pk
    ]
    assert [r["id"] for r in sales_api.get(API, {"unread": "0"}).json()["results"]] == [read.pk]


def test_the_api_paginates(sales_api, sales_user):
    Notification.objects.bulk_create(Notification(user=sales_user, text=f"n{i}") for i in range(7))
    body = sales_api.get(API, {"page_size": 5}).json()
    assert body["count"] == 7
    assert len(body["results"]) == 5
    assert body["next"]


def test_the_api_marks_ids_read_and_ignores_other_users(sales_api, sales_user, other_sales_user):
    a, b = notice(sales_user), notice(sales_user)
    theirs = notice(other_sales_user)
    response = sales_api.post(API_READ, {"ids": [a.pk, theirs.pk]}, format="json")
    assert response.status_code == 200
    assert response.json() == {"marked": 1}
    a.refresh_from_db()
    b.refresh_from_db()
    theirs.refresh_from_db()
    assert a.read_at is not None
    assert b.read_at is None
    assert theirs.read_at is None


def test_the_api_marks_all_read(sales_api, sales_user, other_sales_user):
    notice(sales_user)
    notice(sales_user)
    theirs = notice(other_sales_user)
    assert sales_api.post(API_READ, {"all": True}, format="json").json() == {"marked": 2}
    assert sales_api.post(API_READ, {"all": True}, format="json").json() == {"marked": 0}
    assert sales_api.get(API, {"unread": "1"}).json()["count"] == 0
    theirs.refresh_from_db()
    assert theirs.read_at is None


@pytest.mark.parametrize(
    "body",
    [{}, {"all": False}, {"all": True, "ids": [1]}, {"ids": ["x"]}, {"ids": 5}],
)
def test_the_api_wants_either_ids_or_all(sales_api, sales_user, body):
    notice(sales_user)
    assert sales_api.post(API_READ, body, format="json").status_code == 400
    assert Notification.objects.filter(read_at=None).count() == 1


def test_the_api_wants_a_log_in(api_client):
    assert api_client.get(API).status_code in (401, 403)
    assert api_client.post(API_READ, {"all": True}, format="json").status_code in (401, 403)


# --- End to end: a notice written where things happen shows up for its user ---------------


def test_an_mql_hand_off_notice_reaches_its_owners_page(client, sales_user):
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    EngagementRuleFactory(points=30, activity_kind=ActivityKind.DEMO_REQUESTED)
    lead = ContactFactory(
        first_name="Nora",
        last_name="Quist",
        created_at=timezone.now() - timedelta(days=3),
    )
    activities_record(
        items=[
            {
                "kind": ActivityKind.DEMO_REQUESTED,
                "contact": lead.pk,
                "occurred_at": timezone.now() - timedelta(minutes=5),
            }
        ]
    )
    lead.refresh_from_db()
    assert (lead.stage, lead.owner) == (Stage.MQL, sales_user)

    client.force_login(sales_user)
    page = client.get(LIST)
    assert badge(page) == "1"
    (shown,) = page.context["page"].object_list
    assert "New MQL: Nora Quist" in page.content.decode()

    opened = client.post(open_url(shown))
    assert opened["Location"] == lead.get_absolute_url()
    assert client.get(opened["Location"]).status_code == 200
    assert badge(client.get(LIST)) is None


def test_another_reps_decision_reaches_the_owners_page(client, sales_user, other_sales_user):
    lead = make_mql(owner=other_sales_user, first_name="Ann", last_name="Lee")
    sales.mql_accept(contact_id=lead.pk, by=sales_user)
    client.force_login(other_sales_user)
    html = unescape(client.get(LIST).content.decode())
    assert f"{sales_user.get_full_name()} accepted your lead Ann Lee." in html
    client.force_login(sales_user)
    assert "accepted your lead" not in client.get(LIST).content.decode()
