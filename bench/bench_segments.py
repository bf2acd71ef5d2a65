"""Segment benchmarks: preview count, full refresh, incremental refresh, naive loop.

Targets (issue 4, PostgreSQL, 1M contacts / 20M activities): preview of a three-condition
segment ≤ 1 s; full refresh ≤ 30 s; incremental refresh for a 1,000-activity batch ≤ 50 ms.
"""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

THREE_CONDITIONS = {
    "all": [
        {"field": "job_title", "op": "contains", "value": "Director"},
        {"did": "webinar_attended", "within_last_days": 90},
        {"did_not": "email_opened", "within_last_days": 60},
    ]
}
NAIVE_SAMPLE = 10_000


def bench_segment_preview(env):
    """Count + sample of the three-condition segment through the preview endpoint's code."""
    from crm.models import Contact
    from crm.segments import compile_definition

    def preview():
        qs = Contact.objects.filter(compile_definition(THREE_CONDITIONS))
        return qs.count(), list(qs.order_by("-created_at", "-id")[:10])

    samples = env.timeit(preview, repeat=5)
    count, _ = preview()
    return {
        "contacts": env.n_contacts,
        "members": count,
        "median_ms": env.median(samples) * 1000,
        "p95_ms": env.percentile(samples, 95) * 1000,
        "target": "<= 1000 ms at 1M contacts",
    }


def bench_segment_full_refresh(env):
    """First refresh (everyone joins) and a steady-state refresh (no change) of that segment."""
    from crm.models import Segment
    from crm.segments import segment_refresh, segment_save

    segment = segment_save(
        segment=None,
        name="bench: three conditions",
        kind=Segment.Kind.DYNAMIC,
        definition=THREE_CONDITIONS,
        refresh=False,
    )
    try:
        start = time.perf_counter()
        joined, _ = segment_refresh(segment=segment, cascade=False)
        first = time.perf_counter() - start
        steady = env.timeit(lambda: segment_refresh(segment=segment, cascade=False), repeat=3)
    finally:
        segment.delete()
    return {
        "members": joined,
        "first_refresh_s": first,
        "steady_refresh_median_s": env.median(steady),
        "target": "<= 30 s at 1M contacts",
    }


def bench_segment_incremental(env):
    """The segments handler on a realistic stored 1,000-activity batch (what ingest runs),
    with the three-condition segment added to the demo segments."""
    from crm.models import Segment
    from crm.segments import segment_save, segments_refresh_for_activities

    segment = segment_save(
        segment=None,
        name="bench: incremental",
        kind=Segment.Kind.DYNAMIC,
        definition=THREE_CONDITIONS,
    )
    cpu: list[float] = []  # this process's CPU seconds per run (stable under load)
    queries: list[int] = []

    def handle(batch):
        from django.test.utils import CaptureQueriesContext

        start = time.process_time()
        with CaptureQueriesContext(connection) as captured:
            segments_refresh_for_activities(activities=batch)
        cpu.append(time.process_time() - start)
        queries.append(len(captured))

    from django.db import connection

    try:
        n_segments = Segment.objects.filter(kind=Segment.Kind.DYNAMIC).count()
        samples = _handler_cost(env, handle, repeat=20)
    finally:
        segment.delete()
    return {
        "batch_activities": 1000,
        "dynamic_segments": n_segments,
        "median_ms": env.median(samples) * 1000,
        "p95_ms": env.percentile(samples, 95) * 1000,
        "python_cpu_median_ms": env.median(cpu[1:]) * 1000,
        "queries": max(queries),
        "load_avg_1m": os.getloadavg()[0],
        "target": "<= 50 ms per 1,000-activity batch",
    }


EMAIL_MIX = [  # what follows a send: weights of a realistic event stream
    ("email_opened", 50),
    ("email_clicked", 20),
    ("email_bounced", 4),
    ("email_unsubscribed", 2),
    ("email_complained", 1),
    ("email_delivered", 23),
]
WEB_MIX = [
    ("page_visit", 70),
    ("form_submitted", 8),
    ("content_download", 8),
    ("webinar_registered", 5),
    ("webinar_attended", 4),
    ("demo_requested", 3),
    ("social_like", 2),
]


def activity_batch(size: int = 1000, *, seed: int = 7) -> list:
    """A realistic unsaved batch for existing contacts: 60% events of recent sends (same
    message ids, a few minutes to days later), 40% web activity of recently active contacts."""
    from crm.models import Activity

    rng = random.Random(seed)
    now = timezone.now()
    sends = list(
        Activity.objects.filter(kind="email_sent", occurred_at__gte=now - timedelta(days=30))
        .exclude(message_id="")
        .order_by("-occurred_at")
        .values("contact_id", "campaign_id", "message_id", "occurred_at")[: size * 3]
    )
    web = list(
        Activity.objects.filter(kind="page_visit", occurred_at__gte=now - timedelta(days=30))
        .order_by("-occurred_at")
        .values_list("contact_id", flat=True)[: size * 3]
    )
    batch = []
    for i in range(size):
        if sends and (i % 5 < 3 or not web):
            send = rng.choice(sends)
            (kind,) = rng.choices([k for k, _ in EMAIL_MIX], [w for _, w in EMAIL_MIX])
            at = min(now, send["occurred_at"] + timedelta(minutes=rng.randint(1, 4000)))
            batch.append(
                Activity(
                    contact_id=send["contact_id"],
                    campaign_id=send["campaign_id"],
                    message_id=send["message_id"],
                    kind=kind,
                    occurred_at=at,
                    is_machine=kind == "email_opened" and rng.random() < 0.15,
                    details={"bounce_type": "hard"} if rng.random() < 0.3 else {},
                )
            )
        else:
            (kind,) = rng.choices([k for k, _ in WEB_MIX], [w for _, w in WEB_MIX])
            batch.append(
                Activity(
                    contact_id=rng.choice(web),
                    kind=kind,
                    occurred_at=now - timedelta(minutes=rng.randint(1, 600)),
                    url="https://example.com/pricing" if rng.random() < 0.2 else "",
                )
            )
    return batch


def _vacuum() -> None:
    """Drop the dead rows earlier rolled-back samples left: re-inserting the same message
    ids and contacts over their dead index entries would slow every later sample ~10x,
    which production (committed batches, autovacuum) never sees."""
    from django.db import connection

    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(
                "VACUUM crm_activity, crm_segmentmembership, crm_segmentchange, reports_emaildaily"
            )


def _handler_cost(env, handle, *, repeat: int = 7) -> list[float]:
    """Seconds ``handle(stored_batch)`` takes after a fresh 1,000-activity batch is stored."""
    from bench.rollback import checks_at_each_statement
    from crm.models import Activity

    template = activity_batch()
    _vacuum()
    samples = []
    for i in range(repeat + 1):
        with transaction.atomic():
            checks_at_each_statement()  # the rolled-back commit's FK checks are timed too
            batch = [
                Activity(
                    **{f.attname: getattr(a, f.attname) for f in Activity._meta.concrete_fields}
                )
                for a in template
            ]
            Activity.objects.bulk_create(batch)
            start = time.perf_counter()
            handle(batch)
            if i:  # the first run warms caches
                samples.append(time.perf_counter() - start)
            transaction.set_rollback(True)
    return samples


def bench_activity_handlers_batch(env):
    """Segments and email-rollup handlers on one realistic 1,000-activity batch, each alone.

    ``segments_all_*``: every dynamic segment for every touched contact (the pre-wave
    behaviour, still used for profile and stage changes) vs. ``segments_*``: only the
    segments and contacts the batch's activity kinds can change.
    """
    from crm.models import Segment
    from crm.segments import segments_refresh_for_activities, segments_refresh_for_contacts
    from reports.rollups import rollups_apply_activities

    seg_all = _handler_cost(
        env, lambda b: segments_refresh_for_contacts(contact_ids={a.contact_id for a in b})
    )
    seg = _handler_cost(env, lambda b: segments_refresh_for_activities(activities=b))
    rollup = _handler_cost(env, lambda b: rollups_apply_activities(activities=b))
    ms = 1000
    return {
        "dynamic_segments": Segment.objects.filter(kind=Segment.Kind.DYNAMIC).count(),
        "segments_all_median_ms": env.median(seg_all) * ms,
        "segments_median_ms": env.median(seg) * ms,
        "segments_p95_ms": env.percentile(seg, 95) * ms,
        "rollup_median_ms": env.median(rollup) * ms,
        "rollup_p95_ms": env.percentile(rollup, 95) * ms,
        "target": "segments <= 50 ms added per 1,000-activity batch",
    }


def bench_segment_naive_loop(env):
    """The same count as a per-contact Python loop over 10k contacts, scaled to all contacts."""
    from crm.models import Activity, Contact

    now = timezone.now()
    webinar_since, open_since = now - timedelta(days=90), now - timedelta(days=60)

    def naive():
        count = 0
        for contact in Contact.objects.order_by("pk")[:NAIVE_SAMPLE]:
            if "director" not in contact.job_title.lower():
                continue
            attended = Activity.objects.filter(
                contact=contact, kind="webinar_attended", occurred_at__gte=webinar_since
            ).exists()
            opened = Activity.objects.filter(
                contact=contact, kind="email_opened", occurred_at__gte=open_since
            ).exists()
            count += attended and not opened
        return count

    (seconds,) = env.timeit(naive, repeat=1, warmup=0)
    sample = min(NAIVE_SAMPLE, env.n_contacts) or 1
    return {
        "sample_contacts": sample,
        "sample_s": seconds,
        "scaled_to_all_contacts_s": seconds * env.n_contacts / sample,
        "note": "per-contact Python loop with per-contact queries, for comparison",
    }
