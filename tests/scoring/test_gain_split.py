"""A batch's points are dated at the activities that earned them (scoring.engine.gain_split,
scoring.batch_sql), so that the MQL hand-off is dated at the activity that pushed the
contact over even when a whole history arrives in one batch (a CSV import, a queue drain
of several batches)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import Activity, ContactScore, LifecycleTransition
from crm.models.choices import ActivityKind
from scoring import engine
from scoring.models import LedgerEntry, Rule, ScoringSettings
from tests.factories import ContactFactory

from .factories import EngagementRuleFactory, NegativeRuleFactory

K = ActivityKind
F = Rule.Frequency


def _activity(pk, at, kind=K.PAGE_VISIT, contact_id=1):
    return Activity(pk=pk, contact_id=contact_id, kind=kind, occurred_at=at)


def _rule(points=10, **fields):
    kind = Rule.Kind.ENGAGEMENT
    return Rule(pk=1, kind=kind, activity_kind=K.PAGE_VISIT, points=points, **fields)


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("gain", "units", "points", "expected"),
    [
        (10, 1, 10, [10]),  # one unit: the whole gain
        (35, 1, 10, [35]),
        (30, 3, 10, [10, 10, 10]),  # each unit its worth
        (20, 3, 10, [10, 10]),  # a cap reached: the last unit earns nothing
        (25, 3, 10, [10, 10, 5]),  # a half-life's fraction: the last unit gets the rest
        (45, 3, 10, [25, 10, 10]),  # more than the units' worth: the rest to the first
        (-12, 3, -5, [-5, -5, -2]),  # a negative rule's loss: the same, signs turned
        (-20, 3, -5, [-10, -5, -5]),
    ],
)
def test_a_gain_is_spread_over_its_units_in_time_order(gain, units, points, expected):
    activities = [_activity(i + 1, T0 + timedelta(days=i)) for i in range(units)]
    split = engine.gain_split(gain, activities, _rule(points))
    assert [share for _, share in split] == expected
    assert [a.pk for a, _ in split] == [a.pk for a in activities[: len(expected)]]
    assert sum(expected) == gain


def _units(batch, rule, zone="UTC"):
    with timezone.override(zone):
        found = engine.batch_matches(batch, [rule], T0 + timedelta(days=30))
    return [a.pk for a in found[(1, rule.pk)]]


def test_every_match_of_an_every_time_rule_is_a_unit():
    batch = [_activity(i, T0 + timedelta(hours=i)) for i in (3, 1, 2)]
    assert _units(batch, _rule(frequency=F.EVERY_TIME)) == [1, 2, 3]  # in time order


def test_a_once_ever_rule_has_one_unit():
    batch = [_activity(i, T0 + timedelta(days=i)) for i in (1, 2, 3)]
    assert _units(batch, _rule(frequency=F.ONCE_EVER)) == [1]


def test_a_once_per_day_rule_has_a_unit_per_local_day():
    # 23:30 and 00:30 UTC are two days in UTC, one (00:30 and 01:30) in Paris.
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    batch = [
        _activity(1, late),
        _activity(2, late + timedelta(hours=1)),
        _activity(3, late + timedelta(hours=2)),
    ]
    rule = _rule(frequency=F.ONCE_PER_DAY)
    assert _units(batch, rule, "UTC") == [1, 2]
    assert _units(batch, rule, "Europe/Paris") == [1]
    assert _units(batch, rule, "America/New_York") == [1]  # 18:30, 19:30, 20:30 on the 2nd


def test_a_once_per_week_rule_has_a_unit_per_week_from_monday():
    sunday, monday = T0 - timedelta(days=1), T0  # Sunday and Monday, 09:00 UTC
    batch = [
        _activity(1, sunday - timedelta(days=3)),
        _activity(2, sunday),
        _activity(3, monday),
        _activity(4, monday + timedelta(days=6)),
    ]
    assert _units(batch, _rule(frequency=F.ONCE_PER_WEEK)) == [1, 3]


def _history(contact, days, now):
    return [
        {
            "contact": contact.pk,
            "kind": K.PAGE_VISIT,
            "occurred_at": now - timedelta(days=d),
            "url": "https://acme.example/pricing",
        }
        for d in days
    ]


@pytest.mark.django_db
def test_a_history_in_one_batch_is_dated_visit_by_visit_and_the_mql_at_the_crossing():
    """Five visits of 10 points over five days, threshold 30: the third visit makes the
    MQL — on both databases (SQLite: the portable path; PostgreSQL: batch_sql)."""
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    rule = EngagementRuleFactory(points=10, frequency=F.ONCE_PER_DAY)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    activities_record(items=_history(contact, [5, 4, 3, 2, 1], now))

    visits = list(Activity.objects.filter(contact=contact).order_by("occurred_at"))
    entries = list(
        LedgerEntry.objects.filter(contact=contact, rule=rule)
        .order_by("at")
        .values_list("activity_id", "points", "at", "reason")
    )
    assert entries == [(v.pk, 10, v.occurred_at, "activity") for v in visits]
    contact.refresh_from_db()
    assert contact.stage == "mql"
    assert contact.scorecard.score == 50
    mql = LifecycleTransition.objects.get(contact=contact, to_stage="mql")
    assert (mql.at, mql.activity_id) == (visits[2].occurred_at, visits[2].pk)


@pytest.mark.django_db
def test_a_cap_leaves_the_later_visits_of_a_batch_nothing():
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    rule = EngagementRuleFactory(points=10, cap=2)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    activities_record(items=_history(contact, [4, 3, 2, 1], now))

    first_two = list(Activity.objects.filter(contact=contact).order_by("occurred_at")[:2])
    assert list(
        LedgerEntry.objects.filter(contact=contact, rule=rule)
        .order_by("at")
        .values_list("activity_id", "points")
    ) == [(first_two[0].pk, 10), (first_two[1].pk, 10)]


@pytest.mark.django_db
def test_a_visit_on_a_day_counted_by_an_earlier_batch_takes_that_days_points_early():
    """Two batches: the second's first visit falls on a day the first already counted.
    The gain (one new day) is exact; its split dates it at that first visit rather than
    at the next day's — the early side of the truth (engine._batch_matches)."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    rule = EngagementRuleFactory(points=10, frequency=F.ONCE_PER_DAY)
    # Noon: the second batch's visit an hour later is on the same day in any hour.
    now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    activities_record(items=_history(contact, [3], now))
    second = _history(contact, [3, 2], now)
    second[0]["occurred_at"] += timedelta(hours=1)
    activities_record(items=second)

    visits = list(Activity.objects.filter(contact=contact).order_by("occurred_at"))
    assert ContactScore.objects.get(pk=contact.pk).score == 20
    assert list(
        LedgerEntry.objects.filter(contact=contact, rule=rule)
        .order_by("at")
        .values_list("activity_id", "points")
    ) == [(visits[0].pk, 10), (visits[1].pk, 10)]


def test_a_capped_rule_has_no_more_units_than_its_cap():
    batch = [_activity(i, T0 + timedelta(days=i)) for i in range(1, 6)]
    assert _units(batch, _rule(frequency=F.EVERY_TIME, cap=2)) == [1, 2]
    assert _units(batch, _rule(frequency=F.ONCE_PER_DAY, cap=3)) == [1, 2, 3]


def test_an_inactivity_rules_unit_is_the_first_engagement_inside_its_window():
    rule = Rule(pk=2, kind=Rule.Kind.NEGATIVE, negative=Rule.Negative.INACTIVE, inactive_days=20)
    now = T0 + timedelta(days=100)
    batch = [_activity(i, now - timedelta(days=d)) for i, d in ((1, 90), (2, 10), (3, 5))]
    assert [a.pk for a in engine.batch_matches(batch, [rule], now)[(1, 2)]] == [2]
    old = batch[:1]  # none inside: the first engagement still names the pair
    assert [a.pk for a in engine.batch_matches(old, [rule], now)[(1, 2)]] == [1]


@pytest.mark.django_db
def test_a_penalty_taken_back_is_one_entry_at_the_engagement_that_ended_it():
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    rule = NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    LedgerEntry.objects.create(contact=contact, rule=rule, points=-5, at=now, reason="decay")
    # An old visit (before the 20-day window: it ends nothing) and two recent ones.
    activities_record(items=_history(contact, [45, 3, 1], now))

    ended = Activity.objects.filter(contact=contact).order_by("occurred_at")[1]
    assert list(
        LedgerEntry.objects.filter(contact=contact, rule=rule, points__gt=0).values_list(
            "activity_id", "points", "at"
        )
    ) == [(ended.pk, 5, ended.occurred_at)]


@pytest.mark.django_db
def test_a_drain_round_leaves_batches_still_queued_to_their_own_turn(queued_handlers):
    """Two queued batches of one contact, drained one per round: the first round's
    aggregate does not count the second batch's visits (its ``unapplied_ids``), or their
    points would be dated at the first batch's visits."""
    from crm.activity_queue import queue_drain

    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    rule = EngagementRuleFactory(points=10)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    activities_record(items=_history(contact, [4, 3], now))
    activities_record(items=_history(contact, [2, 1], now))
    assert queue_drain(size=2).batches == 2

    visits = Activity.objects.filter(contact=contact).order_by("occurred_at")
    assert list(
        LedgerEntry.objects.filter(contact=contact, rule=rule)
        .order_by("at")
        .values_list("activity_id", "points")
    ) == [(v.pk, 10) for v in visits]
    assert ContactScore.objects.get(pk=contact.pk).score == 40


@pytest.mark.django_db
def test_a_negative_engagement_rules_loss_is_dated_visit_by_visit():
    """ "Visited the careers page −10": each visit's loss is the visit's (reason activity),
    not the clock's."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    rule = EngagementRuleFactory(points=-10, url_contains="/careers")
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    items = _history(contact, [3, 2, 1], now)
    for item in items:
        item["url"] = "https://acme.example/careers"
    activities_record(items=items)

    visits = Activity.objects.filter(contact=contact).order_by("occurred_at")
    assert list(
        LedgerEntry.objects.filter(contact=contact, rule=rule)
        .order_by("at")
        .values_list("activity_id", "points", "at", "reason")
    ) == [(v.pk, -10, v.occurred_at, "activity") for v in visits]
    assert ContactScore.objects.get(pk=contact.pk).score == -30


@pytest.mark.parametrize(
    ("points", "delta", "caused"),
    [(10, 5, True), (10, -5, False), (-10, -5, True), (-10, 5, False), (0, 5, False)],
)
def test_a_change_toward_an_engagement_rules_sign_is_the_batchs_doing(points, delta, caused):
    assert engine.activity_caused(_rule(points), delta) is caused
    inactive = Rule(kind=Rule.Kind.NEGATIVE, negative=Rule.Negative.INACTIVE, points=-5)
    assert engine.activity_caused(inactive, 5)
    assert not engine.activity_caused(inactive, -5)


@pytest.mark.django_db
def test_the_mql_is_dated_at_the_last_rise_to_the_threshold():
    """40 points, threshold 50, then in one batch: pricing +15 (55), careers −10 (45),
    pricing +15 (60). The lead qualified at the second pricing visit, not the first."""
    ScoringSettings.objects.create(pk=1, mql_threshold=50)
    EngagementRuleFactory(points=15, url_contains="/pricing")
    EngagementRuleFactory(points=-10, url_contains="/careers")
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    LedgerEntry.objects.create(
        contact=contact, points=40, at=now - timedelta(days=30), reason="rescore"
    )
    engine.scores_refresh(contact_ids=[contact.pk])
    items = _history(contact, [3, 2, 1], now)
    items[1]["url"] = "https://acme.example/careers"
    activities_record(items=items)

    last = Activity.objects.filter(contact=contact).order_by("occurred_at").last()
    mql = LifecycleTransition.objects.get(contact=contact, to_stage="mql")
    assert (mql.at, mql.activity_id) == (last.occurred_at, last.pk)
    assert ContactScore.objects.get(pk=contact.pk).score == 60


@pytest.mark.django_db
def test_a_late_back_dated_visit_does_not_date_the_mql_before_the_ledger_reached_it():
    """Visits of day −5 and −3 (+10 each, threshold 30), then a delayed webhook brings
    one of day −10. The ledger says the score was 10 on day −10 and first reached 30 on
    day −3: the MQL is dated at the day −3 visit, not at the late one."""
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    EngagementRuleFactory(points=10)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    for items in (_history(contact, [5], now), _history(contact, [3], now)):
        activities_record(items=items)
    assert not LifecycleTransition.objects.filter(contact=contact, to_stage="mql").exists()
    activities_record(items=_history(contact, [10], now))

    day_3 = Activity.objects.get(contact=contact, occurred_at=now - timedelta(days=3))
    mql = LifecycleTransition.objects.get(contact=contact, to_stage="mql")
    assert (mql.at, mql.activity_id) == (day_3.occurred_at, day_3.pk)
    at_mql = LedgerEntry.objects.filter(contact=contact, at__lte=mql.at)
    assert sum(at_mql.values_list("points", flat=True)) == 30


@pytest.mark.django_db
def test_decay_leaves_queued_activities_to_their_own_turn(queued_handlers):
    """The hourly decay counts what incremental scoring counts: a batch still queued is
    scored, dated at its visit, when it is drained — not by the decay as a clock entry."""
    from crm.activity_queue import queue_drain
    from scoring import services

    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    rule = EngagementRuleFactory(points=10, expire_after_days=30)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=60))
    activities_record(items=_history(contact, [2], now))
    services.decay_run(now=now)
    assert not LedgerEntry.objects.filter(contact=contact, rule=rule).exists()
    queue_drain()

    visit = Activity.objects.get(contact=contact)
    assert list(
        LedgerEntry.objects.filter(contact=contact, rule=rule).values_list(
            "activity_id", "points", "at", "reason"
        )
    ) == [(visit.pk, 10, visit.occurred_at, "activity")]
