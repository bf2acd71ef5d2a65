"""The engine's set-based writes and the hand-off's reads: what they write, how often."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test.utils import override_settings
from django.utils import timezone

from crm.models import Contact, LifecycleTransition, Notification, Stage
from scoring import handoff
from scoring.models import LedgerEntry, PendingOwnerEmail, RoundRobinCursor, ScoringSettings
from scoring.writes import (
    Entry,
    entries_append,
    int_array,
    scores_add,
    scores_set,
    time_array,
    word_array,
)
from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_array_literals_spell_ints_nulls_times_and_words():
    assert int_array([1, None, -3]) == "{1,NULL,-3}"
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert time_array([at]) == '{"2026-01-02T03:04:05.000006+00:00"}'
    assert word_array(["activity", "recycle_reset"]) == '{"activity","recycle_reset"}'
    with pytest.raises(ValueError):
        word_array(['x"}'])


def test_entries_are_appended_with_their_fields():
    c = ContactFactory()
    at = timezone.now() - timedelta(days=1)
    entries_append(
        [Entry(c.pk, None, None, 7, at, "rescore"), Entry(c.pk, None, None, -2, at, "fit")]
    )
    rows = sorted(LedgerEntry.objects.filter(contact=c).values_list("points", "at", "reason"))
    assert rows == [(-2, at, "fit"), (7, at, "rescore")]


def test_scores_are_set_and_added_and_unchanged_contacts_are_not_written(
    django_assert_num_queries,
):
    a, b = ContactFactory(score=5), ContactFactory(score=9)
    scores_set({a.pk: 20, b.pk: 30})
    scores_add({a.pk: 3, b.pk: 0})
    assert dict(Contact.objects.values_list("pk", "scorecard__score")) == {a.pk: 23, b.pk: 30}
    with django_assert_num_queries(0):
        scores_add({a.pk: 0})
        scores_set({})


@override_settings(STAGE_CHANGED_HANDLERS=["scoring.handlers.on_stage_changed"])
def test_the_hand_off_reads_the_contacts_once_for_the_move_owners_and_notices(
    django_assert_num_queries,
):
    ScoringSettings.objects.create(pk=1, mql_threshold=30, min_fit=0)
    seller = UserFactory(username="seller", role="sales")
    contacts = ContactFactory.create_batch(3, score=40)
    RoundRobinCursor.objects.create(pool="")  # a pool's first lead creates it (2 queries)
    at = timezone.now() - timedelta(minutes=5)
    entries = [Entry(c.pk, None, None, 10, at, "activity") for c in contacts]
    # Settings, candidates with their fit and the fields assignment and the notices read,
    # their ledgers (the crossings' dates), assignment rules, sales pool, cursor lock and
    # move (in a savepoint), lifecycle's bulk move (savepoint, lock, insert, ONE update of
    # stage and owner), notices, pending owner emails: whatever the number of contacts (no
    # second read or second write of the new MQLs).
    with django_assert_num_queries(16):
        new = handoff.mqls_hand_off(entries=entries, scores={c.pk: 40 for c in contacts})
    assert sorted(new) == sorted(c.pk for c in contacts)
    assert set(Contact.objects.values_list("stage", "owner_id")) == {(Stage.MQL, seller.pk)}
    assert LifecycleTransition.objects.filter(to_stage=Stage.MQL, by_system="scoring").count() == 3
    assert Notification.objects.filter(user=seller).count() == 3
    assert PendingOwnerEmail.objects.filter(owner=seller).count() == 3


def test_the_hand_off_skips_every_query_when_nobody_reaches_the_threshold(
    django_assert_num_queries,
):
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    c = ContactFactory(score=10)
    entry = Entry(c.pk, None, None, 5, timezone.now(), "activity")
    ScoringSettings.load()
    with django_assert_num_queries(1):  # the settings row
        assert handoff.mqls_hand_off(entries=[entry], scores={c.pk: 15}) == []


@override_settings(STAGE_CHANGED_HANDLERS=[])
def test_the_move_writes_new_owners_and_keeps_existing_ones_in_one_update():
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    seller = UserFactory(username="seller", role="sales")
    mine = UserFactory(username="mine", role="sales")
    owned = ContactFactory(score=40, owner=mine)
    unowned = ContactFactory(score=40)
    at = timezone.now() - timedelta(minutes=5)
    entries = [Entry(c.pk, None, None, 10, at, "activity") for c in (owned, unowned)]
    handoff.mqls_hand_off(entries=entries, scores={owned.pk: 40, unowned.pk: 40})
    assert dict(Contact.objects.values_list("pk", "owner_id")) == {
        owned.pk: mine.pk,
        unowned.pk: seller.pk,
    }
    assert set(Contact.objects.values_list("stage", flat=True)) == {Stage.MQL}


def test_a_rule_deleted_through_the_orm_leaves_its_entries_without_a_rule():
    """The ledger's rule reference has no database constraint (rules are switched off,
    never deleted: scoring.models.LedgerEntry.rule); should one be deleted through the
    ORM, Django's SET_NULL still keeps every entry and its points."""
    from .factories import EngagementRuleFactory

    c = ContactFactory()
    rule = EngagementRuleFactory(points=5)
    entries_append([Entry(c.pk, rule.pk, None, 5, timezone.now(), "activity")])
    rule.delete()
    entry = LedgerEntry.objects.get(contact=c)
    assert (entry.rule_id, entry.points) == (None, 5)
