import pytest
from django.test.utils import override_settings
from django.utils import timezone

from crm import ingest, sales
from crm.models import ActivityKind, LifecycleTransition, Stage
from tests.crm.sales_factories import make_mql
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db

QUEUE = "/crm/mqls/"
HOSTILE = '<script>alert("x")</script>'


def fake_summaries(contact_ids):
    """A summary provider as scoring would contribute one (settings.CONTACT_SUMMARY_PROVIDERS)."""
    return {cid: [f"Score breakdown for {cid}", HOSTILE] for cid in contact_ids}


def test_it_shows_my_mqls_first_with_activities_and_overdue_age(sales_client, sales_user):
    late = make_mql(hours_ago=48, owner=sales_user, first_name="Late")
    fresh = make_mql(hours_ago=1, owner=sales_user, first_name="Fresh")
    make_mql(first_name="Unowned")
    ActivityFactory(contact=late, kind=ActivityKind.WEBINAR_ATTENDED)
    response = sales_client.get(QUEUE)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Late" in html
    assert "Fresh" in html
    assert "Unowned" not in html
    assert "Webinar attended" in html
    rows = {c.pk: c for c in response.context["contacts"]}
    assert rows[late.pk].overdue is True
    assert rows[fresh.pk].overdue is False
    assert 'class="overdue"' in html


# Scoring is left out so the click cannot requalify the lead before we look at the tab.
@override_settings(ACTIVITIES_RECORDED_HANDLERS=[])
def test_the_tabs_split_unassigned_team_and_reengaged(sales_client, sales_user, other_sales_user):
    mine = make_mql(owner=sales_user)
    theirs = make_mql(owner=other_sales_user)
    free = make_mql()
    back = make_mql()
    sales.mql_reject(contact_id=back.pk, by=sales_user, reason_code="bad_timing")
    quiet = make_mql()
    sales.mql_reject(contact_id=quiet.pk, by=sales_user, reason_code="no_budget")
    ingest.activities_record(
        items=[
            {
                "contact": back.pk,
                "kind": ActivityKind.EMAIL_CLICKED,
                "occurred_at": timezone.now(),
                "external_id": "reengaged-click",
            }
        ]
    )

    def ids(tab):
        return {c.pk for c in sales_client.get(QUEUE, {"tab": tab}).context["contacts"]}

    assert ids("mine") == {mine.pk}
    assert ids("unassigned") == {free.pk}
    assert ids("team") == {mine.pk, theirs.pk, free.pk}
    assert ids("reengaged") == {back.pk}
    html = sales_client.get(QUEUE, {"tab": "reengaged"}).content.decode()
    assert "recycled, round 1" in html
    assert "Accept</button>" not in html


def test_it_sorts_by_score_or_age(sales_client):
    low_old = make_mql(hours_ago=10, score=10)
    high_new = make_mql(hours_ago=1, score=99)

    def order(sort):
        ctx = sales_client.get(QUEUE, {"tab": "team", "sort": sort}).context
        return [c.pk for c in ctx["contacts"]]

    assert order("score") == [high_new.pk, low_old.pk]
    assert order("age") == [low_old.pk, high_new.pk]
    assert order("bogus") == [high_new.pk, low_old.pk]


@override_settings(CONTACT_SUMMARY_PROVIDERS=["tests.crm.test_views_mqls.fake_summaries"])
def test_hostile_names_and_summaries_render_escaped(sales_client):
    contact = make_mql(first_name=HOSTILE, job_title=HOSTILE)
    html = sales_client.get(QUEUE, {"tab": "team"}).content.decode()
    assert HOSTILE not in html
    assert "&lt;script&gt;" in html
    assert f"Score breakdown for {contact.pk}" in html
    detail = sales_client.get(f"{QUEUE}{contact.pk}/").content.decode()
    assert HOSTILE not in detail


@override_settings(CONTACT_SUMMARY_PROVIDERS=[])
def test_the_queue_query_count_is_fixed(sales_client, django_assert_num_queries):
    for i in range(3):
        ActivityFactory(contact=make_mql(hours_ago=i))
    sales_client.get(QUEUE, {"tab": "team"})  # warm the session/user caches
    # session, user, groups, count, page, activities prefetch, reasons, the top bar's
    # unread-notices count
    with django_assert_num_queries(8):
        sales_client.get(QUEUE, {"tab": "team"})
    for i in range(10):
        ActivityFactory(contact=make_mql(hours_ago=i))
    with django_assert_num_queries(8):
        response = sales_client.get(QUEUE, {"tab": "team"})
    assert len(response.context["contacts"]) == 13


def test_accepting_from_the_queue(sales_client):
    contact = make_mql(first_name="Ann")
    response = sales_client.post(
        f"{QUEUE}{contact.pk}/accept/", {"amount": "900", "next": "/crm/mqls/?tab=team"}
    )
    assert response.status_code == 302
    assert response.url == "/crm/mqls/?tab=team"
    contact.refresh_from_db()
    assert contact.stage == Stage.OPPORTUNITY
    page = sales_client.get(response.url).content.decode()
    assert "You accepted Ann" in page


def test_an_outside_next_url_is_ignored(sales_client):
    contact = make_mql()
    response = sales_client.post(f"{QUEUE}{contact.pk}/accept/", {"next": "https://evil.example/"})
    assert response.url == "/crm/mqls/"


def test_rejecting_needs_a_reason(sales_client):
    contact = make_mql()
    response = sales_client.post(f"{QUEUE}{contact.pk}/reject/", {"note": "?"}, follow=True)
    assert "Choose a reason" in response.content.decode()
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL
    response = sales_client.post(
        f"{QUEUE}{contact.pk}/reject/", {"reason": "no_project", "note": "next year"}, follow=True
    )
    assert "recycled into nurture" in response.content.decode()
    t = LifecycleTransition.objects.filter(contact=contact).order_by("-id").first()
    assert (t.to_stage, t.reason_code, t.note, t.recycle_round) == (
        Stage.RECYCLED,
        "no_project",
        "next year",
        1,
    )


def test_the_loser_of_a_race_is_told_who_decided(sales_client, other_sales_user):
    other_sales_user.first_name, other_sales_user.last_name = "Sasha", "Kim"
    other_sales_user.save()
    contact = make_mql()
    sales.mql_accept(contact_id=contact.pk, by=other_sales_user)
    response = sales_client.post(f"{QUEUE}{contact.pk}/reject/", {"reason": "bad_fit"}, follow=True)
    assert "Sasha Kim accepted this lead" in response.content.decode()
    assert LifecycleTransition.objects.filter(contact=contact, from_stage=Stage.MQL).count() == 1


def test_claiming_assigns_to_me(sales_client, sales_user):
    contact = make_mql()
    sales_client.post(f"{QUEUE}{contact.pk}/claim/")
    contact.refresh_from_db()
    assert contact.owner == sales_user


def test_marketing_reads_the_queue_but_cannot_act(marketing_client):
    contact = make_mql()
    response = marketing_client.get(QUEUE)
    assert response.status_code == 200
    assert response.context["tab"] == "team"
    assert "Accept</button>" not in response.content.decode()
    assert marketing_client.get(f"{QUEUE}{contact.pk}/").status_code == 200
    for action in ("accept", "reject", "claim"):
        assert marketing_client.post(f"{QUEUE}{contact.pk}/{action}/").status_code == 403
    contact.refresh_from_db()
    assert contact.stage == Stage.MQL


@pytest.mark.parametrize("persona", ["admin"], indirect=True)
def test_admin_acts_like_sales(client, persona):
    client.force_login(persona)
    contact = make_mql()
    client.post(f"{QUEUE}{contact.pk}/reject/", {"reason": "duplicate"})
    contact.refresh_from_db()
    assert contact.stage == Stage.DISQUALIFIED


def test_anonymous_goes_to_log_in_and_no_role_is_refused(client, no_role_user):
    contact = make_mql()
    assert client.get(QUEUE).status_code == 302
    assert client.post(f"{QUEUE}{contact.pk}/accept/").status_code == 302
    client.force_login(no_role_user)
    assert client.get(QUEUE).status_code == 403


def test_the_detail_page_of_a_decided_lead_shows_history_without_forms(sales_client, sales_user):
    contact = make_mql()
    sales.mql_reject(contact_id=contact.pk, by=sales_user, reason_code="no_authority")
    html = sales_client.get(f"{QUEUE}{contact.pk}/").content.decode()
    assert "no_authority" in html
    assert "Accept</button>" not in html
    assert sales_client.get(f"{QUEUE}999999/").status_code == 404


def test_a_non_mql_is_not_in_the_queue(sales_client):
    ContactFactory(stage=Stage.SQL, first_name="Nope")
    assert "Nope" not in sales_client.get(QUEUE, {"tab": "team"}).content.decode()
