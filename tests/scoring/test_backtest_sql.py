"""The PostgreSQL back-test aggregate (bit strings of days and weeks, in parallel workers)
counts exactly what the portable aggregate (``COUNT(DISTINCT …)``) counts."""

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from crm.models import Activity
from crm.models.choices import ActivityKind
from scoring import backtest, backtest_sql
from scoring.models import Rule
from tests.factories import ContactFactory

from .test_backtest import _dataset, _templates

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the fast path is PostgreSQL's"
)

K = ActivityKind
F = Rule.Frequency
THRESHOLDS = [-20, 0, 1, 3, 8, 20, 50, 120]


def _both_paths(monkeypatch, *, sides, days, now, min_fit=None):
    """``qualified_counts`` per threshold, on the fast path and on the portable one."""
    since = now - timedelta(days=days)
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(backtest_sql, "supported", lambda fast=fast: fast)
        out[fast] = [
            backtest.qualified_counts(
                sides=sides, since=since, now=now, threshold=t, min_fit=min_fit
            )
            for t in THRESHOLDS
        ]
    return out[True], out[False]


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(3))
def test_it_gives_every_contact_the_portable_window_score(monkeypatch, seed):
    rng = random.Random(seed)
    now = timezone.now()
    campaign = _dataset(rng, now)
    templates = _templates(campaign)
    sides = {
        "draft": [Rule(name="draft", **t) for t in rng.sample(templates, rng.randint(1, 14))],
        "current": [Rule(name="current", **t) for t in rng.sample(templates, rng.randint(0, 14))],
    }
    for days in (7, 365):
        fast, portable = _both_paths(
            monkeypatch, sides=sides, days=days, now=now, min_fit=rng.choice([None, 0, 10])
        )
        assert fast == portable, days


@pytest.mark.django_db
@pytest.mark.parametrize("tz", ["UTC", "America/Sao_Paulo", "Pacific/Kiritimati", "Asia/Kolkata"])
def test_it_counts_every_day_and_week_of_a_long_window_in_any_time_zone(monkeypatch, tz):
    """Hundreds of distinct days (a bit string far wider than a machine word), several
    activities a day around local midnight, windows of every length up to a year, with
    and without a half-life (the halvings share the days' bit string)."""
    now = timezone.now()
    busy, quiet = ContactFactory(), ContactFactory()
    items = []
    for day in range(400):
        for hours in (0.2, 11.5, 23.9):
            at = now - timedelta(days=day, hours=hours)
            items.append(Activity(contact=busy, kind=K.PAGE_VISIT, occurred_at=at))
        if day % 9 == 0:
            items.append(
                Activity(contact=quiet, kind=K.PAGE_VISIT, occurred_at=now - timedelta(days=day))
            )
    Activity.objects.bulk_create(items)
    rules = [
        Rule(name="daily", kind=Rule.Kind.ENGAGEMENT, activity_kind=K.PAGE_VISIT,
             frequency=F.ONCE_PER_DAY, points=1),
        Rule(name="weekly", kind=Rule.Kind.ENGAGEMENT, activity_kind=K.PAGE_VISIT,
             frequency=F.ONCE_PER_WEEK, points=3),
        Rule(name="daily, fading", kind=Rule.Kind.ENGAGEMENT, activity_kind=K.PAGE_VISIT,
             frequency=F.ONCE_PER_DAY, half_life_days=2, points=1),
        Rule(name="weekly, fading", kind=Rule.Kind.ENGAGEMENT, activity_kind=K.PAGE_VISIT,
             frequency=F.ONCE_PER_WEEK, half_life_days=5, cap=40, points=-4),
    ]  # fmt: skip
    with timezone.override(tz):
        for days in (1, 7, 8, 64, 65, 365):
            for split in ([rules[0]], [rules[1]], rules[:2], rules[2:]):
                sides = {"draft": split}
                fast, portable = (
                    _window_scores(monkeypatch, fast=f, sides=sides, days=days, now=now)
                    for f in (True, False)
                )
                assert fast == portable, (days, [r.name for r in split])
                if split == [rules[0]]:
                    assert fast[0] in (days, days + 1)  # the busy contact acts every day


def _window_scores(monkeypatch, *, fast, sides, days, now):
    """The two contacts' window scores on one path, highest first: for each, the highest
    threshold at which that many contacts qualify (found by bisection)."""
    monkeypatch.setattr(backtest_sql, "supported", lambda: fast)
    since = now - timedelta(days=days)

    def qualified(threshold):
        counts = backtest.qualified_counts(
            sides=sides, since=since, now=now, threshold=threshold, min_fit=None
        )
        return counts["draft_mqls"]

    scores = []
    for n in (1, 2):
        lo, hi = -400, 1100  # qualified(lo) >= n > qualified(hi): scores are -160 to ~600
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if qualified(mid) >= n else (lo, mid)
        scores.append(lo)
    return scores
