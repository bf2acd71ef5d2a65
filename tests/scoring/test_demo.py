"""The scoring demo seeder gives every contact a ledger-backed score."""

import pytest
from django.db.models import Sum

from crm.demo import SeedContext, ensure_demo_users
from crm.models import Contact
from scoring import demo
from scoring.models import AssignmentRule, LedgerEntry, Rule, ScoringSettings
from tests.factories import ContactFactory

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
    assert vp.score == ledger == 15  # "Senior title: VP"; created now, so not inactive
    assert Contact.objects.get(pk=vp.pk).stage == "lead"
