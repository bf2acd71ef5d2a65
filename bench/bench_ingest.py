"""Activity ingestion speed through the public API, against PostgreSQL ``COPY``.

Target (issue 3, PostgreSQL, 1M contacts / 20M activities): ``POST /api/v1/activities/``
in batches of 1,000 sustains >= 10,000 activities/s, with the "activities recorded"
handlers configured at the time. The same rows loaded with ``COPY`` give the ceiling;
the ratio says what validation, idempotency, the ORM and the handlers cost.

The handlers run from the activity queue (crm.activity_queue, production's default): a
request stores the batch and queues it, a worker applies queued batches in bulk. So each
benchmark reports what a client sees (accepted activities/s) and the sustained figure,
which counts the handlers' work too: activities / (posting time + draining time) in
process, and in the served benchmark the wall time until every batch is posted *and*
drained by a real worker running alongside.

The benchmark posts engagement activities (page visits, downloads, forms …) with external
ids for existing contacts, then deletes the activities it inserted. Handlers may have
left derived rows (score entries, enrollments, stage changes) on those contacts: run it
on a benchmark database, never on one you care about.
"""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta

BATCH = 1_000
BATCHES = int(os.environ.get("BENCH_INGEST_BATCHES", "50"))
KINDS = [
    ("page_visit", "/pricing", {}),
    ("page_visit", "/blog/mql-vs-sql", {}),
    ("page_visit", "/product", {}),
    ("content_download", "/resources", {"content_type": "e-book"}),
    ("form_submitted", "/forms/contact-us", {"form": "contact-us"}),
    ("social_like", "", {"network": "linkedin"}),
    ("webinar_registered", "/webinars", {"webinar": "Monthly product tour"}),
]


def _batches(run: str, contact_ids: list[int], campaign_id: int | None, now) -> list[list[dict]]:
    rng = random.Random(run)
    batches = []
    for b in range(BATCHES + 1):  # +1: the first one warms up and is not timed
        items = []
        for i in range(BATCH):
            kind, path, details = KINDS[rng.randrange(len(KINDS))]
            items.append(
                {
                    "kind": kind,
                    "contact": contact_ids[rng.randrange(len(contact_ids))],
                    "occurred_at": (now - timedelta(seconds=rng.randrange(86_400))).isoformat(),
                    "external_id": f"{run}-{b}-{i}",
                    "url": f"https://www.leadcycle.example{path}" if path else "",
                    "campaign": campaign_id if rng.random() < 0.2 else None,
                    "details": details,
                }
            )
        batches.append(items)
    return batches


def _copy_rows(batches: list[list[dict]], run: str, now):
    """The same activities as table rows for COPY (own external ids, so both can coexist)."""
    import json
    from datetime import datetime

    for b, items in enumerate(batches):
        for i, item in enumerate(items):
            yield (
                item["contact"],
                item["kind"],
                datetime.fromisoformat(item["occurred_at"]),
                now,
                item["campaign"],
                f"{run}-copy-{b}-{i}",
                "",
                item["url"],
                False,
                json.dumps(item["details"]),
            )


def bench_activity_ingestion(env):
    """Batches of 1,000 through POST /api/v1/activities/ vs COPY of the same rows, with
    the configured "activities recorded" handlers, queued and drained in process after the
    posts (the target: the sustained rate counts both)."""
    return _ingestion(env)


def bench_activity_ingestion_inline(env):
    """The same with the handlers inside each request's transaction (no queue), for
    comparison: what the queue's bulk drain saves."""
    from django.test import override_settings

    with override_settings(ACTIVITY_HANDLERS_QUEUED=False):
        figures = _ingestion(env)
    figures["target"] = "(handlers inline, for comparison: no target of its own)"
    figures.pop("met")
    return figures


def bench_activity_ingestion_core(env):
    """The same without handlers: what validation, idempotency and the insert cost."""
    from django.test import override_settings

    with override_settings(ACTIVITIES_RECORDED_HANDLERS=[]):
        figures = _ingestion(env)
    figures["target"] = "(core path, handlers off: no target of its own)"
    figures.pop("met")
    return figures


def _ingestion(env):
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from crm import bulkload, campaign_members
    from crm.activity_queue import queue_drain
    from crm.models import Activity, Campaign, Contact

    now = timezone.now()
    run = f"bench-ingest-{time.time_ns()}"
    contact_ids = list(Contact.objects.order_by("-id").values_list("pk", flat=True)[:20_000])
    campaign_id = Campaign.objects.values_list("pk", flat=True).first()
    batches = _batches(run, contact_ids, campaign_id, now)

    latencies = []
    try:
        for n, items in enumerate(batches):
            started = time.perf_counter()
            response = env.api.post("/api/v1/activities/", items, format="json")
            elapsed = time.perf_counter() - started
            assert response.status_code == 201, (response.status_code, response.content[:500])
            assert response.json()["created"] == BATCH, response.json()
            if n:
                latencies.append(elapsed)
            else:
                queue_drain()  # the warm-up batch's handlers, untimed
        api_rate = BATCH * len(latencies) / sum(latencies)
        drain_s, drained_n = 0.0, 0
        if settings.ACTIVITY_HANDLERS_QUEUED:
            started = time.perf_counter()
            drained = queue_drain()
            drain_s = time.perf_counter() - started
            assert drained.failed == 0, drained
            drained_n = drained.activities
        sustained = BATCH * len(latencies) / (sum(latencies) + drain_s)

        timed = batches[1:]
        rows = list(_copy_rows(timed, run, now))
        fields = [
            "contact", "kind", "occurred_at", "recorded_at", "campaign", "external_id",
            "message_id", "url", "is_machine", "details",
        ]  # fmt: skip
        copy_rate = None
        if bulkload.uses_copy():
            started = time.perf_counter()
            with transaction.atomic():
                bulkload.rows_load(model=Activity, fields=fields, rows=rows)
            copy_rate = len(rows) / (time.perf_counter() - started)
    finally:
        queue_drain()  # nothing left queued for the activities deleted below
        deleted, _ = Activity.objects.filter(external_id__startswith=run).delete()
        # The posted contacts' campaign members as their remaining activities say.
        campaign_members.members_rebuild(contact_ids=contact_ids)

    return {
        "contacts": env.n_contacts,
        "activities_posted": BATCH * len(latencies),
        "api_accepted_per_s": round(api_rate),
        "drain_s": round(drain_s, 2),
        "drain_activities_per_s": round(drained_n / drain_s) if drained_n else None,
        "sustained_activities_per_s": round(sustained),
        "batch_p50_ms": round(env.percentile(latencies, 50) * 1000, 1),
        "batch_p95_ms": round(env.percentile(latencies, 95) * 1000, 1),
        "copy_activities_per_s": round(copy_rate) if copy_rate else None,
        "api_to_copy_ratio": round(api_rate / copy_rate, 3) if copy_rate else None,
        "sustained_to_copy_ratio": round(sustained / copy_rate, 3) if copy_rate else None,
        "rows_cleaned_up": deleted,
        "target": "sustained >= 10,000 activities/s (posting + handlers)",
        "met": sustained >= 10_000,
    }


def bench_activity_ingestion_served(env):
    """Sustained ingestion as a deployment serves it: gunicorn (production settings, one
    process per core plus one, so Python and PostgreSQL work overlap), one Celery worker
    draining the activity queue (filesystem broker, as `make run`), and concurrent clients
    posting 1,000-activity batches over HTTP, with every configured handler.

    This is the throughput figure of the target ("sustained"): activities over the wall
    time until every batch is posted and drained; the accepted rate is what clients see.
    """
    import json
    import shutil
    import tempfile
    import threading
    import urllib.request
    from pathlib import Path

    from django.conf import settings
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from crm import campaign_members
    from crm.activity_queue import queue_drain
    from crm.models import Activity, Campaign, Contact, QueuedBatch
    from tests.reliability.live import Processes, app_env, free_port, wait_until

    workers = int(os.environ.get("BENCH_SERVED_WORKERS", str((os.cpu_count() or 2) + 1)))
    clients = int(os.environ.get("BENCH_SERVED_CLIENTS", str(2 * workers)))
    now = timezone.now()
    run = f"bench-served-{time.time_ns()}"
    contact_ids = list(Contact.objects.order_by("-id").values_list("pk", flat=True)[:20_000])
    campaign_id = Campaign.objects.values_list("pk", flat=True).first()
    bodies = [json.dumps(b).encode() for b in _batches(run, contact_ids, campaign_id, now)]
    token = Token.objects.get_or_create(user=env.admin)[0].key

    work = Path(tempfile.mkdtemp(prefix="leadcycle-served-"))
    processes = Processes(work / "logs")
    port = free_port()
    database = settings.DATABASES["default"]
    for folder in ("out", "processed", "control"):
        (work / "var" / "broker" / folder).mkdir(parents=True, exist_ok=True)
    server_env = app_env(
        database_url=os.environ["DATABASE_URL"],
        broker_url="filesystem://",
        work=work,
        DEBUG="0",
        SECURE_HTTPS="0",
        ALLOWED_HOSTS="127.0.0.1",
        SITE_URL=f"http://127.0.0.1:{port}",
        CONN_MAX_AGE="600",
        LOG_LEVEL="WARNING",
    )
    assert database["ENGINE"].endswith("postgresql"), "served ingestion runs on PostgreSQL"
    url = f"http://127.0.0.1:{port}/api/v1/activities/"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def post(body: bytes) -> dict:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            return json.loads(response.read())

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):  # noqa: S310
                return True
        except OSError:
            return False

    created = []
    errors = []
    latencies = []
    server_log = None
    lock = threading.Lock()
    try:
        processes.gunicorn(server_env, port, workers=workers)
        processes.worker("worker", server_env, concurrency=1)  # drains take turns anyway
        wait_until(healthy, timeout=60, interval=0.3, what="gunicorn to answer")
        for body in bodies[:workers]:  # warm every worker's connection and code paths
            post(body)
        wait_until(
            lambda: not QueuedBatch.objects.exists(),
            timeout=120,
            interval=0.2,
            what="the worker to drain the warm-up batches",
        )
        queue = list(reversed(bodies[workers:]))

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                started = time.perf_counter()
                try:
                    result = post(body)
                except OSError as exc:
                    with lock:
                        errors.append(str(exc))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    created.append(result["created"])

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        posted_wall = time.perf_counter() - started
        backlog = QueuedBatch.objects.pending().count()
        wait_until(
            lambda: not QueuedBatch.objects.pending().exists(),
            timeout=1800,
            interval=0.1,
            what="the worker to drain the queue",
        )
        wall = time.perf_counter() - started
        parked = QueuedBatch.objects.count()
    finally:
        processes.stop_all()
        queue_drain()  # whatever a failed run left queued, before the clean-up
        log = processes.log("gunicorn") + processes.log("worker")
        if errors or "Traceback" in log:  # keep the server's and worker's tracebacks
            kept = Path(tempfile.gettempdir()) / f"{run}-served.log"
            kept.write_text(log)
            server_log = str(kept)
        shutil.rmtree(work, ignore_errors=True)
        deleted, _ = Activity.objects.filter(external_id__startswith=run).delete()
        campaign_members.members_rebuild(contact_ids=contact_ids)  # as in _ingestion
    rate = sum(created) / wall if wall else 0
    return {
        "contacts": env.n_contacts,
        "gunicorn_workers": workers,
        "celery_workers": 1,
        "clients": clients,
        "activities_posted": sum(created),
        "errors": len(errors),
        "error_samples": errors[:3],
        "server_log": server_log,
        "accepted_per_s": round(sum(created) / posted_wall) if posted_wall else 0,
        "queued_batches_when_posting_ended": backlog,
        "parked_batches": parked,
        "activities_per_s": round(rate),
        "batch_p50_ms": round(env.percentile(latencies, 50) * 1000, 1) if latencies else None,
        "batch_p95_ms": round(env.percentile(latencies, 95) * 1000, 1) if latencies else None,
        "rows_cleaned_up": deleted,
        "target": "api >= 10,000 activities/s sustained, all handlers",
        "met": rate >= 10_000 and not errors and not parked,
    }
