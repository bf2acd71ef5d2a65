"""Incremental scoring after any sequence of batches equals a full rescore."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.ingest import activities_record
from crm.models import Contact
from crm.models.choices import ActivityKind
from scoring import services
from scoring.models import LedgerEntry, Rule, ScoringSettings
from tests.factories import ContactFactory

from .factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

K = ActivityKind
KINDS = [K.PAGE_VISIT, K.EMAIL_CLICKED, K.WEBINAR_ATTENDED, K.EMAIL_UNSUBSCRIBED]
# The last: a click on the unsubscribe link, which is not a click (METRICS.md).
URLS = [
    "https://acme.example/pricing",
    "https://acme.example/blog",
    "",
    f"{django_settings.SITE_URL.upper()}/u/token",
]

activity = st.tuples(
    st.integers(0, 2),  # contact
    st.sampled_from(KINDS),
    st.integers(0, 24 * 80),  # hours ago
    st.sampled_from(URLS),
)
batches = st.lists(st.lists(activity, min_size=1, max_size=6), min_size=1, max_size=5)


def _rules():
    EngagementRuleFactory(points=10, url_contains="/pricing", frequency=Rule.Frequency.ONCE_PER_DAY)
    EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED, cap=3)
    EngagementRuleFactory(
        points=15,
        activity_kind=K.WEBINAR_ATTENDED,
        frequency=Rule.Frequency.ONCE_PER_WEEK,
        expire_after_days=30,
    )
    EngagementRuleFactory(points=8, activity_kind=K.PAGE_VISIT, half_life_days=10)
    EngagementRuleFactory(points=20, frequency=Rule.Frequency.ONCE_EVER)
    NegativeRuleFactory(points=-20)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5)
    FitRuleFactory(points=15)


@pytest.mark.django_db
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=batches)
def test_incremental_scoring_equals_a_full_rescore(batches):
    with transaction.atomic():
        ScoringSettings.objects.create(pk=1, mql_threshold=40)
        _rules()
        base = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
        contacts = [
            ContactFactory(job_title=title, created_at=base - timedelta(days=100))
            for title in ("VP Marketing", "Engineer", "")
        ]
        services.scores_rescore_all()  # the factory bypasses the fit handler: baseline
        for batch in batches:
            activities_record(
                items=[
                    {
                        "contact": contacts[i].pk,
                        "kind": kind,
                        "occurred_at": base - timedelta(hours=hours),
                        "url": url,
                    }
                    for i, kind, hours, url in batch
                ]
            )
        services.decay_run()
        incremental = dict(Contact.objects.values_list("pk", "scorecard__score"))
        ledger = {
            c.pk: sum(LedgerEntry.objects.filter(contact=c).values_list("points", flat=True))
            for c in contacts
        }
        assert incremental == ledger
        run = services.scores_rescore_all()
        assert run.entries_created == 0
        assert dict(Contact.objects.values_list("pk", "scorecard__score")) == incremental
        transaction.set_rollback(True)
