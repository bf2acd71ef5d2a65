"""The back-test counts in SQL exactly what the per-contact Python evaluation counted.

``_backtest_reference`` is the former implementation (rule values per contact from
``engine.expected_values``, qualification and precision in Python), kept here as the
oracle: on random datasets, rule sets and settings, ``backtest_run`` must return the same
dict.
"""

import random
from datetime import timedelta

import pytest
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from crm.models import Activity, Campaign, Contact, LifecycleTransition, Stage
from crm.models.choices import ActivityKind, EmailStatus
from scoring import backtest, backtest_sql, engine
from scoring.backtest import Side
from scoring.models import Rule, ScoringSettings
from tests.factories import CompanyFactory, ContactFactory

K = ActivityKind
F = Rule.Frequency


def _backtest_reference(*, draft, days, now):
    since = now - timedelta(days=days)
    current = engine.rules_enabled()
    conf = ScoringSettings.load()
    rule_set = engine.RuleSet([*draft, *current])
    active = Q(pk__in=Activity.objects.in_period(since, now).values("contact_id"))
    values = engine.expected_values(
        active,
        rule_set,
        now=now,
        since=since,
        activity_scope=Q(occurred_at__gte=since, occurred_at__lt=now),
    )
    split = len(draft)

    def qualified(positions):
        out = set()
        for contact_id, by_pos in values.items():
            total = sum(v for p, v in by_pos.items() if p in positions)
            fit = sum(
                v
                for p, v in by_pos.items()
                if p in positions and rule_set.rules[p].kind == Rule.Kind.FIT
            )
            if total >= conf.mql_threshold and (conf.min_fit is None or fit >= conf.min_fit):
                out.add(contact_id)
        return out

    draft_q = qualified(range(0, split))
    current_q = qualified(range(split, len(rule_set.rules)))
    decisions = LifecycleTransition.objects.in_period(since, now).filter(from_stage=Stage.MQL)
    accepted = set(decisions.filter(to_stage=Stage.SQL).values_list("contact_id", flat=True))
    rejected = (
        set(
            decisions.filter(to_stage__in=[Stage.RECYCLED, Stage.DISQUALIFIED]).values_list(
                "contact_id", flat=True
            )
        )
        - accepted
    )

    def side(q):
        return Side(mqls=len(q), accepted=len(q & accepted), rejected=len(q & rejected))

    return {
        "days": days,
        "start": since.isoformat(),
        "end": now.isoformat(),
        "threshold": conf.mql_threshold,
        "contacts_evaluated": len(values),
        "decided": {"accepted": len(accepted), "rejected": len(rejected)},
        "draft": side(draft_q).as_dict(),
        "current": side(current_q).as_dict(),
    }


def _templates(campaign):
    fit = dict(kind=Rule.Kind.FIT)
    eng = dict(kind=Rule.Kind.ENGAGEMENT)
    neg = dict(kind=Rule.Kind.NEGATIVE)
    return [
        dict(fit, field="job_title", operator="contains", value="VP", points=15),
        dict(fit, field="job_title", operator="in", value="CEO, CTO", points=20),
        dict(fit, field="company.industry", operator="in", value="Software, Fintech", points=10),
        dict(fit, field="email_domain", operator="in", value="mail.example", points=-10),
        dict(fit, field="country", operator="not_in", value="US, DE", points=-5),
        dict(fit, field="attributes.employees", operator="gt", value="50", points=5),
        dict(fit, field="company.size_band", operator="is_empty", value="", points=-3),
        dict(neg, negative=Rule.Negative.UNSUBSCRIBED, points=-20),
        dict(neg, negative=Rule.Negative.HARD_BOUNCED, points=-30),
        dict(neg, negative=Rule.Negative.INACTIVE, inactive_days=10, points=-5),
        dict(neg, negative=Rule.Negative.INACTIVE, inactive_days=45, points=-10),
        dict(
            eng,
            activity_kind=K.PAGE_VISIT,
            url_contains="/pricing",
            frequency=F.ONCE_PER_DAY,
            cap=5,
            half_life_days=30,
            points=10,
        ),  # fmt: skip
        dict(
            eng, activity_kind=K.PAGE_VISIT, frequency=F.EVERY_TIME, expire_after_days=20, points=1
        ),  # fmt: skip
        dict(
            eng, activity_kind=K.PAGE_VISIT, url_contains="/careers", half_life_days=3, points=-7
        ),  # fmt: skip
        dict(eng, activity_kind=K.PAGE_VISIT, half_life_days=1, points=50),
        dict(eng, activity_kind=K.EMAIL_CLICKED, cap=3, half_life_days=7, points=3),
        dict(eng, activity_kind=K.EMAIL_OPENED, points=1),
        dict(eng, activity_kind=K.EMAIL_CLICKED, campaign_id=campaign.pk, points=4),
        dict(
            eng,
            activity_kind=K.FORM_SUBMITTED,
            form="contact-us",
            frequency=F.ONCE_PER_WEEK,
            points=20,
        ),  # fmt: skip
        dict(eng, activity_kind=K.FORM_SUBMITTED, frequency=F.ONCE_EVER, points=25),
        dict(
            eng,
            activity_kind=K.CONTENT_DOWNLOAD,
            content_type="white paper",
            cap=2,
            expire_after_days=60,
            points=8,
        ),  # fmt: skip
        dict(eng, activity_kind=K.DEMO_REQUESTED, frequency=F.ONCE_PER_WEEK, cap=2, points=30),
        dict(
            eng,
            activity_kind=K.WEBINAR_ATTENDED,
            frequency=F.ONCE_EVER,
            cap=3,
            half_life_days=2,
            points=15,
        ),  # fmt: skip
    ]


def _dataset(rng, now):
    campaign = Campaign.objects.create(name="Spring", start_date=(now - timedelta(days=90)).date())
    companies = [
        CompanyFactory(industry=industry, size_band=band)
        for industry, band in [("Software", "51-200"), ("Retail", ""), ("Fintech", "1000+")]
    ]
    titles = ["VP Sales", "ceo", "Engineer", "", "Head of VP relations"]
    contacts = [
        ContactFactory(
            email=f"c{i}@{rng.choice(['acme.example', 'mail.example', 'MAIL.example'])}",
            job_title=rng.choice(titles),
            country=rng.choice(["US", "FR", ""]),
            company=rng.choice([None, *companies]),
            email_status=rng.choice([EmailStatus.ACTIVE] * 3 + list(EmailStatus.values)),
            attributes=rng.choice([{}, {"employees": 10}, {"employees": 500}]),
            created_at=now - timedelta(days=rng.choice([3, 15, 50, 200]), seconds=rng.random()),
        )
        for i in range(14)
    ]
    kinds = [K.PAGE_VISIT] * 4 + [
        K.EMAIL_CLICKED, K.EMAIL_OPENED, K.EMAIL_SENT, K.FORM_SUBMITTED, K.CONTENT_DOWNLOAD,
        K.DEMO_REQUESTED, K.WEBINAR_ATTENDED, K.PURCHASE,
    ]  # fmt: skip
    items = []
    for _ in range(rng.randint(40, 140)):
        kind = rng.choice(kinds)
        items.append(
            Activity(
                contact=rng.choice(contacts[:12]),  # the last two never act
                kind=kind,
                occurred_at=now - timedelta(days=rng.uniform(0, 100)),
                url=rng.choice(
                    [
                        "https://x.example/pricing",
                        "https://x.example/PRICING/a",
                        "https://x.example/careers",
                        "",
                        f"{settings.SITE_URL}/u/token",  # the unsubscribe link: no click
                    ]
                ),  # fmt: skip
                is_machine=kind == K.EMAIL_OPENED and rng.random() < 0.3,
                campaign=campaign if rng.random() < 0.5 else None,
                details=rng.choice([{}, {"form": "contact-us"}, {"content_type": "white paper"}]),
            )
        )
    Activity.objects.bulk_create(items)
    stages = [Stage.SQL, Stage.RECYCLED, Stage.DISQUALIFIED, Stage.MQL]
    for contact in rng.sample(contacts, 9):
        for _ in range(rng.randint(1, 2)):
            LifecycleTransition.objects.create(
                contact=contact,
                from_stage=rng.choice([Stage.MQL, Stage.MQL, Stage.LEAD]),
                to_stage=rng.choice(stages),
                at=now - timedelta(days=rng.uniform(0, 100)),
            )
    return campaign


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(8))
def test_it_counts_what_the_per_contact_evaluation_counted(seed):
    rng = random.Random(seed)
    now = timezone.now()
    campaign = _dataset(rng, now)
    templates = _templates(campaign)
    ScoringSettings.objects.create(
        pk=1, mql_threshold=rng.choice([5, 20, 40]), min_fit=rng.choice([None, None, 0, 10])
    )
    for t in rng.sample(templates, rng.randint(0, 12)):
        Rule.objects.create(
            name="current",
            enabled=rng.random() < 0.85,
            # in force since 5 days, or from in 5 days (worth nothing yet)
            active_from=now + timedelta(days=rng.choice([-5, 5])) if rng.random() < 0.3 else None,
            **t,
        )
    draft = [Rule(name="draft", **t) for t in rng.sample(templates, rng.randint(0, 12))]
    for days in (1, 7, 30, 90, 365):
        got = backtest.backtest_run(draft=draft, days=days, now=now)
        assert got == _backtest_reference(draft=draft, days=days, now=now), days


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(100, 104))
def test_it_gives_every_contact_the_same_window_score(seed):
    """Swept thresholds: equal counts at every threshold mean equal score distributions
    (half-life truncation of negative points, caps, buckets), not just equal verdicts."""
    rng = random.Random(seed)
    now = timezone.now()
    campaign = _dataset(rng, now)
    templates = _templates(campaign)
    conf = ScoringSettings.objects.create(pk=1, mql_threshold=1)
    for t in rng.sample(templates, 10):
        Rule.objects.create(name="current", **t)
    draft = [Rule(name="draft", **t) for t in rng.sample(templates, 10)]
    for threshold in [1, 2, 3, 5, 8, 10, 13, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150]:
        conf.mql_threshold = threshold
        conf.save()
        got = backtest.backtest_run(draft=draft, days=45, now=now)
        assert got == _backtest_reference(draft=draft, days=45, now=now), threshold


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kinds",
    [set(), {Rule.Kind.FIT}, {Rule.Kind.ENGAGEMENT}, {Rule.Kind.NEGATIVE}],
    ids=["no-rules", "fit-only", "engagement-only", "negative-only"],
)
def test_it_evaluates_the_same_contacts_whatever_kinds_of_rules_there_are(kinds):
    rng = random.Random(7)
    now = timezone.now()
    campaign = _dataset(rng, now)
    ScoringSettings.objects.create(pk=1, mql_threshold=1)
    for t in _templates(campaign):
        if t["kind"] in kinds:
            Rule.objects.create(name="current", **t)
    draft = [Rule(name="draft", **t) for t in _templates(campaign) if t["kind"] in kinds]
    got = backtest.backtest_run(draft=draft, days=60, now=now)
    assert got == _backtest_reference(draft=draft, days=60, now=now)
    if not kinds:
        assert got["contacts_evaluated"] == 0


@pytest.mark.django_db
def test_it_returns_a_handful_of_integers_in_four_queries(django_assert_num_queries):
    rng = random.Random(3)
    now = timezone.now()
    campaign = _dataset(rng, now)
    ScoringSettings.objects.create(pk=1, mql_threshold=20)
    for t in _templates(campaign):
        Rule.objects.create(name="current", **t)
    draft = engine.rules_enabled()
    # settings, enabled rules, the qualification counts, the decided counts (and, on
    # PostgreSQL, the fast path's planner settings)
    with django_assert_num_queries(5 if backtest_sql.supported() else 4):
        got = backtest.backtest_run(draft=draft, days=90, now=now)
    assert got["draft"] == got["current"]
    assert (
        got["contacts_evaluated"]
        == Contact.objects.filter(activities__occurred_at__gte=now - timedelta(days=90))
        .distinct()
        .count()
    )


@pytest.mark.django_db
def test_a_draft_rule_before_its_active_from_date_counts_nothing():
    """A fit rule and an inactivity rule active from next week qualify nobody today."""
    now = timezone.now()
    ScoringSettings.objects.create(pk=1, mql_threshold=10)
    contact = ContactFactory(job_title="VP", created_at=now - timedelta(days=90))
    Activity.objects.create(
        contact=contact, kind=K.EMAIL_OPENED, occurred_at=now - timedelta(days=40)
    )
    fit = Rule(name="VP", kind=Rule.Kind.FIT, field="job_title", operator="contains", value="VP",
               points=10)  # fmt: skip
    idle = Rule(name="idle", kind=Rule.Kind.NEGATIVE, negative=Rule.Negative.INACTIVE,
                inactive_days=30, points=-10)  # fmt: skip
    mqls = []
    for active_from in (None, now + timedelta(days=7)):
        fit.active_from = idle.active_from = active_from
        mqls.append(backtest.backtest_run(draft=[fit], days=60, now=now)["draft"]["mqls"])
        mqls.append(backtest.backtest_run(draft=[fit, idle], days=60, now=now)["draft"]["mqls"])
    assert mqls == [1, 0, 0, 0]
