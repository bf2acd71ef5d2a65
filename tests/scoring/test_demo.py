"""The scoring demo seeder gives every contact a ledger-backed score — a year of dated
history, as live scoring would have written it — and leaves no lead over the threshold
that live scoring would have handed off."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone

from crm import demo as crm_demo
from crm.demo import SeedContext, ensure_demo_users
from crm.models import Contact, ContactScore, LifecycleTransition
from crm.models.choices import ActivityKind as K
from nurture import demo as nurture_demo
from reports.score_facts import month_first, month_scores_raw
from scoring import demo, services
from scoring.models import AssignmentRule, LedgerEntry, Rule, ScoringSettings
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db
R = LedgerEntry.Reason


def test_the_seeder_creates_rules_settings_assignment_and_scores():
    users = ensure_demo_users()
    vp = ContactFactory(job_title="VP of Marketing")
    demo.seed(SeedContext(seed=1, contacts=1, users=users))
    assert Rule.objects.count() >= 20
    assert ScoringSettings.load().mql_threshold == 80
    assert AssignmentRule.objects.count() == 3
    vp.refresh_from_db()
    ledger = LedgerEntry.objects.filter(contact=vp).aggregate(s=Sum("points"))["s"]
    assert vp.scorecard.score == ledger == 15  # "Senior title: VP"; created now, so not inactive
    assert Contact.objects.get(pk=vp.pk).stage == "lead"


def test_a_seeded_lead_over_the_threshold_is_an_mql_dated_at_its_crossing():
    users = ensure_demo_users()
    now = timezone.now()
    hot = ContactFactory(job_title="VP Sales", created_at=now - timedelta(days=60))
    first = ActivityFactory(
        contact=hot, kind=K.DEMO_REQUESTED, occurred_at=now - timedelta(days=30)
    )
    ActivityFactory(
        contact=hot,
        kind=K.FORM_SUBMITTED,
        details={"form": "trial-signup"},
        occurred_at=now - timedelta(days=20),
    )  # 15 + 30 + 25 = 70: not yet
    over = ActivityFactory(contact=hot, kind=K.DEMO_REQUESTED, occurred_at=now - timedelta(days=9))
    demo.seed(SeedContext(seed=1, contacts=1, users=users))
    hot.refresh_from_db()
    assert (hot.stage, hot.scorecard.score) == ("mql", 100)
    assert hot.owner_id is not None
    mql = LifecycleTransition.objects.get(contact=hot, to_stage="mql")
    assert (mql.at, mql.activity_id) == (over.occurred_at, over.pk)
    assert first.pk != over.pk


NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


@pytest.fixture(scope="class")
def seeded(django_db_setup, django_db_blocker):
    """The CRM, nurture and scoring demo seeders on one database, rolled back afterwards;
    yields the context and the id of the last stage change before scoring's seeder."""
    with django_db_blocker.unblock(), transaction.atomic():
        ctx = SeedContext(seed=3, contacts=150, users=ensure_demo_users(), now=NOW)
        crm_demo.seed(ctx)
        nurture_demo.seed(ctx)
        before = LifecycleTransition.objects.aggregate(m=Max("pk"))["m"]
        demo.seed(ctx)
        yield ctx, before
        transaction.set_rollback(True)


@pytest.mark.django_db
class TestTheSeededScoreHistory:
    """METRICS.md "Scores over time": the demo's ledger is a year of history, not one
    rescore at the seeding minute."""

    def test_points_are_dated_at_their_activities_over_the_year(self, seeded):
        ctx, _ = seeded
        entries = LedgerEntry.objects.all()
        assert entries.filter(at__lt=ctx.now - timedelta(days=180)).exists()
        reasons = set(entries.values_list("reason", flat=True))
        assert {R.ACTIVITY, R.FIT, R.EXPIRY, R.DECAY, R.RECYCLE_RESET} <= reasons
        assert R.RESCORE not in reasons  # the rescore after the replay had nothing to add
        dated = entries.filter(reason=R.ACTIVITY).values_list("at", "activity__occurred_at")
        assert all(at == occurred for at, occurred in dated)

    def test_a_rescore_after_seeding_changes_nothing(self, seeded):
        ctx, _ = seeded
        run = services.scores_rescore_all(hand_off=False, now=ctx.now)
        assert (run.entries_created, run.contacts_changed) == (0, 0)
        ledger = dict(
            LedgerEntry.objects.values_list("contact").annotate(s=Sum("points")).order_by()
        )
        scores = dict(ContactScore.objects.values_list("contact_id", "score"))
        assert scores == {pk: ledger.get(pk, 0) for pk in scores}

    def test_past_month_end_scores_of_new_leads_are_not_all_zero(self, seeded):
        ctx, _ = seeded
        month = month_first((ctx.now - timedelta(days=120)).date())
        scores = [score for _, score in month_scores_raw(month).values()]
        assert scores
        assert sum(1 for s in scores if s) > len(scores) / 2

    def test_the_seeders_hand_offs_are_over_the_threshold_by_the_ledger_at_their_time(self, seeded):
        _, before = seeded
        handed = LifecycleTransition.objects.filter(pk__gt=before, to_stage="mql")
        assert handed.exists()
        for t in handed:
            score = LedgerEntry.objects.filter(contact_id=t.contact_id, at__lte=t.at)
            assert score.aggregate(s=Sum("points"))["s"] >= 80, t.contact_id
            gained = LedgerEntry.objects.filter(contact_id=t.contact_id, at=t.at, points__gt=0)
            assert gained.exists()  # a gain took it there, as live

    def test_most_scripted_hand_offs_come_when_the_ledger_got_to_the_threshold(self, seeded):
        """The CRM demo's MQLs ("score threshold") end a burst of buying intent that the
        rules replay over the threshold; only low-fit leads fall short of it."""
        mqls = LifecycleTransition.objects.filter(to_stage="mql")
        over = [
            (
                LedgerEntry.objects.filter(contact_id=t.contact_id, at__lte=t.at).aggregate(
                    s=Sum("points")
                )["s"]
                or 0
            )
            >= 80
            for t in mqls
        ]
        assert sum(over) > 0.7 * len(over)  # ~80 %; ~30 % with a burst of blog visits


def test_without_history_one_rescore_dates_the_ledger_at_the_end():
    users = ensure_demo_users()
    lead = ContactFactory(job_title="VP Sales", created_at=NOW - timedelta(days=90))
    ActivityFactory(contact=lead, kind=K.DEMO_REQUESTED, occurred_at=NOW - timedelta(days=30))
    demo.seed(SeedContext(seed=1, contacts=1, users=users, now=NOW, history=False))
    assert set(LedgerEntry.objects.values_list("at", "reason")) == {(NOW, R.RESCORE)}
    assert ContactScore.objects.get(contact=lead).score == 45
