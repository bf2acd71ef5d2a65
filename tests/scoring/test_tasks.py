"""The Celery tasks are thin: they take ids and call the services."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scoring import tasks
from scoring.models import LedgerEntry, RescoreRun
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


def test_a_run_taken_by_another_execution_is_not_run_again():
    FitRuleFactory(points=15)
    ContactFactory(job_title="VP Sales")
    running = RescoreRun.objects.create(total=1, status="running", task_id="the-first-task")
    done = RescoreRun.objects.create(total=1, status="done", processed=1)
    tasks.rescore.apply(args=[running.pk], task_id="a-duplicate")
    tasks.rescore.apply(args=[done.pk])
    running.refresh_from_db()
    assert (running.status, running.processed, running.task_id) == ("running", 0, "the-first-task")
    assert not LedgerEntry.objects.exists()


def test_the_task_that_took_a_run_resumes_it_when_its_message_is_redelivered():
    FitRuleFactory(points=15)
    ContactFactory(job_title="VP Sales")
    run = RescoreRun.objects.create(total=1, status="running", task_id="killed-worker-task")
    tasks.rescore.apply(args=[run.pk], task_id="killed-worker-task")  # late ack: redelivered
    run.refresh_from_db()
    assert (run.status, run.processed) == ("done", 1)


def test_the_pick_up_starts_the_oldest_stale_queued_run_once():
    ContactFactory()
    old = timezone.now() - timedelta(minutes=10)
    first = RescoreRun.objects.create(total=1)
    second = RescoreRun.objects.create(total=1)
    RescoreRun.objects.filter(pk__in=[first.pk, second.pk]).update(created_at=old)
    assert tasks.rescores_pick_up.apply().result == first.pk
    assert tasks.rescores_pick_up.apply().result == second.pk
    assert tasks.rescores_pick_up.apply().result is None
    assert set(RescoreRun.objects.values_list("status", flat=True)) == {"done"}
