"""The production layout in miniature: two Celery workers and one beat on real PostgreSQL
and Redis, sending a nurture program and rescoring while ingestion goes on.

What it proves: with several workers taking ticks at once (beat every second plus ticks
enqueued by hand), every due email step is sent exactly once — one ``EmailSend`` per
(enrollment, step), one ``email_sent`` activity per send, one message per recipient and
step accepted by the mail backend — and a rescore racing with ingestion (two rescores on
two workers, even, while both workers drain the activity queue) leaves every contact's
ledger and score equal to a fresh computation, with no activity counted twice.
"""

import subprocess

import pytest
import redis
from celery import Celery

from .live import (
    PYTHON,
    ROOT,
    app_env,
    deliveries_by_recipient_and_subject,
    group_alive,
    live_call,
    migrate,
    sql_value,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
CONTACTS = 2000
REDIS_DB = 5


def _ready(processes, name) -> bool:
    return "ready." in processes.log(name) or "Ready" in processes.log(name)


def test_two_workers_and_beat_send_each_step_once_and_rescore_exactly(
    live_db, redis_url, processes, tmp_path
):
    broker = f"{redis_url}/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    env = app_env(database_url=live_db, broker_url=broker, work=tmp_path)
    migrate(env)
    live_call(env, "rules_create")
    setup = live_call(env, "drip", n=CONTACTS)
    assert setup["entered"] == CONTACTS
    program = setup["program"]

    processes.worker("worker1", env)
    processes.worker("worker2", env)
    wait_until(
        lambda: _ready(processes, "worker1") and _ready(processes, "worker2"),
        timeout=60,
        what="both workers to be ready",
    )
    processes.beat(env, tmp_path)
    # Ticks enqueued by hand on top of beat's: several ticks run at the same time.
    client = Celery("client", broker=broker)
    for _ in range(8):
        client.send_task("nurture.tasks.tick")

    def done() -> bool:
        live = sql_value(
            live_db,
            "SELECT count(*) FROM nurture_enrollment WHERE program_id = %s"
            " AND state IN ('active', 'waiting')",
            (program,),
        )
        return live == 0

    try:
        wait_until(done, timeout=240, interval=1, what="every enrollment to complete")
    except AssertionError:
        raise AssertionError(processes.all_logs()) from None

    state = live_call(env, "drip_state", program=program)
    assert state == {
        "sent": 2 * CONTACTS,
        "other": 0,
        "duplicate_steps": 0,
        "live": 0,
        "completed": CONTACTS,
        "activities": 2 * CONTACTS,
        "activity_message_ids": 2 * CONTACTS,
        "unmatched_activities": 0,
    }
    deliveries = deliveries_by_recipient_and_subject(tmp_path / "mail")
    assert len(deliveries) == 2 * CONTACTS
    assert set(deliveries.values()) == {1}, deliveries.most_common(3)
    # Both workers took ticks: the work really was shared.
    for name in ("worker1", "worker2"):
        assert "nurture.tasks.tick" in processes.log(name), name

    # --- a rescore while ingestion continues ------------------------------------------
    live_call(env, "ingest", tag="before", batches=4, size=500, seed=1)
    # The rule changes: every contact's ledger is stale until the rescore reaches it.
    live_call(env, "rule_points_set", name="Visit", points=3)
    ingestion = subprocess.Popen(
        [
            PYTHON,
            "manage.py",
            "shell",
            "-c",
            "from tests.reliability.live_setup import ingest\n"
            "ingest(tag='during', batches=25, size=200, seed=2, pause=0.05)",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: sql_value(
                live_db, "SELECT count(*) FROM crm_activity WHERE external_id LIKE 'during-%%'"
            ),
            timeout=60,
            interval=0.2,
            what="the concurrent ingestion to start",
        )
        runs = [live_call(env, "rescore_start") for _ in range(2)]
        output, _ = ingestion.communicate(timeout=180)
    finally:
        if ingestion.poll() is None:
            ingestion.kill()
            ingestion.wait()
    assert ingestion.returncode == 0, output

    def rescored() -> bool:
        rows = live_call(env, "rescore_runs")
        mine = [r for r in rows if r["pk"] in runs]
        assert not [r for r in mine if r["status"] == "failed"], mine
        return len(mine) == 2 and all(r["status"] == "done" for r in mine)

    try:
        wait_until(rescored, timeout=120, interval=1, what="both rescores to finish")
    except AssertionError:
        raise AssertionError(processes.all_logs()) from None

    # The ingested batches' handlers ran on the workers, from the activity queue
    # (crm.activity_queue): both workers drain it, in turns, while the rescores run.
    wait_until(
        lambda: sql_value(live_db, "SELECT count(*) FROM crm_queuedbatch") == 0,
        timeout=120,
        interval=0.5,
        what="the activity queue to drain",
    )
    assert "crm.tasks.drain_activity_queue" in processes.log("worker1") + processes.log("worker2")
    check = live_call(env, "scores_check")
    assert check["pairs"] > 1000
    assert check["ledger_mismatch_count"] == 0, check
    assert check["score_mismatch_count"] == 0, check
    assert check["duplicated_activity_entries"] == 0, check
    assert live_call(env, "activities_by_external_id", prefix="during-") == {
        "rows": 25 * 200,
        "distinct": 25 * 200,
    }

    # --- no orphans -------------------------------------------------------------------
    pids = [p.pid for p in processes.procs.values()]
    processes.stop_all()
    assert not [pid for pid in pids if group_alive(pid)]
    for name in ("worker1", "worker2", "beat"):
        assert "Traceback" not in processes.log(name), processes.log(name)[-4000:]
