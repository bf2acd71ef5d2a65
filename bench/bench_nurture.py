"""Nurture sending speed: advance 100k due enrollments into the locmem mail backend.

Target (issue 5, PostgreSQL): >= 1,000 emails/s per worker, including rendering (merge
fields, link rewriting, open pixel, signed tokens), the EmailSend rows, the enrollment
updates and the email_sent activities (crm.ingest with every "activities recorded"
handler). One process = one worker; two-worker and Redis runs are infra's tests.

Standalone: ``python bench/bench_nurture.py --n 20000`` (uses DATABASE_URL, creates and
removes its own contacts, campaign and program).
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


def bench_nurture_send(env=None, n: int = N_ENROLLMENTS):
    """Emails per second of one worker advancing n due one-email enrollments."""
    from django.core import mail
    from django.test import override_settings

    from nurture import tokens
    from nurture.models import EmailSend
    from nurture.services.sending import enrollments_advance

    tokens.open_url("warm-up")  # a long-lived worker has its URL resolver loaded already
    campaign, program, template = _setup(n)
    try:
        with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
            mail.outbox = []
            start, cpu_start = time.perf_counter(), time.process_time()
            result = enrollments_advance(max_seconds=3600)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            # A seeded database has demo programs with steps falling due meanwhile: the
            # tick sends those too (counted in the rate, they are real work), but the
            # exactly-once check is on the bench's own contacts.
            in_outbox = sum(1 for m in mail.outbox if m.to[0].startswith("bench-nurture-"))
            mail.outbox = []
        sends = EmailSend.objects.filter(program=program, status="sent").count()
        assert sends == in_outbox == n, (sends, in_outbox, n)  # exactly once each
        return {
            "enrollments": n,
            "emails_sent": result.sent,
            "seconds": round(seconds, 1),
            "emails_per_s": round(result.sent / seconds, 0),
            # The worker's own CPU (PostgreSQL's is not in it): on a loaded, shared box the
            # wall-clock rate swings with the load; this one much less.
            "worker_cpu_s": round(cpu, 1),
            "emails_per_worker_cpu_s": round(result.sent / cpu, 0),
            "batches": result.batches,
            "target": ">= 1000 emails/s per worker",
        }
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
    print(bench_nurture_send(n=parser.parse_args().n))
