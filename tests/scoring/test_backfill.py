"""History loads: leads a rescore left over the threshold are handed off, each dated at the
activity that would have pushed it over live (scoring.backfill)."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm import lifecycle
from crm.models import Contact, LifecycleTransition, Notification, Stage
from crm.models.choices import ActivityKind
from scoring import backfill, engine, services
from scoring.models import Rule, ScoringSettings
from tests.factories import ActivityFactory, ContactFactory, UserFactory

from .factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.django_db
K = ActivityKind


def _visits(contact, *days_ago, now, **extra):
    return [
        ActivityFactory(contact=contact, occurred_at=now - timedelta(days=d), **extra)
        for d in days_ago
    ]


def test_a_lead_over_the_threshold_becomes_an_mql_at_the_activity_that_pushed_it_over():
    now = timezone.now()
    ScoringSettings.objects.create(pk=1, mql_threshold=30, recycle_policy="keep")
    seller = UserFactory(username="seller", role="sales")
    EngagementRuleFactory(points=10, expire_after_days=30)
    EngagementRuleFactory(points=10, activity_kind=K.EMAIL_CLICKED)
    lead = ContactFactory(created_at=now - timedelta(days=90))
    # Five visits, but the two oldest expired before the third: 10, 20, 10, 20, 30.
    visits = _visits(lead, 50, 45, 10, 5, 1, now=now)
    recycled = ContactFactory(created_at=now - timedelta(days=90))
    _visits(recycled, 40, 35, 30, now=now, kind=K.EMAIL_CLICKED)  # 30 points before the recycle …
    lifecycle.stage_change(contact=recycled, to_stage=Stage.MQL, at=now - timedelta(days=29))
    lifecycle.stage_change(contact=recycled, to_stage=Stage.RECYCLED, at=now - timedelta(days=20))
    later = _visits(
        recycled, 15, now=now, kind=K.EMAIL_CLICKED
    )  # … so the first visit after it hands it off
    services.scores_rescore_all(hand_off=False)
    assert Contact.objects.filter(
        stage__in=[Stage.LEAD, Stage.RECYCLED], scorecard__score__gte=30
    ).count()

    assert backfill.mqls_catch_up(now=now, notify=False) == 2

    mql = LifecycleTransition.objects.filter(to_stage=Stage.MQL, by_system="scoring")
    first = mql.get(contact=lead)
    assert (first.at, first.activity_id, first.from_stage) == (
        visits[-1].occurred_at,
        visits[-1].pk,
        Stage.LEAD,
    )
    again = mql.get(contact=recycled, from_stage=Stage.RECYCLED)
    assert (again.at, again.activity_id) == (later[0].occurred_at, later[0].pk)
    assert set(Contact.objects.values_list("stage", "owner_id")) == {(Stage.MQL, seller.pk)}
    assert not Notification.objects.exists()
    assert backfill.mqls_catch_up(now=now) == 0


def test_the_minimum_fit_holds_back_a_poor_fit_as_live_hand_off_does():
    now = timezone.now()
    ScoringSettings.objects.create(pk=1, mql_threshold=20, min_fit=0)
    FitRuleFactory(points=-10, value="Student")
    EngagementRuleFactory(points=20)
    poor = ContactFactory(job_title="Student", created_at=now - timedelta(days=9))
    _visits(poor, 2, now=now)
    services.scores_rescore_all(hand_off=False)
    assert backfill.mqls_catch_up(now=now) == 0
    poor.refresh_from_db()
    assert poor.stage == Stage.LEAD


def test_notices_go_out_when_asked(django_capture_on_commit_callbacks):
    now = timezone.now()
    ScoringSettings.objects.create(pk=1, mql_threshold=10)
    seller = UserFactory(username="seller", role="sales")
    EngagementRuleFactory(points=10)
    lead = ContactFactory(created_at=now - timedelta(days=9))
    _visits(lead, 2, now=now)
    services.scores_rescore_all(hand_off=False)
    with django_capture_on_commit_callbacks() as callbacks:
        assert backfill.mqls_catch_up(now=now) == 1
    assert Notification.objects.filter(user=seller).count() == 1
    assert len(callbacks) == 1  # one email task for the chunk


# --- settings changes: less strict settings hand off the leads they let through --------


def _lead_at(points, now, **fields):
    """A lead whose score is ``points`` (10 per visit; the factory bypasses the handlers)."""
    contact = ContactFactory(created_at=now - timedelta(days=60), **fields)
    _visits(contact, *range(1, points // 10 + 1), now=now)
    return contact


def test_lowering_the_threshold_hands_off_the_leads_it_qualifies_dated_at_the_change():
    """A lead at 60 waits under a threshold of 100; lowered to 50, it goes to sales at
    once, dated at the change (it may never gain another point). A recycled lead kept at
    120 by the recycle policy met the old threshold too: the change does not qualify it,
    it waits for a new gain as before."""
    now = timezone.now()
    ScoringSettings.objects.create(pk=1, mql_threshold=100, recycle_policy="keep")
    seller = UserFactory(username="seller", role="sales")
    EngagementRuleFactory(points=10)
    lead, below = _lead_at(60, now), _lead_at(40, now)
    kept = _lead_at(120, now)
    lifecycle.stage_change(contact=kept, to_stage=Stage.MQL, at=now - timedelta(hours=2))
    lifecycle.stage_change(contact=kept, to_stage=Stage.RECYCLED, at=now - timedelta(hours=1))
    services.scores_rescore_all(hand_off=False)

    before = timezone.now()
    services.settings_update(data={"mql_threshold": 50})
    mql = LifecycleTransition.objects.get(contact=lead)
    assert (mql.to_stage, mql.activity_id, mql.by_system) == (Stage.MQL, None, "scoring")
    assert before <= mql.at <= timezone.now()
    stages = dict(Contact.objects.values_list("pk", "stage"))
    assert stages == {lead.pk: Stage.MQL, below.pk: Stage.LEAD, kept.pk: Stage.RECYCLED}
    assert Contact.objects.get(pk=lead.pk).owner == seller
    services.settings_update(data={"mql_threshold": 40})
    assert Contact.objects.get(pk=below.pk).stage == Stage.MQL
    assert Contact.objects.get(pk=kept.pk).stage == Stage.RECYCLED


def test_lowering_the_minimum_fit_hands_off_the_leads_it_held_back():
    now = timezone.now()
    ScoringSettings.objects.create(pk=1, mql_threshold=20, min_fit=10)
    UserFactory(username="seller", role="sales")
    FitRuleFactory(points=5, value="VP")
    EngagementRuleFactory(points=10)
    vp, nobody = _lead_at(30, now, job_title="VP Sales"), _lead_at(30, now)
    services.scores_rescore_all(hand_off=False)
    services.settings_update(data={"min_fit": 5})
    assert set(Contact.objects.values_list("pk", "stage")) == {
        (vp.pk, Stage.MQL),
        (nobody.pk, Stage.LEAD),
    }
    services.settings_update(data={"min_fit": None})
    assert Contact.objects.get(pk=nobody.pk).stage == Stage.MQL


# --- the replay equals the engine evaluated at each moment ------------------------------

activity = st.tuples(
    st.sampled_from([K.PAGE_VISIT, K.EMAIL_CLICKED, K.WEBINAR_ATTENDED, K.EMAIL_SENT]),
    st.integers(0, 24 * 120),  # hours ago
    # the last: a click on the unsubscribe link, which is not a click (METRICS.md)
    st.sampled_from(["https://acme.example/pricing", "", f"{django_settings.SITE_URL}/u/token"]),
)


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
    EngagementRuleFactory(points=7, activity_kind=K.EMAIL_CLICKED, expire_after_days=20)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5)
    FitRuleFactory(points=15)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(acts=st.lists(activity, min_size=1, max_size=12), threshold=st.integers(5, 60))
def test_the_crossing_is_the_first_moment_the_engine_gives_the_threshold(acts, threshold):
    with transaction.atomic():
        now = timezone.now().replace(microsecond=0)
        _rules()
        contact = ContactFactory(job_title="VP Sales", created_at=now - timedelta(days=130))
        made = [
            ActivityFactory(
                contact=contact, kind=kind, url=url, occurred_at=now - timedelta(hours=h)
            )
            for kind, h, url in acts
        ]
        services.scores_rescore_all(hand_off=False)
        rules = engine.rules_enabled()
        found = backfill.crossings_find(
            contact_ids=[contact.pk], rules=rules, threshold=threshold, now=now
        )[contact.pk]

        def score_at(t):
            values = engine.expected_values(
                Q(pk=contact.pk),
                engine.RuleSet(rules),
                now=t,
                activity_scope=Q(contact_id=contact.pk, occurred_at__lte=t),
            )
            return sum(values.get(contact.pk, {}).values())

        scored = sorted(
            (a.occurred_at, a.pk)
            for a in made
            if any(
                r.kind == Rule.Kind.ENGAGEMENT and engine_match(r, a, now=a.occurred_at)
                for r in rules
            )
        )
        crossing = next(((t, pk) for t, pk in scored if score_at(t) >= threshold), None)
        assert found == (crossing or (scored[-1] if scored else (now, None)))
        transaction.set_rollback(True)


def engine_match(rule, activity, *, now):
    from scoring.rules import activity_matches

    return activity_matches(rule, activity, now=now)
