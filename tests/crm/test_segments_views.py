"""Segment pages and API: roles, builder, preview, members, CSV, why, static lists."""

import pytest
from django.http import QueryDict
from django.urls import reverse

from crm.models import Segment, SegmentMembership
from crm.segments import segment_members_add, segment_save
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db
DIRECTORS = {"all": [{"field": "job_title", "op": "contains", "value": "Director"}]}


@pytest.fixture
def directors():
    ContactFactory(job_title="Director of IT", email="dir@example.com")
    ContactFactory(job_title="Analyst")
    return segment_save(segment=None, name="Directors", kind="dynamic", definition=DIRECTORS)


@pytest.fixture
def berlin():
    seg = segment_save(segment=None, name="Berlin", kind="static", definition={})
    segment_members_add(segment=seg, contact_ids=[ContactFactory(email="b@example.com").pk])
    return seg


# --- Roles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_name", "status"),
    [("marketing_client", 200), ("sales_client", 200), ("admin_client_", 200), ("client", 302)],
)
def test_it_lets_every_role_read_the_list_and_refuses_anonymous(request, client_name, status):
    client = request.getfixturevalue(client_name)
    assert client.get(reverse("crm:segment-list")).status_code == status


def test_it_refuses_a_user_without_a_role(client, no_role_user):
    client.force_login(no_role_user)
    assert client.get(reverse("crm:segment-list")).status_code == 403


def test_sales_reads_a_segment_but_cannot_build_or_change_one(sales_client, directors, berlin):
    assert sales_client.get(directors.get_absolute_url()).status_code == 200
    assert sales_client.get(reverse("crm:segment-create")).status_code == 403
    url = reverse("crm:segment-members", args=[berlin.pk])
    assert sales_client.post(url, {"emails": "x@example.com"}).status_code == 403
    assert sales_client.post(reverse("crm:segment-delete", args=[berlin.pk])).status_code == 403
    assert Segment.objects.filter(pk=berlin.pk).exists()


# --- Builder and preview -------------------------------------------------------------------


def builder_post(**rows):
    data = {"node": ["0"], "0:type": "group", "0:mode": "all"}
    for i, (field, op, value) in enumerate(rows.values()):
        path = f"0.{i}"
        data["node"].append(path)
        data.update({f"{path}:type": "profile", f"{path}:field": field, f"{path}:op": op})
        data[f"{path}:value"] = value
    return data


def test_it_adds_and_removes_builder_rows(marketing_client):
    url = reverse("crm:segment-builder")
    response = marketing_client.post(url, {**builder_post(), "action": "add-behaviour:0"})
    assert response.status_code == 200
    assert 'name="0.0:kind"' in response.content.decode()
    data = builder_post(a=("job_title", "contains", "x"), b=("score", "gt", "5"))
    response = marketing_client.post(url, {**data, "action": "remove:0.0"})
    html = response.content.decode()
    assert 'name="0.0:field" value="score"' in html
    assert 'name="0.1:field"' not in html


def test_it_previews_the_count_and_a_sample(marketing_client, directors):
    response = marketing_client.post(
        reverse("crm:segment-preview"), builder_post(a=("job_title", "contains", "director"))
    )
    html = response.content.decode()
    assert '<span class="value">1</span>' in html
    assert "Director of IT" in html


def test_the_preview_names_the_bad_part(marketing_client):
    response = marketing_client.post(
        reverse("crm:segment-preview"), builder_post(a=("score", "contains", "x"))
    )
    assert "all[0].op" in response.content.decode()


def test_it_creates_a_segment_from_the_builder(marketing_client, directors):
    data = {
        "name": "Dirs",
        "kind": "dynamic",
        "description": "",
        **builder_post(a=("job_title", "contains", "Director")),
    }
    response = marketing_client.post(reverse("crm:segment-create"), data)
    seg = Segment.objects.get(name="Dirs")
    assert response.status_code == 302
    assert seg.definition == DIRECTORS
    assert SegmentMembership.objects.filter(segment=seg).count() == 1


def test_it_shows_form_errors_instead_of_a_500(marketing_client):
    data = {"name": "Bad", "kind": "dynamic", **builder_post(a=("owner__password", "equals", "x"))}
    response = marketing_client.post(reverse("crm:segment-create"), data)
    assert response.status_code == 400
    assert "is not a known field" in response.content.decode()
    assert not Segment.objects.filter(name="Bad").exists()


def test_it_renders_hostile_names_escaped(marketing_client):
    segment_save(segment=None, name="<script>alert(1)</script>", kind="static", definition={})
    html = marketing_client.get(reverse("crm:segment-list")).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


# --- Members, CSV, history, why ------------------------------------------------------------


def test_the_list_page_has_a_fixed_query_count(
    marketing_client, directors, berlin, django_assert_max_num_queries
):
    for i in range(5):
        segment_save(segment=None, name=f"S{i}", kind="dynamic", definition=DIRECTORS)
    marketing_client.get(reverse("crm:segment-list"))
    with django_assert_max_num_queries(6):
        assert marketing_client.get(reverse("crm:segment-list")).status_code == 200


@pytest.fixture
def members(directors, sales_user):
    """Directors of every stage, score and owner, and one who is no member."""
    from tests.factories import CompanyFactory, score_set

    acme = CompanyFactory(name="Acme")
    rows = []
    for i in range(30):
        contact = ContactFactory(
            job_title=f"Director {i}",
            first_name="Ann" if i % 3 == 0 else "Bob",
            last_name=f"Lee{i:02d}",
            stage=["lead", "mql", "sql"][i % 3],
            owner=sales_user if i % 2 else None,
            company=acme if i % 5 == 0 else None,
            email_status="unsubscribed" if i % 7 == 0 else "active",
        )
        score_set(contact, i * 3)
        rows.append(contact)
    ContactFactory(job_title="Analyst", first_name="Ann", stage="mql")  # not a member
    segment_save(segment=directors, name="Directors", kind="dynamic", definition=DIRECTORS)
    return rows


def member_ids(response) -> list[int]:
    return [row["pk"] for row in response.context["page"].object_list]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"stage": ["mql", "sql"], "sort": "score"},
        {"owner": "OWNER", "stage": "sql", "sort": "score"},
        {"unassigned": "true", "sort": "-name"},
        {"q": "ann", "sort": "-created"},
        {"score_min": "30", "score_max": "60", "email_status": "active", "sort": "stage"},
        {"company": "ACME", "created_after": "2000-01-01", "sort": "-score"},
    ],
)
def test_the_member_list_filters_and_sorts_as_the_contact_list_does(
    marketing_client, members, directors, sales_user, query
):
    """Every contact-list filter and sort, over the members only: the same rows in the
    same order as the contact list's page for the same query, minus non-members."""
    from crm.filters import ContactFilter
    from crm.views.contacts import contact_queryset

    acme = members[0].company
    query = {
        k: {"OWNER": sales_user.pk, "ACME": acme.pk}.get(v, v) if isinstance(v, str) else v
        for k, v in query.items()
    }
    response = marketing_client.get(directors.get_absolute_url(), query)
    assert response.status_code == 200
    data = QueryDict(mutable=True)
    for key, value in query.items():
        data.setlist(key, value if isinstance(value, list) else [str(value)])
    everyone = ContactFilter(data, queryset=contact_queryset()).qs
    expected = [c.pk for c in everyone if c.job_title.startswith("Director")]
    assert member_ids(response) == expected
    assert expected  # each query selects someone


@pytest.mark.parametrize(
    ("query", "queries"),
    [
        ({}, 9),
        ({"stage": "mql", "score_min": "10", "sort": "score", "page": 2}, 9),
        ({"q": "Ann Lee", "sort": "name"}, 9),
        ({"owner": "OWNER", "sort": "-created"}, 10),  # + the chosen owner
    ],
)
def test_the_member_page_pins_its_queries(
    marketing_client, members, directors, sales_user, django_assert_num_queries, query, queries
):
    query = {k: sales_user.pk if v == "OWNER" else v for k, v in query.items()}
    marketing_client.get(directors.get_absolute_url())  # warm the session
    # session, user, roles, the segment with its member count, the page rows, the history
    # chart, the top bar's unread-notices count, owner and campaign choices of the filter
    with django_assert_num_queries(queries):
        response = marketing_client.get(directors.get_absolute_url(), query)
    assert response.status_code == 200
    if not query:
        assert response.content.decode().count("why?") == 31
        assert response.context["segment"].member_count == 31


def test_it_exports_the_filtered_members_as_csv_and_xlsx_with_formulas_neutralised(
    marketing_client, directors
):
    import csv
    import io

    from openpyxl import load_workbook

    ContactFactory(job_title="Director", first_name="=HYPERLINK(1)", stage="mql")
    ContactFactory(job_title="Director", first_name="Lea", stage="lead")
    ContactFactory(job_title="Analyst", first_name="=X()", stage="mql")  # no member
    segment_save(segment=directors, name="Directors", kind="dynamic", definition=DIRECTORS)
    url = directors.get_absolute_url()
    assert "No members match." in marketing_client.get(url, {"q": "nomatch"}).content.decode()

    response = marketing_client.get(url, {"stage": "mql", "export": "csv"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="segment-{directors.pk}-' in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["id", "email", "first_name", "last_name"]  # the contact export's
    assert [row[2] for row in rows[1:]] == ["'=HYPERLINK(1)"]

    response = marketing_client.get(url, {"export": "xlsx", "sort": "name"})
    sheet = load_workbook(io.BytesIO(response.content)).active
    names = sorted(sheet.cell(r, 3).value for r in range(2, sheet.max_row + 1))
    assert sheet.max_row == 4  # header and the three directors
    assert "=HYPERLINK(1)" in names  # a text cell (quote prefix), never a formula
    assert sheet.cell(1, 2).value == "email"
    # The page's export link before it took the contact list's ?export=.
    legacy = marketing_client.get(url, {"format": "csv"})
    assert len(b"".join(legacy.streaming_content).decode("utf-8-sig").splitlines()) == 4


def test_an_invalid_member_filter_shows_its_error_instead_of_a_500(marketing_client, directors):
    response = marketing_client.get(directors.get_absolute_url(), {"score_min": "many"})
    assert response.status_code == 200
    assert "Enter a number." in response.content.decode()
    assert member_ids(response) == []


def test_it_explains_why_a_contact_is_in_a_segment(marketing_client, directors):
    contact = directors.memberships.get().contact
    response = marketing_client.get(reverse("crm:segment-why", args=[directors.pk, contact.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "✓" in html
    assert "job_title" in html


def test_it_adds_static_members_from_pasted_emails_and_a_csv_file(marketing_client, berlin):
    from django.core.files.uploadedfile import SimpleUploadedFile

    a, b = ContactFactory(email="a@example.com"), ContactFactory(email="c@example.com")
    upload = SimpleUploadedFile("list.csv", b"email\nC@example.com\nunknown@example.com\n")
    url = reverse("crm:segment-members", args=[berlin.pk])
    response = marketing_client.post(url, {"emails": "a@example.com, x", "file": upload})
    assert response.status_code == 302
    members = set(berlin.memberships.values_list("contact_id", flat=True))
    assert {a.pk, b.pk} <= members
    marketing_client.post(url, {"op": "remove", "contact": [a.pk]})
    assert a.pk not in set(berlin.memberships.values_list("contact_id", flat=True))


# --- API -----------------------------------------------------------------------------------


def test_api_crud_and_versions(marketing_api):
    ContactFactory(job_title="Director")
    response = marketing_api.post(
        "/api/v1/segments/",
        {"name": "Dirs", "kind": "dynamic", "definition": DIRECTORS},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["version"], body["member_count"]) == (1, 1)
    url = f"/api/v1/segments/{body['id']}/"
    response = marketing_api.patch(url, {"name": "Directors"}, format="json")
    assert (response.json()["name"], response.json()["version"]) == ("Directors", 2)
    assert marketing_api.get("/api/v1/segments/").json()["count"] == 1
    assert marketing_api.delete(url).status_code == 204


def test_api_refuses_bad_definitions_with_400_naming_the_part(marketing_api):
    response = marketing_api.post(
        "/api/v1/segments/",
        {
            "name": "Bad",
            "kind": "dynamic",
            "definition": {"all": [{"field": "score", "op": "gt", "value": "ten"}]},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "all[0].value" in response.json()["definition"]


def test_api_refuses_an_indirect_cycle(marketing_api):
    a = segment_save(segment=None, name="A", kind="dynamic", definition={"all": []})
    b = segment_save(segment=None, name="B", kind="dynamic", definition={"in_segment": a.pk})
    response = marketing_api.put(
        f"/api/v1/segments/{a.pk}/",
        {"name": "A", "kind": "dynamic", "definition": {"in_segment": b.pk}},
        format="json",
    )
    assert response.status_code == 400
    assert "cannot refer to itself" in str(response.json())


def test_api_previews_and_lists_members(marketing_api, sales_api, directors):
    response = marketing_api.post(
        "/api/v1/segments/preview/", {"definition": DIRECTORS}, format="json"
    )
    assert response.json()["count"] == 1
    assert response.json()["sample"][0]["email"] == "dir@example.com"
    members = sales_api.get(f"/api/v1/segments/{directors.pk}/members/").json()
    assert [m["email"] for m in members["results"]] == ["dir@example.com"]


def test_api_refuses_writes_by_sales(sales_api, directors):
    assert sales_api.get("/api/v1/segments/").status_code == 200
    response = sales_api.post("/api/v1/segments/", {"name": "x", "kind": "static"}, format="json")
    assert response.status_code == 403
    assert sales_api.delete(f"/api/v1/segments/{directors.pk}/").status_code == 403


def test_api_adds_static_members_by_email(marketing_api, berlin):
    c = ContactFactory(email="new@example.com")
    response = marketing_api.post(
        f"/api/v1/segments/{berlin.pk}/members/",
        {"emails": ["NEW@example.com", "ghost@example.com"]},
        format="json",
    )
    assert response.json() == {"changed": 1, "unknown_emails": ["ghost@example.com"]}
    assert berlin.memberships.filter(contact=c).exists()


def test_the_builder_round_trips_behaviour_with_dates_form_and_content_type():
    from crm.segments.builder import from_tree, to_tree

    definition = {
        "all": [
            {
                "did": "content_download",
                "between": ["2026-01-01", "2026-03-31"],
                "form": "Fintech report",
                "content_type": "white paper",
                "min_count": 1,
            }
        ]
    }
    row = to_tree(definition).children[0]
    assert row.type == "behaviour"
    assert (row.values["between_from"], row.values["between_to"]) == ("2026-01-01", "2026-03-31")
    assert from_tree(to_tree(definition)) == definition


def test_the_builder_types_attribute_ranges_and_dates_from_what_is_typed(marketing_client):
    """An attribute has no declared type: "10, 50" is a number range, two days a date range;
    the date operators and the new profile fields are offered and previewed."""
    from django.http import QueryDict

    from crm.segments.builder import from_tree, parse_post

    ContactFactory(attributes={"seats": "20", "renewal_date": "2026-02-01"}, timezone="UTC")
    rows = builder_post(
        a=("attributes.seats", "between", "10, 50"),
        b=("attributes.renewal_date", "between", "2026-01-01, 2026-03-31"),
        c=("attributes.renewal_date", "before", "2026-03-01"),
        d=("attributes.renewal_date", "within_last_days", "3650"),
        e=("attributes.seats", "not_in", "5, 7"),
        f=("timezone", "equals", "utc"),
    )
    query = QueryDict(mutable=True)
    for key, value in rows.items():
        query.setlist(key, value if isinstance(value, list) else [value])
    assert from_tree(parse_post(query))["all"] == [
        {"field": "attributes.seats", "op": "between", "value": [10, 50]},
        {
            "field": "attributes.renewal_date",
            "op": "between",
            "value": ["2026-01-01", "2026-03-31"],
        },
        {"field": "attributes.renewal_date", "op": "before", "value": "2026-03-01"},
        {"field": "attributes.renewal_date", "op": "within_last_days", "value": 3650},
        {"field": "attributes.seats", "op": "not_in", "value": [5, 7]},
        {"field": "timezone", "op": "equals", "value": "utc"},
    ]
    response = marketing_client.post(reverse("crm:segment-preview"), rows)
    assert '<span class="value">1</span>' in response.content.decode()
    url = reverse("crm:segment-builder")
    form = marketing_client.post(url, {**rows, "action": "add-profile:0"}).content.decode()
    for op in ("between", "before", "after", "within_last_days"):
        assert f'<option value="{op}"' in form
    for field in ("timezone", "consent_given_at", "consent_source", "updated_at"):
        assert f'<option value="{field}">' in form


def test_api_members_take_the_contact_lists_filters_and_sort(marketing_api, berlin):
    """The members API filters and sorts as the segment's page does (ContactFilter);
    a bad value is a 400, not an unfiltered list."""
    from crm.models import Contact, ContactScore

    low, high, mql = (ContactFactory(email=f"{n}@example.com") for n in ("low", "high", "mql"))
    for c, score in ((low, 5), (high, 60), (mql, 90)):
        ContactScore.objects.filter(contact=c).update(score=score)
    Contact.objects.filter(pk=mql.pk).update(stage="mql")
    marketing_api.post(
        f"/api/v1/segments/{berlin.pk}/members/",
        {"contact_ids": [low.pk, high.pk, mql.pk]},
        format="json",
    )
    url = f"/api/v1/segments/{berlin.pk}/members/"

    def emails(query):
        response = marketing_api.get(url + query)
        assert response.status_code == 200, response.json()
        return [m["email"] for m in response.json()["results"]]

    assert emails("?score_min=50&sort=score") == ["mql@example.com", "high@example.com"]
    assert emails("?score_min=1&sort=-score") == [
        "low@example.com",
        "high@example.com",
        "mql@example.com",
    ]
    assert emails("?stage=mql") == ["mql@example.com"]
    assert emails("?q=low") == ["low@example.com"]
    response = marketing_api.get(url + "?score_min=lots")
    assert response.status_code == 400
    assert "score_min" in response.json()
