"""Incremental scoring after any sequence of batches (and, with a moving clock, of decay
runs and recycles) equals a full rescore."""

from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.ingest import activities_record
from crm.lifecycle import stage_change
from crm.models import Contact, Stage
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


# --- a moving clock: batches with back-dated activities, hourly decay runs, recycles ----

step = st.one_of(
    st.tuples(
        st.just("batch"),
        st.lists(  # (contact, kind, hours before the clock, url)
            st.tuples(st.integers(0, 2), st.sampled_from(KINDS[:3] + [K.FORM_SUBMITTED]),
                      st.integers(0, 24 * 60), st.sampled_from(URLS[:3])),
            min_size=1,
            max_size=6,
        ),
    ),
    st.tuples(st.just("tick"), st.integers(1, 24 * 20)),  # hours: the clock moves, decay runs
    st.tuples(st.just("recycle"), st.integers(0, 2)),  # to mql and back: the recycle policy
)  # fmt: skip


def _clock_rules(start):
    """Rules whose worth the clock changes: expiry, half-life, inactivity, and rules
    coming into force (active-from dates the clock passes)."""
    EngagementRuleFactory(
        points=10, url_contains="/pricing", frequency=Rule.Frequency.ONCE_PER_DAY, cap=4
    )
    EngagementRuleFactory(points=-10, url_contains="/blog")
    EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED, cap=3, expire_after_days=7)
    EngagementRuleFactory(
        points=15,
        activity_kind=K.WEBINAR_ATTENDED,
        frequency=Rule.Frequency.ONCE_PER_WEEK,
        half_life_days=5,
    )
    EngagementRuleFactory(
        points=25,
        activity_kind=K.FORM_SUBMITTED,
        frequency=Rule.Frequency.ONCE_EVER,
        expire_after_days=10,
    )
    EngagementRuleFactory(points=7, half_life_days=3, active_from=start + timedelta(days=4))
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=6, points=-5)
    NegativeRuleFactory(
        negative=Rule.Negative.INACTIVE,
        inactive_days=30,
        points=-4,
        active_from=start + timedelta(days=15),
    )
    FitRuleFactory(points=15)
    FitRuleFactory(points=6, value="Engineer", active_from=start + timedelta(days=2))


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=8), policy=st.sampled_from(["reset", "halve"]))
def test_incremental_scoring_under_a_moving_clock_equals_a_full_rescore(steps, policy):
    """Whatever batches, decay runs and recycles happened, as the clock moved, a rescore
    at the last run's time finds nothing to change, and the cached score is the ledger's."""
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(days=400)
    clock = [start]
    with (
        mock.patch("django.utils.timezone.now", side_effect=lambda: clock[0]),
        transaction.atomic(),
    ):
        ScoringSettings.objects.create(pk=1, mql_threshold=10_000, recycle_policy=policy)
        _clock_rules(start)
        contacts = [
            ContactFactory(job_title=title, created_at=start - timedelta(days=100))
            for title in ("VP Marketing", "Engineer", "")
        ]
        services.scores_rescore_all()  # the factory bypasses the fit handler: baseline
        for kind, arg in steps:
            if kind == "batch":
                activities_record(items=[
                    {"contact": contacts[i].pk, "kind": k,
                     "occurred_at": clock[0] - timedelta(hours=h), "url": u}
                    for i, k, h, u in arg
                ])  # fmt: skip
            elif kind == "tick":
                clock[0] += timedelta(hours=arg)
                services.decay_run(now=clock[0])
            else:
                stage_change(contact=contacts[arg].pk, to_stage=Stage.MQL)
                stage_change(contact=contacts[arg].pk, to_stage=Stage.RECYCLED)
        services.decay_run(now=clock[0])
        incremental = dict(Contact.objects.values_list("pk", "scorecard__score"))
        for c in contacts:
            ledger = LedgerEntry.objects.filter(contact=c).values_list("points", flat=True)
            assert incremental[c.pk] == sum(ledger)
        run = services.scores_rescore_all()
        adjustments = list(
            LedgerEntry.objects.filter(reason="rescore").values_list(
                "contact_id", "rule_id", "points"
            )
        )
        assert run.entries_created == 0, adjustments
        assert dict(Contact.objects.values_list("pk", "scorecard__score")) == incremental
        transaction.set_rollback(True)
