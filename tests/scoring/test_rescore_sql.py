"""The PostgreSQL rescore (one statement per chunk) appends the same adjustments, leaves
the same scores and hands off the same MQLs as the portable engine path."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Activity, Contact, LifecycleTransition
from crm.models.choices import ActivityKind
from scoring import services
from scoring.models import LedgerEntry, RescoreRun, Rule, ScoringSettings
from tests.factories import ActivityFactory, ContactFactory

from .factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the statement path is PostgreSQL's"
)

K = ActivityKind
# A like is counted by no rule, but it is an engagement (it ends inactivity).
KINDS = [
    K.PAGE_VISIT,
    K.EMAIL_CLICKED,
    K.WEBINAR_ATTENDED,
    K.FORM_SUBMITTED,
    K.EMAIL_OPENED,
    K.SOCIAL_LIKE,
]
# The last: a click on the unsubscribe link, which is not a click (METRICS.md).
UNSUBSCRIBE = f"{django_settings.SITE_URL.upper()}/u/token"
URLS = ["https://acme.example/pricing", "https://acme.example/blog", "", UNSUBSCRIBE]
FORMS = ["contact-us", "newsletter"]

activity = st.tuples(
    st.integers(0, 3),  # contact
    st.sampled_from(KINDS),
    st.integers(0, 24 * 120),  # hours ago
    st.sampled_from(URLS),
    st.sampled_from(FORMS),
    st.booleans(),  # machine
)
change = st.tuples(st.integers(0, 9), st.sampled_from(["points", "disable", "delete", "keep"]))


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
        EngagementRuleFactory(points=8, activity_kind=K.PAGE_VISIT, half_life_days=10),
        EngagementRuleFactory(points=-7, activity_kind=K.EMAIL_OPENED, half_life_days=3, cap=4),
        EngagementRuleFactory(points=20, frequency=Rule.Frequency.ONCE_EVER),
        EngagementRuleFactory(
            points=12,
            activity_kind=K.FORM_SUBMITTED,
            form="contact-us",
            frequency=Rule.Frequency.ONCE_PER_WEEK,
            cap=2,
        ),
        NegativeRuleFactory(points=-20),
        NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5),
        FitRuleFactory(points=15),
        # In force since yesterday, and from in three days (worth nothing yet).
        FitRuleFactory(points=4, value="VP", active_from=timezone.now() - timedelta(days=1)),
        FitRuleFactory(points=7, value="Engineer", active_from=timezone.now() + timedelta(days=3)),
        NegativeRuleFactory(
            negative=Rule.Negative.INACTIVE,
            inactive_days=5,
            points=-3,
            active_from=timezone.now() + timedelta(days=3),
        ),
    ]


def _outcome(now, portable):
    """Rescore in a savepoint; return what it appended and changed, then roll it back."""
    sid = transaction.savepoint()
    last = max(LedgerEntry.objects.values_list("pk", flat=True), default=0)
    run = RescoreRun.objects.create(total=0)
    run = services.rescore_execute(run_id=run.pk, now=now, portable=portable)
    entries = sorted(
        LedgerEntry.objects.filter(pk__gt=last).values_list(
            "contact_id", "rule_id", "activity_id", "points", "at", "reason"
        ),
        key=repr,
    )
    result = {
        "entries": entries,
        "scores": dict(Contact.objects.values_list("pk", "scorecard__score")),
        "stages": dict(Contact.objects.values_list("pk", "stage")),
        "owners": dict(Contact.objects.values_list("pk", "owner_id")),
        "transitions": sorted(
            LifecycleTransition.objects.values_list("contact_id", "to_stage", "at"), key=repr
        ),
        "counts": (run.processed, run.contacts_changed, run.entries_created, run.status),
    }
    transaction.savepoint_rollback(sid)
    return result


@pytest.mark.django_db
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    activities=st.lists(activity, min_size=0, max_size=25),
    changes=st.lists(change, max_size=4),
    threshold=st.integers(10, 60),
)
def test_the_statement_path_equals_the_engine_path(activities, changes, threshold):
    with transaction.atomic():
        ScoringSettings.objects.create(pk=1, mql_threshold=threshold)
        rules = _rules()
        now = timezone.now().replace(microsecond=0)
        contacts = [
            ContactFactory(job_title=title, created_at=now - timedelta(days=days))
            for title, days in (("VP Sales", 100), ("Engineer", 10), ("", 300), ("VP", 1))
        ]
        services.scores_rescore_all()
        for i, kind, hours, url, form, machine in activities:
            ActivityFactory(
                contact=contacts[i],
                kind=kind,
                occurred_at=now - timedelta(hours=hours, minutes=1),
                url=url,
                details={"form": form},
                is_machine=machine,
            )
        # A recycle reset belongs to no rule's expectation and must survive the rescore.
        LedgerEntry.objects.create(
            contact=contacts[0], rule=rules[0], points=-4, at=now, reason="recycle_reset"
        )
        for position, what in changes:
            rule = rules[position]
            if what == "points":
                Rule.objects.filter(pk=rule.pk).update(points=rule.points + 5)
            elif what == "disable":
                Rule.objects.filter(pk=rule.pk).update(enabled=False)
            elif what == "delete":
                Rule.objects.filter(pk=rule.pk).delete()  # its entries keep rule = NULL
        assert Activity.objects.count() == len(activities)
        statement = _outcome(now, portable=False)
        engine_path = _outcome(now, portable=True)
        assert statement == engine_path
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_chunk_costs_the_same_queries_whatever_its_contacts(
    django_assert_num_queries,
):
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    EngagementRuleFactory(points=10)
    c = ContactFactory()
    ActivityFactory(contact=c)
    run = RescoreRun.objects.create(total=0)
    # run → running, rules, id bounds, progress reset to 0; the pass
    # (scoring.rescore_pass): activity watermark (sequence, lock holders), savepoint, drop,
    # planner settings, the table, its index, analyze, release; the chunk: savepoint, lock,
    # settings, the check with the entries' insert and the scores' update, progress,
    # release; the pass's drop, the
    # dynamic segments (none reads the score), done, read back: whatever the number of
    # contacts in the chunk
    with django_assert_num_queries(4 + 9 + 6 + 4):
        run = services.rescore_execute(run_id=run.pk)
    assert (run.contacts_changed, run.entries_created) == (1, 1)
    c.refresh_from_db()
    assert c.scorecard.score == 10
    # Each chunk costs the same 6, with or without anything to write (c's, rescored).
    others = [ActivityFactory(contact=ContactFactory()).contact_id for _ in range(3)]
    assert others == list(range(c.pk + 1, c.pk + 4))
    run = RescoreRun.objects.create(total=0)
    with django_assert_num_queries(4 + 9 + 6 * 4 + 4):
        run = services.rescore_execute(run_id=run.pk, chunk=1)
    assert (run.contacts_changed, run.entries_created) == (3, 3)


@pytest.mark.django_db
def test_an_engagement_no_rule_counts_still_ends_inactivity_on_both_paths():
    """The statement counts only activities some rule counts, and reads the inactivity
    rules' latest engagement apart: a like (counted by no rule) still ends inactivity."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    now = timezone.now().replace(microsecond=0)
    EngagementRuleFactory(points=10, url_contains="/pricing")
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5)
    liked, idle = (ContactFactory(created_at=now - timedelta(days=100)) for _ in range(2))
    ActivityFactory(contact=liked, kind=K.SOCIAL_LIKE, occurred_at=now - timedelta(days=2))
    ActivityFactory(contact=idle, kind=K.SOCIAL_LIKE, occurred_at=now - timedelta(days=40))
    ActivityFactory(contact=idle, kind=K.SOCIAL_LIKE, occurred_at=now - timedelta(days=1))
    Activity.objects.filter(contact=idle, occurred_at__gt=now - timedelta(days=5)).update(
        is_machine=True
    )
    statement = _outcome(now, portable=False)
    assert statement == _outcome(now, portable=True)
    assert statement["scores"] == {liked.pk: 0, idle.pk: -5}


@pytest.mark.django_db
def test_inactivity_reads_engagements_of_kinds_no_rule_counts_however_old():
    """Engagements of kinds no rule counts decide the inactivity rules on both paths,
    however old: one before both cutoffs still counts for a contact created after them (an
    imported history: the engine's "latest engagement, else creation")."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    now = timezone.now().replace(microsecond=0)
    EngagementRuleFactory(points=10, url_contains="/pricing")
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=60, points=-7)
    new, imported, never, old, between = (
        ContactFactory(created_at=now - timedelta(days=days)) for days in (3, 3, 3, 100, 100)
    )
    like = {"kind": K.SOCIAL_LIKE}
    ActivityFactory(contact=imported, occurred_at=now - timedelta(days=200), **like)
    ActivityFactory(contact=imported, occurred_at=now - timedelta(days=70), **like)
    ActivityFactory(contact=old, occurred_at=now - timedelta(days=90), **like)
    ActivityFactory(contact=between, occurred_at=now - timedelta(days=30), **like)
    ActivityFactory(contact=never, occurred_at=now - timedelta(days=90), is_machine=True, **like)
    statement = _outcome(now, portable=False)
    assert statement == _outcome(now, portable=True)
    assert statement["scores"] == {
        new.pk: 0,  # created 3 days ago, nothing since: neither cutoff has passed
        imported.pk: -12,  # its latest engagement is 70 days old, before both cutoffs
        never.pk: 0,  # a machine's like is no engagement
        old.pk: -12,
        between.pk: -5,  # 30 days: past the 20-day cutoff, inside the 60-day one
    }


@pytest.mark.django_db
def test_an_unsubscribe_link_click_neither_scores_nor_ends_inactivity_on_both_paths():
    """METRICS.md "unique clicks": a click on the unsubscribe link is not a click."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    now = timezone.now().replace(microsecond=0)
    EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5)
    left, clicked = (ContactFactory(created_at=now - timedelta(days=100)) for _ in range(2))
    at = now - timedelta(days=2)
    ActivityFactory(contact=left, kind=K.EMAIL_CLICKED, occurred_at=at, url=UNSUBSCRIBE)
    ActivityFactory(contact=clicked, kind=K.EMAIL_CLICKED, occurred_at=at, url=URLS[0])
    statement = _outcome(now, portable=False)
    assert statement == _outcome(now, portable=True)
    assert statement["scores"] == {left.pk: -5, clicked.pk: 3}


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Pacific/Auckland", "America/Los_Angeles"])
@pytest.mark.parametrize("far_away", [False, True])
def test_days_and_weeks_count_alike_in_any_zone_and_span(zone, far_away):
    """Distinct days/weeks as bit counts (the statement) equal COUNT(DISTINCT) (the
    engine), around midnights and week starts of the site's zone; an activity decades
    away (a span too wide for bit strings) makes the statement count them distinctly."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000)
    now = timezone.now().replace(microsecond=0)
    EngagementRuleFactory(points=2, frequency=Rule.Frequency.ONCE_PER_DAY)
    EngagementRuleFactory(points=3, frequency=Rule.Frequency.ONCE_PER_WEEK)
    contacts = [ContactFactory() for _ in range(3)]
    for i, hours in enumerate([1, 11, 13, 23, 25, 24 * 6 + 1, 24 * 7 + 13, 24 * 30, 24 * 300]):
        ActivityFactory(contact=contacts[i % 3], occurred_at=now - timedelta(hours=hours))
    if far_away:
        ActivityFactory(contact=contacts[0], occurred_at=now - timedelta(days=365 * 30))
    with timezone.override(zone):
        statement = _outcome(now, portable=False)
        assert statement == _outcome(now, portable=True)
    assert statement["entries"]
