"""Faults, each against the real thing: a worker SIGKILLed mid-batch, the broker going away
and coming back, a mail server refusing mail, the database restarting during ingestion.

The delivery guarantee under test is the one documented in ``nurture/services/sending.py``:
a batch commits its ``EmailSend`` rows as "sending" (a claim, leased) before handing the
mail to the backend, and each chunk's outcome after its hand-over, so every due step is
sent exactly once, except that a message of the chunk being handed over when the worker
died, which the backend had already accepted, is delivered at most once more (the claim
is taken back when its lease ends). Nothing is ever lost.
"""

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
import redis
from celery import Celery
from django.urls import reverse
from django.utils import timezone

from nurture.models import EmailSend, Enrollment, Step
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import BACKOFF, MAX_ATTEMPTS, enrollments_advance
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory

from .live import (
    PgCluster,
    RedisServer,
    app_env,
    deliveries_by_recipient_and_subject,
    free_port,
    group_alive,
    live_call,
    migrate,
    sql,
    sql_value,
    wait_until,
)
from .smtp import RefusingSMTPServer


def _live_enrollments(url: str) -> int:
    return sql_value(
        url, "SELECT count(*) FROM nurture_enrollment WHERE state IN ('active', 'waiting')"
    )


def _wait_all_sent(processes, url: str, *, timeout: float) -> None:
    try:
        wait_until(
            lambda: _live_enrollments(url) == 0,
            timeout=timeout,
            interval=1,
            what="every enrollment to complete",
        )
    except AssertionError:
        raise AssertionError(processes.all_logs()) from None


def _exactly_once(env, program: int, n: int) -> None:
    assert live_call(env, "drip_state", program=program) == {
        "sent": 2 * n,
        "other": 0,
        "duplicate_steps": 0,
        "live": 0,
        "completed": n,
        "activities": 2 * n,
        "activity_message_ids": 2 * n,
        "unmatched_activities": 0,
    }


# --- (a) a worker killed mid-batch ---------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_resends_at_most_the_accepted(
    live_db, redis_url, processes, tmp_path
):
    n = 400
    broker = f"{redis_url}/6"
    redis.Redis.from_url(broker).flushdb()
    lease = "20"  # seconds a dead worker's claim waits before it is taken back
    slow = app_env(
        database_url=live_db,
        broker_url=broker,
        work=tmp_path,
        EMAIL_BACKEND="tests.reliability.backends.SlowFileBackend",
        NURTURE_SEND_LEASE_SECONDS=lease,
    )
    migrate(slow)
    program = live_call(slow, "drip", n=n)["program"]
    mail = tmp_path / "mail"

    worker = processes.worker("doomed", slow, concurrency=1)
    Celery("client", broker=broker).send_task("nurture.tasks.tick")
    # The first batch (1,000 ≥ n enrollments, 10 ms a message) is well under way…
    wait_until(
        lambda: len(deliveries_by_recipient_and_subject(mail)) >= 100,
        timeout=90,
        interval=0.1,
        what="the first batch to be half sent",
    )
    processes.kill("doomed", signal.SIGKILL)  # …when the worker and its pool die.
    assert not group_alive(worker.pid)
    accepted = deliveries_by_recipient_and_subject(mail)
    assert 100 <= len(accepted) < n
    # The claim had committed: the chunks confirmed before the kill are "sent", the rest
    # is still "sending" (the chunk being handed over, and those after it).
    wait_until(
        lambda: (
            sql_value(
                live_db,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            == 0
        ),
        timeout=30,
        what="PostgreSQL to end the dead worker's sessions (and roll back an open one)",
    )
    statuses = dict(sql(live_db, "SELECT status, count(*) FROM nurture_emailsend GROUP BY status"))
    assert set(statuses) <= {"sent", "sending"}
    assert sum(statuses.values()) == n
    claimed = {
        email
        for (email,) in sql(
            live_db,
            "SELECT c.email FROM nurture_emailsend s JOIN crm_contact c ON c.id = s.contact_id"
            " WHERE s.status = 'sending'",
        )
    }
    assert claimed
    assert _live_enrollments(live_db) == n

    # A fresh worker (normal speed) and beat take over.
    env = app_env(
        database_url=live_db, broker_url=broker, work=tmp_path, NURTURE_SEND_LEASE_SECONDS=lease
    )
    processes.worker("replacement", env)
    processes.beat(env, tmp_path)
    _wait_all_sent(processes, live_db, timeout=180)

    _exactly_once(env, program, n)
    delivered = deliveries_by_recipient_and_subject(mail)
    assert len(delivered) == 2 * n  # every step reached every contact…
    twice = {key for key, count in delivered.items() if count == 2}
    assert max(delivered.values()) <= 2
    # …and only what the backend had accepted from the unconfirmed chunk arrived twice.
    assert twice == {key for key in accepted if key[0] in claimed}


# --- (b) the broker going away and coming back ---------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_ticks_resume_after_the_broker_comes_back_and_nothing_is_sent_twice(
    live_db, processes, tmp_path
):
    broker_server = RedisServer(tmp_path / "redis")
    broker_server.start()
    try:
        env = app_env(database_url=live_db, broker_url=f"{broker_server.url}/0", work=tmp_path)
        migrate(env)
        first = live_call(env, "drip", n=200, prefix="early")["program"]
        processes.worker("worker", env)
        processes.beat(env, tmp_path)
        _wait_all_sent(processes, live_db, timeout=120)

        broker_server.stop()
        # Work becomes due while the broker is away; beat and the worker keep retrying.
        second = live_call(env, "drip", n=200, prefix="late")["program"]
        time.sleep(5)
        assert _live_enrollments(live_db) == 200
        broker_server.start()

        _wait_all_sent(processes, live_db, timeout=180)
        _exactly_once(env, first, 200)
        _exactly_once(env, second, 200)
        delivered = deliveries_by_recipient_and_subject(tmp_path / "mail")
        assert len(delivered) == 800
        assert set(delivered.values()) == {1}
        pids = [p.pid for p in processes.procs.values()]
        processes.stop_all()
        assert not [pid for pid in pids if group_alive(pid)]
    finally:
        broker_server.stop()


# --- (c) a mail server refusing mail ---------------------------------------------------------


def _smtp(settings, port: int) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "error"), [("refuse", "Mailbox unavailable"), ("disconnect", "unexpectedly closed")]
)
def test_a_refusing_mail_server_is_retried_with_back_off_then_marked_failed(
    settings, marketing_client, mode, error
):
    program = ProgramFactory()
    StepFactory(program=program)
    contact = ContactFactory(email="refused@example.com")
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    now = timezone.now()
    with RefusingSMTPServer(mode=mode) as server:
        _smtp(settings, server.port)
        enrollments_advance(now=now)
        send = EmailSend.objects.get()
        assert (send.status, send.attempts) == (EmailSend.Status.RETRYING, 1)
        for attempt, wait in enumerate(BACKOFF, start=2):
            due = Enrollment.objects.get().next_run_at
            assert due == now + wait  # back-off: 5 min, 30 min, 2 h
            enrollments_advance(now=due - timedelta(seconds=1))  # not yet due: untouched
            assert EmailSend.objects.get().attempts == attempt - 1
            now = due
            enrollments_advance(now=now)
            assert EmailSend.objects.get().attempts == attempt
        assert server.attempts == MAX_ATTEMPTS
        # Failed for good: later ticks leave it alone.
        enrollments_advance(now=now + timedelta(days=1))
        assert server.attempts == MAX_ATTEMPTS

    send = EmailSend.objects.get()
    assert send.status == EmailSend.Status.FAILED
    assert send.attempts == MAX_ATTEMPTS
    assert error.lower() in send.error.lower()
    assert send.sent_at is None
    assert not contact.activities.filter(kind="email_sent").exists()

    page = marketing_client.get(reverse("nurture:program-detail", args=[program.pk]))
    assert page.status_code == 200
    failed = page.content.decode().split("Failed sends", 1)[1]
    assert "refused@example.com" in failed
    assert f'<td class="num">{MAX_ATTEMPTS}</td>' in failed


@pytest.mark.django_db
def test_an_unreachable_mail_server_leaves_every_step_due_for_the_next_tick(settings):
    program = ProgramFactory()
    StepFactory(program=program)
    StepFactory(program=program, kind=Step.Kind.END)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    _smtp(settings, free_port())  # nothing listens there
    with pytest.raises(OSError):
        enrollments_advance()
    assert not EmailSend.objects.exists()
    assert Enrollment.objects.due(timezone.now()).count() == 1
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert enrollments_advance().sent == 1


# --- (d) the database restarting during ingestion ------------------------------------------


def _post(url: str, token: str, items: list[dict]) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(items).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"raw": body[:300].decode(errors="replace")}
        return exc.code, dict(exc.headers), parsed


@pytest.mark.postgres
@pytest.mark.slow
def test_clients_get_a_503_while_the_database_restarts_and_retries_store_each_once(
    cluster_url, processes, tmp_path
):
    cluster = PgCluster()
    try:
        database = cluster.start()
        env = app_env(
            database_url=database,
            broker_url="memory://",
            work=tmp_path,
            CONN_MAX_AGE="60",  # production's persistent connections break on a restart
        )
        migrate(env)
        token = live_call(env, "api_token")
        contacts = live_call(env, "contacts_create", n=200, prefix="dbr")
        port = free_port()
        processes.gunicorn(env, port, workers=2)
        wait_until(lambda: _healthy(port), timeout=60, interval=0.3, what="gunicorn to answer")
        url = f"http://127.0.0.1:{port}/api/v1/activities/"
        clients, batches_each, size = 6, 40, 25
        statuses: list[int] = []
        bad: list = []
        progress = [0]
        lock = threading.Lock()

        def client(c: int) -> None:
            for b in range(batches_each):
                items = [
                    {
                        "kind": "page_visit",
                        "contact": contacts[(c * 7 + b * 3 + i) % len(contacts)],
                        "occurred_at": timezone.now().isoformat(),
                        "external_id": f"dbr-{c}-{b}-{i}",
                    }
                    for i in range(size)
                ]
                for _attempt in range(200):
                    try:
                        code, headers, body = _post(url, token, items)
                    except OSError as exc:  # connection reset while a worker restarts
                        with lock:
                            bad.append(("connection", str(exc)))
                        time.sleep(0.3)
                        continue
                    with lock:
                        statuses.append(code)
                    if code in (200, 201):
                        with lock:
                            progress[0] += 1
                        break
                    if code == 503:
                        if headers.get("Retry-After") != "5" or "retry" not in body["detail"]:
                            with lock:
                                bad.append((code, headers, body))
                        time.sleep(0.3)  # shorter than Retry-After: a bounded test
                        continue
                    with lock:
                        bad.append((code, body))
                    return
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        wait_until(lambda: progress[0] >= 30, timeout=60, interval=0.1, what="ingestion")
        cluster.stop_server()
        time.sleep(3)
        cluster.start_server()
        for t in threads:
            t.join(timeout=240)
        assert not any(t.is_alive() for t in threads)

        assert not [b for b in bad if b[0] != "connection"], bad[:5]
        assert 503 in statuses, "the restart was not noticed by any request"
        assert set(statuses) <= {200, 201, 503}
        assert progress[0] == clients * batches_each
        total = clients * batches_each * size
        assert live_call(env, "activities_by_external_id", prefix="dbr-") == {
            "rows": total,
            "distinct": total,
        }
        assert "Traceback" not in processes.log("gunicorn")
    finally:
        processes.stop_all()
        cluster.destroy()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_a_database_error_in_a_view_becomes_a_json_503_with_retry_after(rf):
    from django.db import InterfaceError, OperationalError

    from crm.middleware import DatabaseUnavailableMiddleware

    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    request = rf.post("/api/v1/activities/")
    for exc in (OperationalError("server closed the connection"), InterfaceError("closed")):
        response = middleware.process_exception(request, exc)
        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert "retry" in json.loads(response.content)["detail"]
    assert middleware.process_exception(request, ValueError("a bug")) is None  # still a 500
