"""The Celery app runs tasks through real workers: in-process on the memory broker, and as a
``celery -A crm worker`` subprocess against a loopback redis-server."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from crm.celery import app
from crm.celery import ping as ping_task

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_its_configuration_from_django_settings():
    assert app.conf.task_acks_late is True
    assert app.conf.task_serializer == "json"
    assert app.conf.worker_prefetch_multiplier == 1
    assert "crm.ping" in app.tasks


def test_it_runs_a_task_through_a_real_worker_on_the_memory_broker():
    assert app.conf.broker_url == "memory://"
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        result = ping_task.delay()
        assert result.get(timeout=10) == "pong"


@pytest.mark.redis
@pytest.mark.slow
def test_it_runs_a_task_through_a_celery_worker_process_on_redis(redis_url, tmp_path):
    broker = f"{redis_url}/0"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": f"{redis_url}/1",
        "LEADCYCLE_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "crm.settings",
    }
    env.pop("DATABASE_URL", None)  # the ping task needs no database
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "crm",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
            "-n",
            f"test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # A separate client app with the same task name: the caller shares nothing with the
        # worker but Redis.
        from celery import Celery

        client = Celery("client", broker=broker, backend=f"{redis_url}/1")
        result = client.send_task("crm.ping")
        assert result.get(timeout=60) == "pong"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        output = worker.stdout.read() if worker.stdout else ""
    assert "Traceback" not in output, output


@pytest.mark.django_db
def test_every_beat_task_runs_on_an_empty_database():
    for entry in app.conf.beat_schedule.values():
        module, _ = entry["task"].rsplit(".", 1)
        importlib.import_module(module)  # registers the task, as a worker's autodiscovery
        app.tasks[entry["task"]]()  # called as beat's message calls it: no arguments
