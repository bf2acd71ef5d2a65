"""The CRM core's demo data (crm.demo.seed) and the bulk history import it relies on."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from crm import demo, lifecycle
from crm.models import (
    Activity,
    Campaign,
    CampaignCost,
    Company,
    Contact,
    Deal,
    EmailStatus,
    LifecycleTransition,
    RejectionReason,
    Reopening,
    Segment,
    SegmentChange,
    Source,
    Stage,
)
from crm.models.choices import ENGAGEMENT_KINDS
from tests.factories import ContactFactory

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
N = 300


def _seed(seed: int = 7) -> demo.SeedContext:
    ctx = demo.SeedContext(seed=seed, contacts=N, users=demo.ensure_demo_users(), now=NOW)
    demo.seed(ctx)
    return ctx


@pytest.fixture(scope="class")
def seeded(django_db_setup, django_db_blocker):
    """One seeded database shared by the read-only tests, rolled back afterwards."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield _seed()
        transaction.set_rollback(True)


def _content() -> dict:
    """What the demo made, by content rather than ids."""
    email = dict(Contact.objects.values_list("pk", "email"))
    return {
        "contacts": sorted(
            Contact.objects.values_list(
                "email", "first_name", "job_title", "stage", "recycle_round", "email_status",
                "created_at", "stage_changed_at", "acquired_by__name",
            )
        ),
        "companies": sorted(Company.objects.values_list("name", "domain", "industry")),
        "transitions": sorted(
            (email[c], f, t, at, r)
            for c, f, t, at, r in LifecycleTransition.objects.values_list(
                "contact", "from_stage", "to_stage", "at", "reason_code"
            )
        ),
        "activities": Counter(
            (email[c], k, at, camp)
            for c, k, at, camp in Activity.objects.values_list(
                "contact", "kind", "occurred_at", "campaign__name"
            )
        ),
        "deals": sorted(
            (email[c], str(a), s)
            for c, a, s in Deal.objects.values_list("contact", "amount", "status")
        ),
        "costs": sorted(
            (c, str(a), k)
            for c, a, k in CampaignCost.objects.values_list("campaign__name", "amount", "category")
        ),
        "reopenings": sorted(
            (email[c], r) for c, r in Reopening.objects.values_list("contact", "recycle_round")
        ),
    }  # fmt: skip


@pytest.mark.django_db
def test_it_is_deterministic_for_a_seed():
    _seed()
    first = _content()
    for model in (Contact, Company, CampaignCost, Campaign):
        model.objects.all().delete()
    _seed()
    assert _content() == first
    assert len(first["contacts"]) == N


@pytest.mark.django_db
def test_another_seed_gives_other_people():
    _seed(seed=1)
    emails = set(Contact.objects.values_list("email", flat=True))
    Contact.objects.all().delete()
    _seed(seed=2)
    assert emails != set(Contact.objects.values_list("email", flat=True))


@pytest.mark.django_db
class TestTheSeededDemo:
    """Read-only checks on one seeded database (seeding once keeps the suite fast)."""

    def test_it_fills_every_core_model_and_shares_what_later_seeders_need(self, seeded):
        ctx = seeded
        for model in (
            Company, Contact, Campaign, CampaignCost, Activity, LifecycleTransition, Reopening,
            Deal, RejectionReason, CampaignCost.shared_with.through,
        ):  # fmt: skip
            assert model.objects.exists(), model.__name__
        assert set(ctx.shared["campaigns"]) == {c[0] for c in demo.CAMPAIGNS}
        low, high = ctx.shared["contact_id_range"]
        assert Contact.objects.filter(pk__gte=low, pk__lte=high).count() == N
        assert Company.objects.count() == N // 8
        # Every month has costs in every category; shared entries are labour or technology.
        months = {(c.period_start.replace(day=1), c.category) for c in CampaignCost.objects.all()}
        assert Counter(cat for _, cat in months) == Counter({c: 13 for c in CampaignCost.Category})
        assert not CampaignCost.objects.filter(
            shared=True, category__in=["media", "content"]
        ).exists()

    def test_every_contacts_history_is_consistent_and_matches_its_stage(self, seeded):
        history: dict[int, list] = {}
        for t in LifecycleTransition.objects.order_by("at", "id"):
            history.setdefault(t.contact_id, []).append(t)
        for contact in Contact.objects.all():
            steps = history[contact.pk]
            assert (steps[0].from_stage, steps[0].to_stage) == ("", Stage.LEAD)
            assert steps[0].at == contact.created_at
            for before, after in zip(steps, steps[1:], strict=False):
                assert after.from_stage == before.to_stage
                assert lifecycle.can_move(before.to_stage, after.to_stage)
                assert after.at >= before.at
                assert after.at <= NOW
            assert contact.stage == steps[-1].to_stage
            assert contact.stage_changed_at == steps[-1].at
            assert contact.recycle_round == sum(s.to_stage == Stage.RECYCLED for s in steps)

    def test_every_path_of_the_funnel_appears(self, seeded):
        entered = set(LifecycleTransition.objects.values_list("to_stage", flat=True))
        assert entered == set(Stage.values)
        decided = Counter(
            LifecycleTransition.objects.filter(from_stage=Stage.MQL).values_list(
                "to_stage", flat=True
            )
        )
        assert decided[Stage.SQL] > decided[Stage.RECYCLED] > 0
        assert decided[Stage.DISQUALIFIED] > 0
        requalified = LifecycleTransition.objects.filter(
            from_stage=Stage.RECYCLED, to_stage=Stage.MQL
        )
        assert requalified.exists()
        assert Reopening.objects.exists()
        assert Deal.objects.filter(status="won", closed_at__isnull=False).exists()
        assert Deal.objects.filter(status="lost").exists()
        mqls = Contact.objects.filter(transitions__to_stage=Stage.MQL).distinct().count()
        assert 0.08 * N < mqls < 0.25 * N
        reasons = set(
            LifecycleTransition.objects.filter(from_stage=Stage.MQL).values_list(
                "reason_code", flat=True
            )
        )
        assert reasons <= set(RejectionReason.objects.values_list("code", flat=True)) | {"accepted"}

    def test_a_reopening_is_the_first_engagement_after_its_recycle(self, seeded):
        for reopening in Reopening.objects.select_related("activity"):
            recycled = LifecycleTransition.objects.get(
                contact=reopening.contact_id,
                to_stage=Stage.RECYCLED,
                recycle_round=reopening.recycle_round,
            )
            assert reopening.activity.occurred_at == reopening.at > recycled.at
            earlier = Activity.objects.filter(
                contact=reopening.contact_id,
                kind__in=ENGAGEMENT_KINDS,
                occurred_at__gte=recycled.at,
                occurred_at__lt=reopening.at,
            )
            assert not earlier.exists()

    def test_ingest_rules_are_applied_to_the_bulk_loaded_activities(self, seeded):
        unsubscribed = Contact.objects.filter(activities__kind="email_unsubscribed")
        assert unsubscribed.exists()
        assert set(unsubscribed.values_list("email_status", flat=True)) == {
            EmailStatus.UNSUBSCRIBED
        }
        bounced = Contact.objects.filter(activities__details__bounce_type="hard")
        assert set(bounced.values_list("email_status", flat=True)) == {EmailStatus.HARD_BOUNCED}
        paid = Contact.objects.filter(source=Source.PAID)
        assert paid.exists()
        assert not paid.filter(acquired_by__isnull=True).exists()
        assert not Contact.objects.filter(source=Source.IMPORT, acquired_by__isnull=False).exists()
        # The seeded activities are a plausible mix, about a dozen per contact before email.
        per_contact = Activity.objects.count() / N
        assert 6 < per_contact < 20
        assert Activity.objects.filter(kind="csat_answer", details__answer__gte=1).exists()


@pytest.mark.django_db
def test_if_empty_leaves_an_existing_database_alone():
    ContactFactory()
    before = (Contact.objects.count(), Activity.objects.count(), Campaign.objects.count())
    call_command("seed_demo", "--if-empty", "--contacts", "20", stdout=StringIO())
    assert (Contact.objects.count(), Activity.objects.count(), Campaign.objects.count()) == before


def test_the_history_is_replayed_up_to_a_size_unless_asked_otherwise():
    users: dict = {}
    assert demo.SeedContext(seed=1, contacts=demo.HISTORY_REPLAY_MAX, users=users).history
    assert not demo.SeedContext(seed=1, contacts=demo.HISTORY_REPLAY_MAX + 1, users=users).history
    assert not demo.SeedContext(seed=1, contacts=10, users=users, history=False).history


@pytest.mark.django_db
def test_no_history_dates_scores_and_segment_joins_at_the_seeding_moment():
    """``--no-history`` (the benchmarks' million): one rescore and one refresh, as before."""
    from scoring.models import LedgerEntry

    call_command("seed_demo", "--contacts", "40", "--no-history", stdout=StringIO())
    assert LedgerEntry.objects.values("at").distinct().count() == 1
    joins = SegmentChange.objects.filter(segment__kind=Segment.Kind.DYNAMIC)
    assert joins.exists()
    assert joins.values("at").distinct().count() == 1


@pytest.mark.django_db
def test_history_import_refuses_an_inconsistent_sequence_and_writes_nothing():
    good, bad = ContactFactory(), ContactFactory()
    at = NOW - timedelta(days=30)
    rows = [
        {"contact_id": good.pk, "to_stage": Stage.LEAD, "at": at},
        {"contact_id": good.pk, "to_stage": Stage.MQL, "at": at + timedelta(days=1)},
        {"contact_id": bad.pk, "to_stage": Stage.LEAD, "at": at},
        {"contact_id": bad.pk, "to_stage": Stage.CHURNED, "at": at + timedelta(days=1)},
    ]
    with pytest.raises(lifecycle.HistoryImportError) as error:
        lifecycle.history_import_bulk(rows=rows)
    assert list(error.value.errors) == [bad.pk]
    assert not LifecycleTransition.objects.filter(contact__in=[good, bad]).exists()


@pytest.mark.django_db
def test_history_import_sets_the_current_stage_and_round():
    contact = ContactFactory()
    at = NOW - timedelta(days=30)
    written = lifecycle.history_import_bulk(
        rows=[
            {"contact_id": contact.pk, "to_stage": Stage.LEAD, "at": at},
            {"contact_id": contact.pk, "to_stage": Stage.MQL, "at": at + timedelta(days=2)},
            {"contact_id": contact.pk, "to_stage": Stage.RECYCLED, "at": at + timedelta(days=3)},
        ]
    )
    contact.refresh_from_db()
    assert written == 3
    assert (contact.stage, contact.recycle_round) == (Stage.RECYCLED, 1)
    assert contact.stage_changed_at == at + timedelta(days=3)
    # A later import continues from the stored history.
    with pytest.raises(lifecycle.HistoryImportError):
        lifecycle.history_import_bulk(
            rows=[{"contact_id": contact.pk, "to_stage": Stage.SQL, "at": at + timedelta(days=1)}]
        )
