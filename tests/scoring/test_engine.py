"""The engine: incremental scoring, fit, decay, rescore and the MQL hand-off."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db.models import Sum
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import Contact, LifecycleTransition, Notification, Stage
from crm.models.choices import ActivityKind
from crm.services import contact_create
from scoring import services
from scoring.models import LedgerEntry, RescoreRun, Rule, ScoringSettings
from tests.factories import CompanyFactory, ContactFactory, UserFactory
from tests.services import celery_conf

from .factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.django_db(transaction=False)
K = ActivityKind


def record(contact, kind=K.PAGE_VISIT, at=None, **extra):
    return activities_record(
        items=[
            {
                "kind": kind,
                "contact": contact.pk,
                "occurred_at": at or timezone.now() - timedelta(minutes=1),
                **extra,
            }
        ]
    )


def score(contact) -> int:
    contact.refresh_from_db()
    return contact.scorecard.score


def test_it_scores_an_activity_and_writes_a_ledger_entry():
    rule = EngagementRuleFactory(points=10, url_contains="/pricing")
    c = ContactFactory()
    record(c, url="https://x.example/pricing")
    record(c, url="https://x.example/blog")
    assert score(c) == 10
    entry = LedgerEntry.objects.get(contact=c)
    assert (entry.rule, entry.reason, entry.points) == (rule, "activity", 10)
    assert entry.activity is not None


def test_it_counts_once_per_day_and_respects_the_cap():
    EngagementRuleFactory(points=5, frequency=Rule.Frequency.ONCE_PER_DAY, cap=2)
    c = ContactFactory()
    now = timezone.now()
    for days in (0, 0, 1, 2, 3):
        record(c, at=now - timedelta(days=days, minutes=1))
    assert score(c) == 10


def test_it_applies_fit_rules_when_a_contact_is_created_or_changes():
    FitRuleFactory(field="job_title", operator="contains", value="VP", points=15)
    FitRuleFactory(field="company.industry", operator="in", value="Software, Fintech", points=10)
    FitRuleFactory(field="email_domain", operator="in", value="gmail.com,yahoo.com", points=-10)
    company = CompanyFactory(industry="fintech")
    c = contact_create(email="vp@gmail.com", job_title="VP Sales", company=company)
    assert score(c) == 15


def test_a_numeric_attribute_rule_compares_numbers_on_every_path():
    """A CSV import stores custom attributes as text ("1200"): ``attributes.employees gt
    1000`` compares numbers, as segments do (crm.attributes), when a contact is created
    and on a rescore (on PostgreSQL, the rescore's SQL path)."""
    FitRuleFactory(field="attributes.employees", operator="gt", value="1000", points=20)
    FitRuleFactory(field="attributes.employees", operator="equals", value="50", points=1)
    small = contact_create(email="small@acme.example", attributes={"employees": "50"})
    big = contact_create(email="big@acme.example", attributes={"employees": "1200"})
    number = contact_create(email="n@acme.example", attributes={"employees": 3000})
    words = contact_create(email="words@acme.example", attributes={"employees": "unknown"})
    assert [score(c) for c in (small, big, number, words)] == [1, 20, 20, 0]
    assert services.scores_rescore_all().entries_created == 0


@pytest.mark.parametrize("key", ["range", "contains", "isnull", "exact", "date", "a__b"])
def test_a_fit_rule_reads_an_attribute_named_like_a_lookup_as_that_key(key):
    """A key named like a Django lookup ("range", "isnull" …) or holding "__" is the key
    itself (crm.attributes), when a contact is created and on a rescore (on PostgreSQL,
    the rescore's SQL path)."""
    field = f"attributes.{key}"
    FitRuleFactory(field=field, operator="gt", value="1000", points=20)
    FitRuleFactory(field=field, operator="equals", value="pro", points=1)
    FitRuleFactory(field=field, operator="is_empty", value="", points=-3)
    big = contact_create(email="big@acme.example", attributes={key: "1200"})
    pro = contact_create(email="pro@acme.example", attributes={key: "Pro"})
    nested = contact_create(email="nested@acme.example", attributes={"a": {"b": "1200"}})
    assert [score(c) for c in (big, pro, nested)] == [20, 1, -3]
    assert services.scores_rescore_all().entries_created == 0


def test_a_negated_attribute_rule_applies_to_a_contact_without_the_attribute():
    """``country not_in DE,AT`` penalises a contact with no country; on a custom attribute
    a negation treats a missing attribute the same way (as segments do)."""
    FitRuleFactory(field="country", operator="not_in", value="DE,AT", points=-30)
    FitRuleFactory(field="attributes.region", operator="not_in", value="EMEA", points=-7)
    FitRuleFactory(field="attributes.plan", operator="not_equals", value="pro", points=-2)
    nobody = contact_create(email="nobody@acme.example")
    emea = contact_create(
        email="emea@acme.example", country="DE", attributes={"region": "emea", "plan": "Pro"}
    )
    assert (score(nobody), score(emea)) == (-39, 0)
    assert services.scores_rescore_all().entries_created == 0


def test_it_expires_points_with_a_dated_entry_on_the_decay_tick():
    EngagementRuleFactory(points=10, expire_after_days=30)
    c = ContactFactory()
    record(c, at=timezone.now() - timedelta(days=29))
    assert score(c) == 10
    assert services.decay_run(now=timezone.now() + timedelta(days=2)) == 1
    assert score(c) == 0
    expiry = LedgerEntry.objects.get(reason="expiry")
    assert expiry.points == -10
    assert LedgerEntry.objects.filter(reason="activity", points=10).exists()  # kept


def test_it_halves_points_after_each_half_life():
    EngagementRuleFactory(points=40, half_life_days=7)
    c = ContactFactory()
    record(c, at=timezone.now() - timedelta(days=1))
    services.decay_run(now=timezone.now() + timedelta(days=13))
    assert score(c) == 10


def test_it_penalises_inactivity_and_lifts_it_when_the_contact_engages():
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=60, points=-10)
    c = ContactFactory(created_at=timezone.now() - timedelta(days=90))
    services.decay_run()
    assert score(c) == -10
    record(c)
    assert score(c) == 0


def test_a_penalty_expiring_in_the_decay_run_hands_off_the_lead_it_lifts():
    """A careers-page visit (−20, expires after 7 days) held a lead at 40 − 20 = 20 under
    the threshold of 30. The decay run that expires it lifts the score to 40: the lead
    goes to sales, dated at that run."""
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    UserFactory(username="rep", role="sales")
    EngagementRuleFactory(points=-20, url_contains="/careers", expire_after_days=7)
    EngagementRuleFactory(points=20, url_contains="/pricing")
    c = ContactFactory(created_at=timezone.now() - timedelta(days=30))
    now = timezone.now().replace(microsecond=0)
    for hours, page in ((23, "careers"), (22, "pricing"), (21, "pricing")):
        record(c, at=now - timedelta(days=6, hours=hours), url=f"https://a.example/{page}")
    c.refresh_from_db()
    assert (score(c), c.stage) == (20, Stage.LEAD)
    services.decay_run(now=now + timedelta(hours=2))
    c.refresh_from_db()
    assert (score(c), c.stage) == (40, Stage.MQL)
    mql = LifecycleTransition.objects.get(contact=c, to_stage=Stage.MQL)
    assert (mql.at, mql.activity_id) == (now + timedelta(hours=2), None)
    assert c.owner is not None


def test_a_rule_counts_nothing_before_its_active_from_date_and_the_decay_run_applies_it():
    """Before its active-from date a rule is not in force, whatever its kind: a fit rule
    and an inactivity rule due next week give nothing today — on a profile change, a
    batch, a decay run or a rescore. The first decay run on or after the date applies
    them (dated at the run), even when the runs of that day were missed; a rescore then
    agrees."""
    start = timezone.now().replace(microsecond=0)
    due = start + timedelta(days=7)
    FitRuleFactory(points=15, active_from=due)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=30, points=-5,
                        active_from=due)  # fmt: skip
    c = contact_create(email="vp@acme.example", job_title="VP Sales")
    Contact.objects.filter(pk=c.pk).update(created_at=start - timedelta(days=90))
    record(c, kind=K.EMAIL_OPENED, at=start - timedelta(days=60))
    services.decay_run(now=start)
    assert score(c) == 0
    assert services.scores_rescore_all().entries_created == 0

    later = due + timedelta(days=3)  # no run from the date until then
    services.decay_run(now=later)
    assert score(c) == 10
    applied = LedgerEntry.objects.filter(contact=c).values_list("points", "at", "reason")
    assert sorted(applied) == [(-5, later, "decay"), (15, later, "fit")]
    run = RescoreRun.objects.create()
    assert services.rescore_execute(run_id=run.pk, now=later).entries_created == 0
    assert services.decay_run(now=later + timedelta(hours=1)) == 0


def test_unsubscribing_takes_points_away():
    NegativeRuleFactory(negative=Rule.Negative.UNSUBSCRIBED, points=-20)
    c = ContactFactory()
    record(c, kind=K.EMAIL_UNSUBSCRIBED)
    assert score(c) == -20


def test_crossing_the_threshold_makes_an_mql_dated_at_the_activity_and_assigns_an_owner():
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    seller = UserFactory(username="seller", role="sales")
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    c = ContactFactory(created_at=timezone.now() - timedelta(days=3))
    at = timezone.now() - timedelta(hours=2)
    with_commit = record(c, kind=K.DEMO_REQUESTED, at=at)
    assert with_commit.created == 1
    c.refresh_from_db()
    assert c.stage == Stage.MQL
    assert c.owner == seller
    mql = LifecycleTransition.objects.get(contact=c, to_stage=Stage.MQL)
    assert mql.at == at
    assert mql.by_system == "scoring"
    assert mql.activity_id == with_commit.activities[0].pk
    assert Notification.objects.filter(user=seller).count() == 1


@pytest.fixture
def eager_tasks():
    with celery_conf(task_always_eager=True):
        yield


def test_it_emails_the_owner_after_commit(django_capture_on_commit_callbacks, eager_tasks):
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    UserFactory(username="seller", role="sales")
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    c = ContactFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        record(c, kind=K.DEMO_REQUESTED)
    assert len(mail.outbox) == 0  # nothing leaves before the commit
    for callback in callbacks:
        callback()
    assert len(mail.outbox) == 1
    assert "new MQL" in mail.outbox[0].subject


def test_one_email_task_per_batch_whatever_the_number_of_new_mqls(
    django_capture_on_commit_callbacks, eager_tasks
):
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    UserFactory(username="seller", role="sales")
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    contacts = ContactFactory.create_batch(3)
    with django_capture_on_commit_callbacks(execute=True):
        activities_record(
            items=[
                {"kind": K.DEMO_REQUESTED, "contact": c.pk, "occurred_at": timezone.now()}
                for c in contacts
            ]
        )
    assert Notification.objects.count() == 3
    assert len(mail.outbox) == 1  # one owner: one message listing the three leads
    assert mail.outbox[0].subject.startswith("3 new MQL")


def test_a_contact_past_mql_is_not_pulled_back():
    ScoringSettings.objects.create(pk=1, mql_threshold=10)
    EngagementRuleFactory(points=30)
    c = ContactFactory(stage=Stage.SQL)
    record(c)
    c.refresh_from_db()
    assert c.stage == Stage.SQL
    assert c.scorecard.score == 30


def test_minimum_fit_holds_back_a_poor_fit():
    ScoringSettings.objects.create(pk=1, mql_threshold=10, min_fit=10)
    EngagementRuleFactory(points=30)
    c = ContactFactory()
    record(c)
    c.refresh_from_db()
    assert c.stage == Stage.LEAD


def test_recycling_halves_engagement_points():
    ScoringSettings.objects.create(pk=1, mql_threshold=1000, recycle_policy="halve")
    EngagementRuleFactory(points=30)
    c = ContactFactory(stage=Stage.MQL)
    record(c)
    from crm.lifecycle import stage_change

    stage_change(contact=c, to_stage=Stage.RECYCLED)
    assert score(c) == 15
    assert LedgerEntry.objects.filter(reason="recycle_reset", points=-15).exists()


def test_a_recycle_reset_takes_a_rules_points_back_only_once():
    """Reset policy: the recycle took back a visit rule's +30 and a click rule's +5. When
    the click's points expire (decay run) and the visit rule is switched off (rescore),
    each rule stays at 0 — not −5 and −30: a rule that only ever gave points never costs
    any. Both paths (and the PostgreSQL rescore) agree."""
    ScoringSettings.objects.create(pk=1, mql_threshold=1000, recycle_policy="reset")
    visit = EngagementRuleFactory(points=10)
    click = EngagementRuleFactory(points=5, activity_kind=K.EMAIL_CLICKED, expire_after_days=7)
    now = timezone.now().replace(microsecond=0)
    c = ContactFactory(stage=Stage.MQL, created_at=now - timedelta(days=30))
    for days in (3, 2, 1):
        record(c, at=now - timedelta(days=days))
    record(c, kind=K.EMAIL_CLICKED, at=now - timedelta(days=6), url="https://a.example/x")
    assert score(c) == 35
    from crm.lifecycle import stage_change

    stage_change(contact=c, to_stage=Stage.RECYCLED, reason_code="not_ready")
    assert score(c) == 0
    later = now + timedelta(days=2)
    assert services.decay_run(now=later) == 0  # the click's points expire: already taken
    services.rule_save(rule=visit, data={"enabled": False})
    run = services.rescore_execute(run_id=RescoreRun.objects.create().pk, now=later)
    assert (run.entries_created, score(c)) == (0, 0)
    by_rule = dict(
        LedgerEntry.objects.filter(contact=c)
        .values_list("rule_id")
        .annotate(s=Sum("points"))
        .values_list("rule_id", "s")
    )
    assert by_rule == {visit.pk: 0, click.pk: 0}


def test_rescore_after_a_rule_change_appends_adjustments_dated_now():
    rule = EngagementRuleFactory(points=10)
    c = ContactFactory()
    record(c)
    record(c)
    services.rule_save(rule=rule, data={"points": 7})
    run = services.scores_rescore_all()
    assert run.status == "done"
    assert run.contacts_changed == 1
    assert score(c) == 14
    adj = LedgerEntry.objects.get(reason="rescore")
    assert adj.points == -6


def test_rescore_takes_back_points_of_a_disabled_rule():
    rule = EngagementRuleFactory(points=10)
    c = ContactFactory()
    record(c)
    services.rule_save(rule=rule, data={"enabled": False})
    services.scores_rescore_all()
    assert score(c) == 0


def test_a_second_rescore_changes_nothing():
    EngagementRuleFactory(points=10)
    FitRuleFactory()
    Contact.objects.bulk_create([])
    c = ContactFactory(job_title="VP")
    record(c)
    services.scores_rescore_all()
    run = services.scores_rescore_all()
    assert run.entries_created == 0
    assert score(c) == 25


def test_a_recycled_contact_can_become_an_mql_again():
    ScoringSettings.objects.create(pk=1, mql_threshold=30, recycle_policy="reset")
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    c = ContactFactory(created_at=timezone.now() - timedelta(days=5))
    record(c, kind=K.DEMO_REQUESTED, at=timezone.now() - timedelta(days=3))
    from crm.lifecycle import stage_change

    stage_change(contact=c, to_stage=Stage.RECYCLED, at=timezone.now() - timedelta(days=2))
    assert score(c) == 0
    record(c, kind=K.DEMO_REQUESTED)
    c.refresh_from_db()
    assert c.stage == Stage.MQL
    assert LifecycleTransition.objects.filter(contact=c, to_stage=Stage.MQL).count() == 2


def test_a_click_on_the_unsubscribe_link_earns_no_engagement_points(settings):
    """METRICS.md "unique clicks": a click on the unsubscribe link (the provider's click
    tracking reports it) is not a click, so an ``email_clicked`` rule gives it nothing and
    it ends no inactivity; incremental scoring and a full rescore agree."""
    settings.SITE_URL = "https://crm.example.com"
    EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED)
    NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=60, points=-10)
    c = ContactFactory(created_at=timezone.now() - timedelta(days=90))
    services.decay_run()
    assert score(c) == -10
    record(c, kind=K.EMAIL_CLICKED, url="https://CRM.example.com/u/token")  # host in capitals
    assert score(c) == -10
    assert services.scores_rescore_all().entries_created == 0
    record(c, kind=K.EMAIL_CLICKED, url="https://x.example/offer")
    assert score(c) == 3  # 3 for the click, and the inactivity penalty lifted
    assert services.scores_rescore_all().entries_created == 0
    assert score(c) == 3


def test_leaving_one_program_is_not_an_unsubscribe_from_all_email():
    """A program-only unsubscribe (details scope "program") leaves the address subscribed,
    so the negative "unsubscribed" rule does not apply; an engagement rule on the
    ``email_unsubscribed`` kind counts it, as it is an unsubscribe from that email."""
    NegativeRuleFactory(negative=Rule.Negative.UNSUBSCRIBED, points=-20)
    c = ContactFactory()
    record(c, kind=K.EMAIL_UNSUBSCRIBED, details={"scope": "program"})
    assert score(c) == 0
    EngagementRuleFactory(points=-5, activity_kind=K.EMAIL_UNSUBSCRIBED)
    services.scores_rescore_all()
    assert score(c) == -5
    record(c, kind=K.EMAIL_UNSUBSCRIBED)  # then from all email
    assert score(c) == -30
    assert services.scores_rescore_all().entries_created == 0
