"""The history replay of the score ledger (scoring.replay): a stored history scored as live
scoring would have scored it, so the ledger's sum at a past moment is the score then."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum

from crm.models import ContactScore, LifecycleTransition
from crm.models.choices import ActivityKind as K
from scoring import replay, services
from scoring.models import LedgerEntry, Rule, ScoringSettings
from tests.factories import ActivityFactory, ContactFactory
from tests.scoring.factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.django_db

R = LedgerEntry.Reason
END = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def score_at(contact, moment) -> int:
    """METRICS.md "Scores over time": the sum of the entries up to that moment."""
    entries = LedgerEntry.objects.filter(contact=contact, at__lte=moment)
    return entries.aggregate(s=Sum("points"))["s"] or 0


def test_points_are_dated_at_their_activities_and_fit_at_the_creation():
    FitRuleFactory(value="VP", points=15)
    EngagementRuleFactory(activity_kind=K.DEMO_REQUESTED, points=30)
    created = END - 100 * DAY
    vp = ContactFactory(job_title="VP Sales", created_at=created)
    first = ActivityFactory(contact=vp, kind=K.DEMO_REQUESTED, occurred_at=END - 80 * DAY)
    second = ActivityFactory(contact=vp, kind=K.DEMO_REQUESTED, occurred_at=END - 20 * DAY)
    replay.ledger_replay(end=END)
    assert score_at(vp, created - DAY) == 0
    assert score_at(vp, created) == 15
    assert score_at(vp, first.occurred_at) == 45
    assert score_at(vp, second.occurred_at - DAY) == 45
    assert score_at(vp, END) == 75
    gains = LedgerEntry.objects.filter(contact=vp, reason=R.ACTIVITY)
    assert sorted(gains.values_list("activity_id", "at")) == [
        (first.pk, first.occurred_at),
        (second.pk, second.occurred_at),
    ]


def test_expiry_and_inactivity_are_dated_in_the_week_they_happen():
    EngagementRuleFactory(activity_kind=K.PAGE_VISIT, points=10, expire_after_days=30)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=60, points=-10)
    lead = ContactFactory(created_at=END - 200 * DAY)
    visit = ActivityFactory(contact=lead, kind=K.PAGE_VISIT, occurred_at=END - 150 * DAY)
    replay.ledger_replay(end=END)
    expired = visit.occurred_at + 30 * DAY
    inactive = visit.occurred_at + 60 * DAY
    assert score_at(lead, visit.occurred_at) == 10
    assert score_at(lead, expired - DAY) == 10
    assert score_at(lead, expired + 7 * DAY) == 0  # taken back by that week's decay run
    assert score_at(lead, inactive - DAY) == 0
    assert score_at(lead, inactive + 7 * DAY) == -10
    expiry = LedgerEntry.objects.get(contact=lead, reason=R.EXPIRY)
    assert expired <= expiry.at < expired + 7 * DAY
    assert ContactScore.objects.get(contact=lead).score == -10


def test_an_unsubscribe_penalty_is_dated_at_the_status_change():
    NegativeRuleFactory(negative=Rule.Negative.UNSUBSCRIBED, points=-20)
    changed = END - 40 * DAY
    gone = ContactFactory(
        created_at=END - 90 * DAY, email_status="unsubscribed", email_status_changed_at=changed
    )
    replay.ledger_replay(end=END)
    assert (score_at(gone, changed - DAY), score_at(gone, changed)) == (0, -20)


def test_a_recycle_halves_what_the_rules_had_given_by_then():
    ScoringSettings.objects.update(recycle_policy="halve")
    EngagementRuleFactory(activity_kind=K.DEMO_REQUESTED, points=30, cap=3)
    lead = ContactFactory(created_at=END - 100 * DAY)
    ActivityFactory(contact=lead, kind=K.DEMO_REQUESTED, occurred_at=END - 60 * DAY)
    recycled_at = END - 50 * DAY
    # A demo request later in the same week: given after the recycle, so never halved.
    ActivityFactory(contact=lead, kind=K.DEMO_REQUESTED, occurred_at=recycled_at + DAY)
    LifecycleTransition.objects.create(
        contact=lead, from_stage="mql", to_stage="recycled", at=recycled_at
    )
    replay.ledger_replay(end=END)
    reset = LedgerEntry.objects.get(contact=lead, reason=R.RECYCLE_RESET)
    assert (reset.points, reset.at) == (-15, recycled_at)
    assert score_at(lead, recycled_at) == 15
    assert score_at(lead, END) == 45


def test_a_rescore_after_the_replay_finds_nothing_to_change():
    FitRuleFactory(value="Director", points=12)
    EngagementRuleFactory(
        activity_kind=K.PAGE_VISIT,
        url_contains="/pricing",
        points=10,
        frequency=Rule.Frequency.ONCE_PER_DAY,
        cap=5,
        half_life_days=30,
    )
    EngagementRuleFactory(activity_kind=K.EMAIL_CLICKED, points=3, cap=5, expire_after_days=45)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=60, points=-10)
    for i in range(6):
        contact = ContactFactory(job_title="Director", created_at=END - (300 - 40 * i) * DAY)
        for d in range(0, 250 - 40 * i, 9 + i):
            kind = K.PAGE_VISIT if d % 2 else K.EMAIL_CLICKED
            ActivityFactory(
                contact=contact,
                kind=kind,
                url="https://x.example/pricing" if kind == K.PAGE_VISIT else "",
                occurred_at=END - (290 - 40 * i - d) * DAY,
            )
    ActivityFactory(contact=contact, kind=K.EMAIL_CLICKED, occurred_at=END)  # at the very end
    stats = replay.ledger_replay(end=END)
    assert stats.entries > 0
    run = services.scores_rescore_all(hand_off=False, now=END)
    assert (run.entries_created, run.contacts_changed) == (0, 0)
    assert LedgerEntry.objects.filter(reason=R.RESCORE).count() == 0
