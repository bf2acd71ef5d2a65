"""Segment conditions can be served by indexes on PostgreSQL (migration crm.0014).

At a million contacts a behaviour condition must not probe every candidate contact's
timeline, and "title contains …" must not read every contact; these tests prove the indexes
exist and fit the SQL the compiler writes (plans on a few rows, with scans discouraged).
"""

import pytest
from django.db import connection, transaction

from crm.models import Contact
from crm.segments import compile_definition
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db

THREE_CONDITIONS = {
    "all": [
        {"field": "job_title", "op": "contains", "value": "Director"},
        {"did": "webinar_attended", "within_last_days": 90},
        {"did_not": "email_opened", "within_last_days": 60},
    ]
}


def plan_of(queryset, *statements: str) -> str:
    """EXPLAIN after ``statements`` (planner settings, a dropped index), all rolled back."""
    sql, params = queryset.query.sql_with_params()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            raise _RolledBack(plan)
    except _RolledBack as done:
        return done.plan


class _RolledBack(Exception):
    def __init__(self, plan: str):
        self.plan = plan


@pytest.fixture
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("pg_trgm and INCLUDE indexes exist on PostgreSQL only")


def test_the_compiled_preview_is_counted_right_on_every_database():
    director = ContactFactory(job_title="Sales Director")
    ActivityFactory(contact=director, kind="webinar_attended")
    opener = ContactFactory(job_title="director of IT")
    ActivityFactory(contact=opener, kind="webinar_attended")
    ActivityFactory(contact=opener, kind="email_opened")
    ActivityFactory(contact=ContactFactory(job_title="Engineer"), kind="webinar_attended")
    ContactFactory(job_title="Director")  # never attended

    members = Contact.objects.filter(compile_definition(THREE_CONDITIONS))
    assert list(members.values_list("pk", flat=True)) == [director.pk]


def test_contains_on_the_job_title_reads_the_trigram_index(postgresql_only):
    ContactFactory.create_batch(3, job_title="Director")
    qs = Contact.objects.filter(
        compile_definition({"all": [{"field": "job_title", "op": "contains", "value": "rect"}]})
    )
    # A GIN index answers through a bitmap scan: rule out the seq scan and walking another
    # index in order (on three rows either is as cheap and would say nothing).
    plan = plan_of(
        qs.order_by().values("id"),
        "SET LOCAL enable_seqscan = off",
        "SET LOCAL enable_indexscan = off",
    )
    assert "contact_job_title_trgm" in plan, plan


def test_behaviour_conditions_read_the_kind_and_time_index_that_carries_the_contact(
    postgresql_only,
):
    ActivityFactory.create_batch(3, kind="webinar_attended")
    qs = Contact.objects.filter(compile_definition(THREE_CONDITIONS))
    # Hash joins force the "whole period of that kind" shape the planner picks at scale. On
    # three rows the contact's timeline or the campaign index is as cheap a way to read them,
    # which says nothing about scale: they are dropped for this plan (rolled back).
    plan = plan_of(
        qs.order_by().values("id"),
        "SET LOCAL enable_seqscan = off",
        "SET LOCAL enable_nestloop = off",
        "SET LOCAL enable_mergejoin = off",
        "DROP INDEX activity_contact_time",
        "DROP INDEX activity_campaign_contact",
    )
    # Index-only or bitmap: on a just-written table (nothing all-visible yet) the planner
    # may prefer the bitmap; either way both conditions read the (kind, time) index…
    assert plan.count("activity_kind_time") == 2, plan
    # …which carries the contact, so on a vacuumed table no heap row is needed.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indnkeyatts, indnatts FROM pg_index WHERE indexrelid = %s::regclass",
            ["activity_kind_time"],
        )
        assert cursor.fetchone() == (2, 3)


@pytest.mark.parametrize("query", ["", "sort=score", "stage=mql&sort=score", "q=ann&sort=name"])
def test_the_member_list_reads_the_membership_through_its_index(postgresql_only, query):
    """The member page is the contact list narrowed by one semi-join: its page of ids reads
    the stored membership by index (a probe of the (segment, contact) key per contact of
    the sort order, or the segment's members first), never the whole membership table."""
    from django.http import QueryDict

    from crm.filters import ContactFilter
    from crm.queries_contacts import page_slice
    from crm.segments import segment_members_add, segment_save
    from crm.views.contacts import ROW_FIELDS, contact_queryset

    segment = segment_save(segment=None, name="List", kind="static", definition={})
    segment_members_add(segment=segment, contact_ids=[c.pk for c in ContactFactory.create_batch(3)])
    flt = ContactFilter(QueryDict(query), queryset=contact_queryset().in_segment(segment.pk))
    plan = plan_of(page_slice(flt.qs.values(*ROW_FIELDS), 50, 51), "SET LOCAL enable_seqscan = off")
    assert "Seq Scan" not in plan, plan
    assert "segment_member_unique" in plan or "crm_segmentmembership_segment_id" in plan, plan
