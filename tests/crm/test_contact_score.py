"""crm.ContactScore: every contact has its score row, and the row's copies of the
contact's stage and owner follow every write — the database triggers of migration 0016,
on whichever database the suite runs."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from crm import lifecycle, services
from crm.models import Contact, ContactScore, Stage
from tests.factories import ContactFactory, UserFactory, score_set

pytestmark = pytest.mark.django_db


def row(contact) -> tuple:
    return ContactScore.objects.values_list("score", "stage", "owner_id").get(contact=contact)


def test_every_way_of_creating_a_contact_creates_its_score_row():
    owner = UserFactory(role="sales")
    one = Contact.objects.create(email="one@example.com", created_at="2026-01-01T00:00Z")
    made = services.contact_create(email="two@example.com", stage=Stage.MQL, owner=owner)
    bulk = Contact.objects.bulk_create(
        [
            ContactFactory.build(email=f"b{i}@example.com", stage=Stage.SQL, owner=owner)
            for i in range(3)
        ]
    )
    assert row(one) == (0, Stage.LEAD, None)
    assert row(made) == (0, Stage.MQL, owner.pk)
    assert {row(c) for c in bulk} == {(0, Stage.SQL, owner.pk)}
    assert ContactScore.objects.count() == Contact.objects.count() == 5


def test_stage_and_owner_changes_are_copied_whatever_writes_them():
    rep, other = UserFactory(role="sales"), UserFactory(role="sales")
    c = ContactFactory(score=12)
    lifecycle.stage_change(contact=c, to_stage=Stage.MQL, by_system="test")
    assert row(c) == (12, Stage.MQL, None)
    services.contacts_assign_owner(contact_ids=[c.pk], owner=rep, by=rep)
    assert row(c) == (12, Stage.MQL, rep.pk)
    Contact.objects.filter(pk=c.pk).update(owner=other, stage=Stage.SQL)  # a bulk update
    assert row(c) == (12, Stage.SQL, other.pk)
    c.refresh_from_db()
    c.first_name = "Renamed"
    c.save()  # a save that writes stage and owner unchanged keeps the row as it is
    assert row(c) == (12, Stage.SQL, other.pk)


def test_creation_time_and_suppression_at_creation_are_copied_and_follow_edits():
    c = services.contact_create(email="u@example.com", email_status="unsubscribed")
    copied = ContactScore.objects.values_list("created_at", "created_suppressed")
    assert copied.get(contact=c) == (c.created_at, True)
    moved = c.created_at - timedelta(days=3)
    Contact.objects.filter(pk=c.pk).update(created_at=moved)  # e.g. the admin form
    assert copied.get(contact=c) == (moved, True)


def test_deleting_the_owner_or_the_contact_follows_through():
    rep = UserFactory(role="sales")
    c = ContactFactory(owner=rep, score=5)
    get_user_model().objects.filter(pk=rep.pk).delete()  # Contact.owner is SET_NULL
    assert row(c) == (5, Stage.LEAD, None)
    c.delete()
    assert not ContactScore.objects.filter(contact_id=c.pk).exists()


def test_score_set_changes_only_the_score():
    c = ContactFactory(stage=Stage.MQL)
    score_set(c, 70)
    c.refresh_from_db()
    assert (c.scorecard.score, c.stage) == (70, Stage.MQL)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="storage parameters are PostgreSQL's")
def test_the_big_tables_read_index_only_are_vacuumed_early():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
            [["crm_activity", "crm_contact", "crm_contactscore", "reports_transitionfact"]],
        )
        options = dict(cursor.fetchall())
    assert set(options) == {
        "crm_activity",
        "crm_contact",
        "crm_contactscore",
        "reports_transitionfact",
    }
    for table, opts in options.items():
        assert any(o.startswith("autovacuum_vacuum_scale_factor=0.0") for o in opts), table
        assert any(o.startswith("autovacuum_vacuum_insert_scale_factor=") for o in opts), table
