"""The Celery tasks are thin: they take ids and call the services."""

import pytest

from scoring import tasks
from scoring.models import RescoreRun
from tests.factories import ContactFactory

from .factories import FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.django_db


def test_the_rescore_task_runs_the_queued_run_to_done():
    FitRuleFactory(points=15)
    c = ContactFactory(job_title="VP Sales")
    run = RescoreRun.objects.create(total=1)
    tasks.rescore(run.pk)
    run.refresh_from_db()
    c.refresh_from_db()
    assert (run.status, run.processed, run.percent) == ("done", 1, 100)
    assert c.scorecard.score == 15


def test_the_decay_tick_does_nothing_without_time_dependent_rules():
    NegativeRuleFactory()  # unsubscribed: not time-dependent
    ContactFactory()
    assert tasks.decay_tick() == 0
