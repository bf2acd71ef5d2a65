"""The scoring demo seeder gives every contact a ledger-backed score, and leaves no lead
over the threshold that live scoring would have handed off."""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from crm.demo import SeedContext, ensure_demo_users
from crm.models import Contact, LifecycleTransition
from crm.models.choices import ActivityKind as K
from scoring import demo
from scoring.models import AssignmentRule, LedgerEntry, Rule, ScoringSettings
from tests.factories import ActivityFactory, ContactFactory

pytestmark = pytest.mark.django_db


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
