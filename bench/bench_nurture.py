"""Nurture sending speed: advance 100k due enrollments into the locmem mail backend.

Target (issue 5, PostgreSQL): >= 1,000 emails/s per worker, including rendering (merge
fields, link rewriting, open pixel, signed tokens), the EmailSend rows, the enrollment
updates and the email_sent activities (crm.ingest with every "activities recorded"
handler). A worker runs the beat task's function ``nurture.tasks.tick`` (entry
triggers, then batches of ``SELECT … FOR UPDATE SKIP LOCKED``); one process = one
worker. ``bench_nurture_send_two_workers`` forks two such processes on the same
enrollments and checks that every email went out exactly once. Each run reports the
wall-clock rate, the workers' CPU seconds, the PostgreSQL backends' CPU seconds (read
from /proc when PostgreSQL runs on this host) and the load average: on a shared box the
wall clock swings with the load, CPU per email much less. (Celery/Redis workers: see
tests/reliability.)

Standalone: ``python bench/bench_nurture.py --n 20000 [--workers 2]`` (uses DATABASE_URL,
creates and removes its own contacts, campaign and program).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

N_ENROLLMENTS = int(os.environ.get("BENCH_NURTURE_N", "100000"))
HTML = """<html><body><p>Hi {{ contact.first_name|default:"there" }},</p>
<p>{{ company.name }} teams like yours read <a href="https://example.com/guide">our guide</a>
and <a href="https://example.com/webinar?src=mail&amp;x=1">the webinar</a>.</p>
<p>{{ owner.name }}<br>{{ owner.signature|linebreaksbr }}</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""


def _setup(n: int):
    from django.utils import timezone

    from crm.models import Campaign, Contact
    from nurture.models import EmailTemplate, Enrollment, Program, Step

    now = timezone.now()
    campaign = Campaign.objects.create(name="bench: nurture send", status="active")
    program = Program.objects.create(name="bench: nurture send", campaign=campaign, status="active")
    template = EmailTemplate.objects.create(
        name="bench", subject="Hello {{ contact.first_name }}", html_body=HTML,
        text_body="Hi {{ contact.first_name }}, https://example.com/guide {{ unsubscribe_url }}",
    )  # fmt: skip
    step = Step.objects.create(program=program, position=1, kind="email", template=template)
    Contact.objects.bulk_create(
        [
            Contact(email=f"bench-nurture-{i}@bench.example", first_name=f"B{i}", created_at=now)
            for i in range(n)
        ],
        batch_size=5000,
    )
    ids = Contact.objects.filter(email__startswith="bench-nurture-").values_list("pk", flat=True)
    Enrollment.objects.bulk_create(
        [
            Enrollment(
                contact_id=cid,
                program=program,
                state="active",
                current_step=step,
                next_run_at=now,
                entered_at=now,
                source="bench",
            )  # fmt: skip
            for cid in ids.iterator(chunk_size=5000)
        ],
        batch_size=5000,
    )
    return campaign, program, template


def _cleanup(campaign, program, template) -> None:
    from crm.models import Activity, Contact

    Activity.objects.filter(campaign=campaign).delete()
    program.delete()
    template.delete()
    campaign.delete()
    Contact.objects.filter(email__startswith="bench-nurture-").delete()


def _pg_backend_cpu() -> float | None:
    """CPU seconds this connection's PostgreSQL backend has used (same host only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # PostgreSQL on another host
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker() -> dict:
    """One worker: the beat task's own function (triggers, then batches until nothing
    is due), sending into the locmem backend; its wall clock, CPU and PostgreSQL CPU."""
    from django.core import mail
    from django.test import override_settings

    from nurture import tokens
    from nurture.tasks import tick

    tokens.open_url("warm-up")  # a long-lived worker has its URL resolver loaded already
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        mail.outbox = []
        pg_start = _pg_backend_cpu()
        start, cpu_start = time.perf_counter(), time.process_time()
        # One call with the whole backlog: one "now", so each enrollment is advanced
        # once (its email), as consecutive beat ticks would do 50 s at a time.
        result = tick(max_seconds=3600)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        pg_end = _pg_backend_cpu()
        # A seeded database has demo programs with steps falling due meanwhile: the
        # tick sends those too (counted in the rate, they are real work), but the
        # exactly-once check is on the bench's own contacts.
        ours = sum(1 for m in mail.outbox if m.to[0].startswith("bench-nurture-"))
        mail.outbox = []
    return {
        "sent": result["sent"],
        "ours": ours,
        "batches": result["batches"],
        "seconds": seconds,
        "cpu": cpu,
        "pg_cpu": None if pg_start is None or pg_end is None else pg_end - pg_start,
    }


def _figures(n: int, workers: list[dict], load: tuple) -> dict:
    sent = sum(w["sent"] for w in workers)
    seconds = max(w["seconds"] for w in workers)
    cpu = sum(w["cpu"] for w in workers)
    pg = [w["pg_cpu"] for w in workers]
    figures = {
        "enrollments": n,
        "workers": len(workers),
        "emails_sent": sent,
        "seconds": round(seconds, 1),
        "emails_per_s": round(sent / seconds),
        "emails_per_s_per_worker": [round(w["sent"] / w["seconds"]) for w in workers],
        # The workers' own CPU (PostgreSQL's is not in it): on a loaded, shared box the
        # wall-clock rate swings with the load; these much less.
        "worker_cpu_s": round(cpu, 1),
        "emails_per_worker_cpu_s": round(sent / cpu),
        "batches": sum(w["batches"] for w in workers),
        "load_avg_start_end": [round(load[0], 1), round(os.getloadavg()[0], 1)],
        "target": ">= 1000 emails/s per worker",
    }
    if None not in pg:
        figures["postgres_cpu_s"] = round(sum(pg), 1)
        figures["emails_per_worker_plus_postgres_cpu_s"] = round(sent / (cpu + sum(pg)))
    return figures


def bench_nurture_send(env=None, n: int = N_ENROLLMENTS):
    """Emails per second of one worker advancing n due one-email enrollments."""
    from nurture.models import EmailSend

    campaign, program, template = _setup(n)
    try:
        load = os.getloadavg()
        worker = _worker()
        sends = EmailSend.objects.filter(program=program, status="sent").count()
        assert sends == worker["ours"] == n, (sends, worker["ours"], n)  # exactly once each
        return _figures(n, [worker], load)
    finally:
        _cleanup(campaign, program, template)


def _child(queue) -> None:
    try:
        queue.put(_worker())
    except BaseException as exc:  # report it to the parent instead of hanging it
        queue.put({"error": repr(exc)})
        raise


def bench_nurture_send_two_workers(env=None, n: int = N_ENROLLMENTS):
    """Two worker processes advancing the same n due enrollments at once."""
    import multiprocessing

    from django.db import connections

    from nurture.models import EmailSend

    campaign, program, template = _setup(n)
    try:
        connections.close_all()  # each process opens its own connection
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        load = os.getloadavg()
        children = [context.Process(target=_child, args=(queue,)) for _ in range(2)]
        for child in children:
            child.start()
        workers = [queue.get() for _ in children]
        for child in children:
            child.join()
        errors = [w["error"] for w in workers if "error" in w]
        assert not errors, errors
        ours = sum(w["ours"] for w in workers)
        sends = EmailSend.objects.filter(program=program, status="sent").count()
        assert sends == ours == n, (sends, ours, n)  # zero duplicates, nothing lost
        figures = _figures(n, workers, load)
        figures["target"] = "two workers ~2x one (on a 2-core box shared with PostgreSQL)"
        return figures
    finally:
        _cleanup(campaign, program, template)


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django

    django.setup()
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=N_ENROLLMENTS)
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    bench = bench_nurture_send if args.workers == 1 else bench_nurture_send_two_workers
    print(bench(n=args.n))
