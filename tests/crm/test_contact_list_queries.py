"""The contact list's index-friendly reads return exactly what the plain ORM reads return."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from django.http import QueryDict
from django.urls import reverse

from crm.filters import CONTACT_ORDERINGS, ContactFilter, day_start
from crm.models import Contact, EmailStatus, Stage
from crm.queries_contacts import page_slice
from crm.views.contacts import ROW_FIELDS, contact_queryset
from tests.factories import CompanyFactory, ContactFactory, score_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def contacts(sales_user):
    """Ties on every sort key (names, scores, stages, times) so the tiebreakers matter."""
    rng = random.Random(7)
    companies = [CompanyFactory(name=n) for n in ("Acme", "Bolt", "Kowal")]
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    rows, scores = [], []
    for i in range(90):
        scores.append(rng.choice([0, 10, 50, 90]))
        rows.append(
            ContactFactory.build(
                email=f"c{i}@example.com",
                first_name=rng.choice(["Ann", "Bob", ""]),
                last_name=rng.choice(["Kowalski", "Lee", "", "lee"]),
                stage=rng.choice([Stage.LEAD, Stage.MQL, Stage.SQL]),
                owner=rng.choice([None, sales_user]),
                company=rng.choice([None, *companies]),
                email_status=rng.choice([EmailStatus.ACTIVE, EmailStatus.UNSUBSCRIBED]),
                created_at=start + timedelta(hours=rng.randrange(0, 24 * 6)),
            )
        )
    created = Contact.objects.bulk_create(rows)
    for contact, score in zip(created, scores, strict=True):
        score_set(contact, score)
    return created


FILTERS = [
    "",
    "stage=mql",
    "stage=lead&stage=sql&score_min=10",
    "unassigned=true",
    "email_status=unsubscribed",
    "q=kow",
    "q=Ann Lee",
    "created_after=2026-03-02&created_before=2026-03-05",
]


@pytest.mark.parametrize("query", FILTERS)
@pytest.mark.parametrize("sort", [None, *CONTACT_ORDERINGS])
def test_a_page_slice_has_the_rows_of_a_plain_offset_in_the_same_order(contacts, query, sort):
    data = QueryDict(query + (f"&sort={sort}" if sort else ""))
    qs = ContactFilter(data, queryset=contact_queryset()).qs
    for offset, limit in [(0, 11), (10, 11), (37, 11), (85, 11), (200, 5)]:
        plain = list(qs.values(*ROW_FIELDS)[offset : offset + limit])
        assert list(page_slice(qs.values(*ROW_FIELDS), offset, limit)) == plain
        assert list(page_slice(qs, offset, limit)) == list(qs[offset : offset + limit])


def test_a_page_slice_of_model_rows_keeps_their_joined_company_and_owner(
    contacts, django_assert_num_queries
):
    with django_assert_num_queries(1):
        rows = list(page_slice(contact_queryset(), 5, 20))
        _ = [(c.company and c.company.name, c.owner and c.owner.username) for c in rows]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_created_date_filters_match_the_date_lookups_in_the_site_time_zone(
    contacts, settings, zone
):
    settings.TIME_ZONE = zone
    for after, before in [("2026-03-02", "2026-03-05"), ("2026-03-01", "2026-03-02")]:
        data = QueryDict(f"created_after={after}&created_before={before}")
        got = set(ContactFilter(data, queryset=Contact.objects.all()).qs.values_list("pk"))
        expected = set(
            Contact.objects.filter(
                created_at__date__gte=date.fromisoformat(after),
                created_at__date__lt=date.fromisoformat(before),
            ).values_list("pk")
        )
        assert got == expected


@pytest.mark.parametrize(
    ("zone", "day", "expected_utc"),
    [
        ("Europe/Paris", date(2026, 3, 29), datetime(2026, 3, 28, 23, 0, tzinfo=UTC)),  # DST day
        ("America/Sao_Paulo", date(2018, 11, 4), datetime(2018, 11, 4, 3, 0, tzinfo=UTC)),  # gap
        # 01:00 -> 00:00: the first of the two midnights
        ("America/Havana", date(2026, 11, 1), datetime(2026, 11, 1, 4, 0, tzinfo=UTC)),
        # 00:00 -> 23:00 the day before: midnight comes once, an hour later
        ("America/Asuncion", date(2024, 3, 24), datetime(2024, 3, 24, 4, 0, tzinfo=UTC)),
        ("UTC", date(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_day_starts_at_its_first_local_instant(settings, zone, day, expected_utc):
    settings.TIME_ZONE = zone
    start = day_start(day)
    assert start.astimezone(UTC) == expected_utc
    assert (start - timedelta(microseconds=1)).astimezone(start.tzinfo).date() < day


def test_several_stages_list_each_contact_once(marketing_client, contacts):
    r = marketing_client.get(reverse("crm:contact-list"), {"stage": ["lead", "mql", "sql"]})
    ids = [row["pk"] for row in r.context["page"].object_list]
    assert len(ids) == len(set(ids)) == 50


@pytest.mark.parametrize(
    ("query", "queries"),
    [
        ({"stage": "mql", "score_min": "10", "sort": "score", "page": 2}, 9),
        ({"sort": "name", "page": 2}, 9),
        ({"created_after": "2026-03-02", "sort": "-created"}, 9),
        ({"owner": "OWNER", "stage": "sql", "sort": "score"}, 10),  # + the chosen owner
    ],
)
def test_filtered_sorted_pages_pin_their_queries(
    marketing_client, contacts, sales_user, django_assert_num_queries, query, queries
):
    query = {k: sales_user.pk if v == "OWNER" else v for k, v in query.items()}
    marketing_client.get(reverse("crm:contact-list"))  # warm the session
    # session, user, roles, page rows, owner and campaign choices, static segments,
    # bulk-action owner choices, the top bar's unread-notices count (+ the owner filter's
    # look-up)
    with django_assert_num_queries(queries):
        r = marketing_client.get(reverse("crm:contact-list"), query)
    assert r.status_code == 200


def test_filtered_sorted_api_pages_are_one_query(
    marketing_api, contacts, django_assert_num_queries
):
    marketing_api.get("/api/v1/contacts/")
    for query in (
        {"sort": "name", "offset": 50},
        {"stage": "mql", "sort": "score", "offset": 10, "limit": 5},
        {"created_after": "2026-03-02", "created_before": "2026-03-05", "sort": "-created"},
    ):
        with django_assert_num_queries(1):
            r = marketing_api.get("/api/v1/contacts/", query)
        assert r.status_code == 200


@pytest.mark.parametrize("term", ["kow", "KOWAL", "acme", "Ann Lee", "lee", "zzz", "Bo"])
def test_search_finds_what_the_company_join_found(contacts, term):
    from django.db.models import Q

    got = set(ContactFilter(QueryDict(f"q={term}"), queryset=Contact.objects.all()).qs)
    condition = (
        Q(email__startswith=term.lower())
        | Q(last_name__istartswith=term)
        | Q(first_name__istartswith=term)
        | Q(company__name__istartswith=term)
    )
    parts = term.split()
    if len(parts) == 2:
        condition |= Q(first_name__istartswith=parts[0], last_name__istartswith=parts[1])
    assert got == set(Contact.objects.filter(condition))


def test_search_ignores_the_case_of_the_term_in_every_branch(db):
    """Names, company names and emails match a term in any case (on PostgreSQL through
    the UPPER(...) prefix indexes and the ARRAY form of the company branch)."""
    acme = CompanyFactory(name="ACME Widgets")
    mc = ContactFactory(first_name="Dana", last_name="McDonald", email="dana@example.com")
    worker = ContactFactory(first_name="Éva", last_name="Zed", email="eva@x.example", company=acme)
    mail = ContactFactory(first_name="", last_name="", email="mcdermott@example.org")
    both = ContactFactory(first_name="dana", last_name="mcdowell", email="dm@example.net")
    ContactFactory(first_name="Other", last_name="Person", email="op@example.com", company=None)

    def found(term):
        return set(ContactFilter(QueryDict(f"q={term}"), queryset=Contact.objects.all()).qs)

    for terms, expected in (
        (["mcd", "MCD", "Mcd", "mCd"], {mc, mail, both}),
        (["acme", "ACME", "Acme w"], {worker}),
        (["dana mcd", "DANA MCD", "Dana Mc"], {mc, both}),
        (["DANA@EXAMPLE", "Dana@Example.com"], {mc}),
        (["zqx", "ZQX"], set()),
    ):
        results = [found(term) for term in terms]
        assert all(result == expected for result in results), (terms, results)


def test_every_branch_of_the_search_is_an_index_scan_on_postgresql(contacts):
    """Migration 0009's prefix indexes serve the search: no branch reads every contact."""
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("the UPPER(...) text_pattern_ops indexes exist on PostgreSQL only")
    qs = ContactFilter(QueryDict("q=Ann Lee"), queryset=Contact.objects.all()).qs
    sql, params = qs.values("id").query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        # A few dozen rows: make the planner show whether an index could serve each branch.
        cursor.execute("SET LOCAL enable_seqscan = off")
        # …and no plain index scan either: on so few rows walking contact_created in order
        # and filtering is as cheap, which says nothing about the branches' indexes.
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
    assert "BitmapOr" in plan, plan
    for index in ("contact_last_name_prefix", "contact_first_name_prefix", "company_name_prefix"):
        assert index in plan, plan
