"""Bounded load test of ingestion and tracking on loopback (``make bench``; not ``make test``).

Starts gunicorn (``--workers``, 4 threads each) on a database of its own — on the cluster
of ``DATABASE_URL`` when set (bench/run.sh), else on a throwaway PostgreSQL it starts —
then replays ``--events`` activity events ``--replays`` times, each replay in its own
shuffled order, from ``--clients`` concurrent clients in batches of ``--batch`` against
``POST /api/v1/activities/``, while ``--trackers`` more clients hit the open pixel and click
redirect with valid signed tokens. Then it checks: zero errors, zero lost, zero duplicates
(rows counted by ``external_id``), and appends throughput and p50/p95/p99 to BENCHMARKS.md.

    .venv/bin/python bench/load_test.py                      # the full size
    .venv/bin/python bench/load_test.py --events 2000 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability.live import (  # noqa: E402 — after the path is set
    PgCluster,
    Processes,
    app_env,
    django_script,
    free_port,
    live_call,
    live_database,
    migrate,
    wait_until,
)


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a click's 302 is the answer, not something to follow


OPENER = urllib.request.build_opener(NoRedirect)


def request(url: str, *, data: bytes | None = None, headers: dict | None = None):
    """(status, body, seconds); HTTP errors are statuses, not exceptions."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    started = time.perf_counter()
    try:
        with OPENER.open(req, timeout=60) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, body, time.perf_counter() - started


SETUP = """
from crm.models import Contact
from nurture.models import EmailSend
from nurture.services.sending import enrollments_advance
from nurture import tokens
from tests.reliability.live_setup import drip
drip(n={contacts}, prefix="load")
enrollments_advance()
sends = list(EmailSend.objects.filter(status="sent").values_list("message_id", flat=True)[:500])
base = "http://127.0.0.1:{port}"
result = {{
    "contacts": list(Contact.objects.values_list("pk", flat=True)),
    "tracking": [tokens.open_url(m).removeprefix(base) for m in sends]
    + [tokens.click_url(m, 0).removeprefix(base) for m in sends],
}}
"""


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="leadcycle-load-"))
    cluster = None
    processes = Processes(work / "logs")
    try:
        cluster_url = os.environ.get("DATABASE_URL", "")
        if not cluster_url.startswith(("postgres://", "postgresql://")):
            cluster = PgCluster()
            cluster_url = cluster.start()
        with live_database(cluster_url, f"loadtest_{uuid.uuid4().hex[:8]}") as database:
            port = free_port()
            env = app_env(
                database_url=database,
                broker_url="memory://",
                work=work,
                DEBUG="0",
                SECURE_HTTPS="0",
                ALLOWED_HOSTS="127.0.0.1",
                SITE_URL=f"http://127.0.0.1:{port}",
                CONN_MAX_AGE="60",
                LOG_LEVEL="WARNING",
            )
            print(f"load test: migrating {database}", flush=True)
            migrate(env)
            token = live_call(env, "api_token")
            data = django_script(env, SETUP.format(contacts=args.contacts, port=port))
            contacts, tracking = data["contacts"], data["tracking"]
            processes.gunicorn(env, port, workers=args.workers)
            wait_until(lambda: _healthy(port), timeout=60, interval=0.3, what="gunicorn to answer")
            figures = _load(args, port, token, contacts, tracking)
            counts = live_call(env, "activities_by_external_id", prefix=f"{figures['tag']}-")
            figures.update(rows=counts["rows"], distinct_external_ids=counts["distinct"])
            return figures
    finally:
        processes.stop_all()
        if cluster is not None:
            cluster.destroy()
        # Keep the server's log when a request failed: it holds the traceback.
        log = processes.log("gunicorn")
        if "Traceback" in log or "Error" in log:
            kept = Path(tempfile.gettempdir()) / f"leadcycle-load-{int(time.time())}.log"
            kept.write_text(log)
            print(f"load test: server log kept in {kept}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def _healthy(port: int) -> bool:
    try:
        return request(f"http://127.0.0.1:{port}/healthz")[0] == 200
    except OSError:
        return False


def _load(args, port: int, token: str, contacts: list[int], tracking: list[str]) -> dict:
    rng = random.Random(args.seed)
    tag = f"load{uuid.uuid4().hex[:6]}"
    now = dt.datetime.now(dt.UTC)
    events = [
        {
            "kind": rng.choice(["page_visit", "page_visit", "form_submitted", "content_download"]),
            "contact": rng.choice(contacts),
            "occurred_at": (now - dt.timedelta(seconds=rng.randint(60, 86400))).isoformat(),
            "external_id": f"{tag}-{i}",
            "url": "https://example.com/pricing",
        }
        for i in range(args.events)
    ]
    jobs: queue.Queue = queue.Queue()
    for _ in range(args.replays):
        order = events[:]
        rng.shuffle(order)
        for start in range(0, len(order), args.batch):
            jobs.put(order[start : start + args.batch])
    url = f"http://127.0.0.1:{port}/api/v1/activities/"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    lock = threading.Lock()
    ingest_ms: list[float] = []
    track_ms: list[float] = []
    errors: list = []
    totals = {"created": 0, "duplicates": 0, "tracking_hits": 0}
    deadline = time.monotonic() + args.max_seconds

    def ingester() -> None:
        while time.monotonic() < deadline:
            try:
                batch = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                status, body, seconds = request(
                    url, data=json.dumps(batch).encode(), headers=headers
                )
            except OSError as exc:
                with lock:
                    errors.append(("ingest", str(exc)))
                continue
            with lock:
                ingest_ms.append(seconds * 1000)
                if status in (200, 201):
                    result = json.loads(body)
                    totals["created"] += result["created"]
                    totals["duplicates"] += result["duplicates"]
                else:
                    errors.append(("ingest", status, body[:200]))

    def tracker(seed: int) -> None:
        local = random.Random(seed)
        while time.monotonic() < deadline:
            with lock:
                if totals["tracking_hits"] >= args.tracking:
                    return
                totals["tracking_hits"] += 1
            path = local.choice(tracking)
            try:
                status, _, seconds = request(f"http://127.0.0.1:{port}{path}")
            except OSError as exc:
                with lock:
                    errors.append(("tracking", str(exc)))
                continue
            with lock:
                track_ms.append(seconds * 1000)
                if status not in (200, 302):
                    errors.append(("tracking", status, path))

    started = time.perf_counter()
    threads = [threading.Thread(target=ingester) for _ in range(args.clients)]
    threads += [threading.Thread(target=tracker, args=(i,)) for i in range(args.trackers)]
    for t in threads:
        t.start()
    for t in threads[: args.clients]:
        t.join()
    ingest_wall = time.perf_counter() - started
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    submitted = args.events * args.replays
    return {
        "tag": tag,
        "events": args.events,
        "replays": args.replays,
        "submitted": submitted,
        "unsent_batches": jobs.qsize(),
        "clients": args.clients,
        "trackers": args.trackers,
        "batch": args.batch,
        "gunicorn_workers": args.workers,
        "created": totals["created"],
        "duplicates": totals["duplicates"],
        "errors": len(errors),
        "error_samples": errors[:5],
        "events_per_s": round(submitted / ingest_wall, 1),
        "ingest_requests": len(ingest_ms),
        "ingest_p50_ms": round(percentile(ingest_ms, 50), 1),
        "ingest_p95_ms": round(percentile(ingest_ms, 95), 1),
        "ingest_p99_ms": round(percentile(ingest_ms, 99), 1),
        "tracking_requests": len(track_ms),
        "tracking_per_s": round(len(track_ms) / wall, 1),
        "tracking_p50_ms": round(percentile(track_ms, 50), 1),
        "tracking_p95_ms": round(percentile(track_ms, 95), 1),
        "tracking_p99_ms": round(percentile(track_ms, 99), 1),
        "wall_s": round(wall, 1),
    }


def check(f: dict) -> list[str]:
    problems = []
    if f["errors"]:
        problems.append(f"{f['errors']} errors, e.g. {f['error_samples']}")
    if f["unsent_batches"]:
        problems.append(f"time limit hit: {f['unsent_batches']} batches never sent")
    if f["created"] != f["events"] or f["rows"] != f["events"]:
        problems.append(f"lost: {f['events']} events, {f['created']} created, {f['rows']} rows")
    if f["distinct_external_ids"] != f["rows"]:
        problems.append(f"duplicated: {f['rows']} rows, {f['distinct_external_ids']} distinct")
    if f["created"] + f["duplicates"] != f["submitted"]:
        problems.append(f"{f['submitted']} submitted ≠ created + duplicates")
    return problems


def record(f: dict, out: Path, passed: bool) -> None:
    import multiprocessing

    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## {stamp} — load test (bench/load_test.py)",
        "",
        f"- machine: {cpu}, {multiprocessing.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}; everything on loopback on this one machine",
        f"- gunicorn: {f['gunicorn_workers']} workers × 4 threads, PostgreSQL (fsync off)",
        f"- load: {f['events']:,} events × {f['replays']} replays in shuffled order = "
        f"{f['submitted']:,} submissions in batches of {f['batch']} from {f['clients']} "
        f"concurrent clients, plus {f['trackers']} clients hitting open pixel / click "
        "redirect with valid signed tokens",
        f"- result: **{'PASS' if passed else 'FAIL'}** — {f['errors']} errors, "
        f"{f['rows']:,} rows for {f['events']:,} distinct external_ids "
        f"({f['distinct_external_ids']:,} distinct stored), {f['duplicates']:,} duplicates "
        "dropped",
        "",
        "| endpoint | requests | throughput | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        f"| `POST /api/v1/activities/` (batch of {f['batch']}) | {f['ingest_requests']:,} | "
        f"{f['events_per_s']:,} events/s | {f['ingest_p50_ms']} | {f['ingest_p95_ms']} | "
        f"{f['ingest_p99_ms']} |",
        f"| `GET /t/o/…` + `GET /t/c/…` | {f['tracking_requests']:,} | "
        f"{f['tracking_per_s']:,} req/s | {f['tracking_p50_ms']} | {f['tracking_p95_ms']} | "
        f"{f['tracking_p99_ms']} |",
        "",
    ]
    with out.open("a") as fh:
        fh.write("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--replays", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--trackers", type=int, default=4)
    parser.add_argument("--tracking", type=int, default=3000, help="tracking requests in all")
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (2–4)")
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    figures = run(args)
    problems = check(figures)
    print(json.dumps(figures, indent=2, default=str))
    if not args.no_record:
        record(figures, args.out, passed=not problems)
    for p in problems:
        print(f"load test FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
