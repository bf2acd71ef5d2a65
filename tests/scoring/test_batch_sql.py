"""The PostgreSQL batch statement (scoring.batch_sql) appends the same entries, leaves the
same scores and hands off the same MQLs as the portable incremental path."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Contact, LifecycleTransition
from crm.models.choices import ActivityKind
from scoring import engine, handlers, handoff, services
from scoring.models import LedgerEntry, Rule, ScoringSettings
from tests.factories import ActivityFactory, ContactFactory

from .factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the statement path is PostgreSQL's"
)

K = ActivityKind
KINDS = [K.PAGE_VISIT, K.EMAIL_CLICKED, K.WEBINAR_ATTENDED, K.FORM_SUBMITTED, K.EMAIL_OPENED]
# The last: a click on the unsubscribe link, which is not a click (METRICS.md).
URLS = [
    "https://acme.example/pricing",
    "https://acme.example/blog",
    "",
    f"{django_settings.SITE_URL.upper()}/u/token",
]
FORMS = ["contact-us", "newsletter"]

activity = st.tuples(
    st.integers(0, 3),  # contact
    st.sampled_from(KINDS),
    st.integers(-30, 24 * 120),  # hours ago (a few in the future)
    st.sampled_from(URLS),
    st.sampled_from(FORMS),
    st.integers(0, 5),  # machine when 0
)


def _rules():
    return [
        EngagementRuleFactory(
            points=10, url_contains="/pricing", frequency=Rule.Frequency.ONCE_PER_DAY
        ),
        EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED, cap=3),
        EngagementRuleFactory(
            points=15,
            activity_kind=K.WEBINAR_ATTENDED,
            frequency=Rule.Frequency.ONCE_PER_WEEK,
            expire_after_days=30,
        ),
        EngagementRuleFactory(points=400, activity_kind=K.PAGE_VISIT, half_life_days=2),
        EngagementRuleFactory(points=-300, activity_kind=K.EMAIL_OPENED, half_life_days=3, cap=4),
        EngagementRuleFactory(points=20, frequency=Rule.Frequency.ONCE_EVER),
        EngagementRuleFactory(
            points=12,
            activity_kind=K.FORM_SUBMITTED,
            form="contact-us",
            frequency=Rule.Frequency.ONCE_PER_WEEK,
            cap=2,
            expire_after_days=20,
        ),
        NegativeRuleFactory(points=-20),
        NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5),
        FitRuleFactory(points=15),
    ]


def _create(contacts, rows, now):
    return [
        ActivityFactory(
            contact=contacts[i],
            kind=kind,
            occurred_at=now - timedelta(hours=hours, minutes=1),
            url=url,
            details={"form": form},
            is_machine=not machine,
        )
        for i, kind, hours, url, form, machine in rows
    ]


def _outcome(batch, now, portable):
    """Score the batch as the handler does, in a savepoint; return what it appended,
    changed and handed off, then roll it back."""
    sid = transaction.savepoint()
    last = max(LedgerEntry.objects.values_list("pk", flat=True), default=0)
    rules = engine.rules_enabled(kinds=[Rule.Kind.ENGAGEMENT, Rule.Kind.NEGATIVE])
    rules = [r for r in rules if r.kind == Rule.Kind.ENGAGEMENT or not engine.is_flag(r)]
    matches = engine.batch_matches(batch, rules, now)
    scores = handlers._lock_scores({c for c, _ in matches})
    outcome = engine.batch_reconcile(
        matches=matches, rules=rules, now=now, scores=scores, batch=batch, portable=portable
    )
    mqls = handoff.mqls_hand_off(entries=outcome.entries, scores=outcome.scores)
    result = {
        "appended": list(
            LedgerEntry.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("contact_id", "rule_id", "activity_id", "points", "at", "reason")
        ),
        "entries": outcome.entries,
        "outcome_scores": outcome.scores,
        "scores": dict(Contact.objects.values_list("pk", "scorecard__score")),
        "mqls": mqls,
        "transitions": sorted(
            LifecycleTransition.objects.values_list("contact_id", "to_stage", "at", "activity_id"),
            key=repr,
        ),
    }
    transaction.savepoint_rollback(sid)
    return result


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(activity, max_size=25),
    batch=st.lists(activity, min_size=1, max_size=12),
    changed=st.lists(st.tuples(st.integers(0, 9), st.sampled_from([-8, 5])), max_size=5),
    drift=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 9),
            st.integers(-60, 60),
            st.sampled_from(["rescore", "recycle_reset"]),
        ),
        max_size=8,
    ),
    threshold=st.integers(10, 60),
    zone=st.sampled_from(["UTC", "Europe/Paris", "Pacific/Auckland"]),
)
def test_the_statement_path_equals_the_portable_path(
    history, batch, changed, drift, threshold, zone
):
    with transaction.atomic(), timezone.override(zone):
        ScoringSettings.objects.create(pk=1, mql_threshold=threshold)
        rules = _rules()
        now = timezone.now().replace(microsecond=0)
        contacts = [
            ContactFactory(job_title=title, created_at=now - timedelta(days=days))
            for title, days in (("VP Sales", 100), ("Engineer", 10), ("", 300), ("VP", 1))
        ]
        _create(contacts, history, now)
        services.scores_rescore_all()
        # A ledger that no longer matches the rules (edited, not yet rescored; entries
        # the clock has not yet taken back) and recycle resets, which belong to no rule's
        # expectation: batches then both add and take back points.
        for position, step in changed:
            rule = rules[position]
            Rule.objects.filter(pk=rule.pk).update(points=rule.points + step)
        for i, position, points, reason in drift:
            LedgerEntry.objects.create(
                contact=contacts[i], rule=rules[position], points=points, at=now, reason=reason
            )
        activities = _create(contacts, batch, now)
        statement = _outcome(activities, now, portable=False)
        portable = _outcome(activities, now, portable=True)
        assert statement == portable
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_batch_is_one_statement_plus_the_lock_and_the_score_update(django_assert_num_queries):
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    _rules()
    now = timezone.now()
    contact = ContactFactory(created_at=now - timedelta(days=50))
    batch = [
        ActivityFactory(contact=contact, kind=K.PAGE_VISIT, url="https://a.example/pricing"),
        ActivityFactory(contact=contact, kind=K.EMAIL_CLICKED),
    ]
    rules = engine.rules_enabled(kinds=[Rule.Kind.ENGAGEMENT, Rule.Kind.NEGATIVE])
    rules = [r for r in rules if r.kind == Rule.Kind.ENGAGEMENT or not engine.is_flag(r)]
    matches = engine.batch_matches(batch, rules, now)
    # lock + the statement (aggregate, ledger sums, diff, append) + the score UPDATE
    with django_assert_num_queries(3):
        scores = handlers._lock_scores({c for c, _ in matches})
        outcome = engine.batch_reconcile(
            matches=matches, rules=rules, now=now, scores=scores, batch=batch
        )
    # /pricing once a day, the click, the half-life page visit, the once-ever visit
    assert outcome.scores == {contact.pk: 10 + 3 + 400 + 20}
    assert sorted(LedgerEntry.objects.values_list("points", flat=True)) == [3, 10, 20, 400]


@pytest.mark.django_db
def test_a_loss_is_an_expiry_for_an_expiring_rule_and_a_decay_otherwise():
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    expiring = EngagementRuleFactory(
        points=10, activity_kind=K.WEBINAR_ATTENDED, expire_after_days=30
    )
    fading = EngagementRuleFactory(points=10, activity_kind=K.EMAIL_CLICKED, half_life_days=5)
    now = timezone.now().replace(microsecond=0)
    contact = ContactFactory(created_at=now - timedelta(days=50))
    for rule in (expiring, fading):  # the ledger holds more than the rules are now worth
        LedgerEntry.objects.create(contact=contact, rule=rule, points=50, at=now, reason="activity")
    batch = [
        ActivityFactory(contact=contact, kind=K.WEBINAR_ATTENDED, occurred_at=now),
        ActivityFactory(contact=contact, kind=K.EMAIL_CLICKED, occurred_at=now),
    ]
    statement = _outcome(batch, now, portable=False)
    assert statement == _outcome(batch, now, portable=True)
    assert statement["appended"] == [
        (contact.pk, expiring.pk, None, 10 - 50, now, "expiry"),
        (contact.pk, fading.pk, None, 10 - 50, now, "decay"),
    ]
