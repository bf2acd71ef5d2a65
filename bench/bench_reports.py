"""Report benchmarks: every report page and API call for a 90- and a 365-day period.

Target (issue 8, PostgreSQL, 1M contacts / 20M activities / a year of history):
p95 ≤ 300 ms per page and per API call. Email figures come from the daily rollup;
attribution (cost per MQL, revenue) and cohort figures read the transition and deal
tables through their indexes.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

REPORTS = ["dashboard", "funnel", "email", "cost-per-mql", "leads", "revenue", "customers"]
TARGET = "p95 <= 300 ms"


def _period(days: int) -> str:
    end = timezone.localdate() + timedelta(days=1)
    return f"start={end - timedelta(days=days)}&end={end}"


def _bench(env, days: int, *, api: bool) -> dict:
    out = {"contacts": env.n_contacts, "target": TARGET}
    worst = 0.0
    for name in REPORTS:
        if api:
            url = f"/api/v1/reports/{name}/?{_period(days)}"
            samples = env.timeit(lambda url=url: env.api.get(url), repeat=5)
        else:
            page = "/" if name == "dashboard" else f"/reports/{name}/"
            url = f"{page}?{_period(days)}"
            samples = env.timeit(lambda url=url: env.client.get(url), repeat=5)
        p95 = env.percentile(samples, 95) * 1000
        out[f"{name}_p95_ms"] = round(p95, 1)
        worst = max(worst, p95)
    out["p95_ms"] = round(worst, 1)
    out["meets_target"] = worst <= 300
    return out


def bench_reports_api_90_days(env):
    return _bench(env, 90, api=True)


def bench_reports_api_365_days(env):
    return _bench(env, 365, api=True)


def bench_reports_pages_90_days(env):
    return _bench(env, 90, api=False)


def bench_reports_pages_365_days(env):
    return _bench(env, 365, api=False)


# --- Reports handlers on ingestion batches (issue 3: each handler a few ms per batch) ---

EMAIL_EVENT_MIX = [  # what the mail provider reports for recent sends
    ("email_sent", 20),
    ("email_delivered", 25),
    ("email_opened", 30),
    ("email_clicked", 15),
    ("email_bounced", 10),
]


def _engagement_batch(rng, contact_ids: list[int], campaign_id, now) -> list:
    """1,000 unsaved activities with bench_ingest's engagement mix (20% campaign-tagged)."""
    from bench.bench_ingest import KINDS
    from crm.models import Activity

    batch = []
    for _ in range(1000):
        kind, path, details = KINDS[rng.randrange(len(KINDS))]
        batch.append(
            Activity(
                contact_id=rng.choice(contact_ids),
                kind=kind,
                occurred_at=now - timedelta(seconds=rng.randrange(86_400)),
                campaign_id=campaign_id if rng.random() < 0.2 else None,
                url=f"https://www.leadcycle.example{path}" if path else "",
                details=details,
            )
        )
    return batch


def _email_batch(rng, sends: list[dict], now) -> list:
    """1,000 unsaved provider events of recent nurture sends (their message ids, so each
    maps to its step); sends re-use those ids too, which costs the same as new ones."""
    from crm.models import Activity

    kinds = [k for k, _ in EMAIL_EVENT_MIX]
    weights = [w for _, w in EMAIL_EVENT_MIX]
    batch = []
    for _ in range(1000):
        send = rng.choice(sends)
        (kind,) = rng.choices(kinds, weights)
        batch.append(
            Activity(
                contact_id=send["contact_id"],
                campaign_id=send["campaign_id"],
                message_id=send["message_id"],
                kind=kind,
                occurred_at=min(now, send["occurred_at"] + timedelta(minutes=rng.randint(1, 4000))),
                is_machine=kind == "email_opened" and rng.random() < 0.15,
                details={"bounce_type": "hard" if rng.random() < 0.3 else "soft"}
                if kind == "email_bounced"
                else {},
            )
        )
    return batch


def _stage_batch(rng, contact_ids: list[int], now) -> list:
    """1,000 unsaved lead → mql transitions (scoring's hand-off of a large batch)."""
    from crm.models import LifecycleTransition

    return [
        LifecycleTransition(
            contact_id=cid,
            from_stage="lead",
            to_stage="mql",
            at=now - timedelta(minutes=rng.randrange(600)),
            by_system="bench",
        )
        for cid in rng.sample(contact_ids, 1000)
    ]


def _handler_samples(make_batch, handle, *, repeat: int = 9) -> dict:
    """Store a fresh batch (``make_batch(i)``) in a transaction, time ``handle(stored)``
    (wall, CPU, queries, summed query time), roll back. The first run warms caches."""
    import time

    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from bench.rollback import checks_at_each_statement

    wall, cpu, queries, db = [], [], [], []
    for i in range(repeat + 1):
        with transaction.atomic():
            checks_at_each_statement()  # the rolled-back commit's FK checks are timed too
            batch = make_batch(i)
            type(batch[0]).objects.bulk_create(batch)
            with CaptureQueriesContext(connection) as captured:
                started, started_cpu = time.perf_counter(), time.process_time()
                handle(batch)
                elapsed, elapsed_cpu = (
                    time.perf_counter() - started,
                    time.process_time() - started_cpu,
                )
            transaction.set_rollback(True)
        if i:
            wall.append(elapsed * 1000)
            cpu.append(elapsed_cpu * 1000)
            queries.append(len(captured.captured_queries))
            db.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
    ordered = sorted(wall)
    return {
        "median_ms": round(ordered[len(ordered) // 2], 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * len(ordered)))], 1),
        "cpu_median_ms": round(sorted(cpu)[len(cpu) // 2], 1),
        "db_median_ms": round(sorted(db)[len(db) // 2], 1),
        "queries_max": max(queries),
    }


def bench_reports_handlers_batch(env):
    """The reports handlers alone on stored 1,000-row batches, as ingestion runs them: an
    engagement batch (bench_ingest's mix), a provider-event batch of recent nurture sends,
    and 1,000 stage changes; ``*_rollups`` is the email/stage rollups and step facts part
    (reports.upkeep) without the lifecycle facts. Target: engagement ≤ 5 ms, email ≤ 15 ms
    median. Wall figures depend on the box's load; CPU, summed query time and query counts
    are steadier."""
    import os
    import random

    from django.db import connection

    from crm.events import ActivitiesRecorded, StageChanged
    from crm.models import Activity, Campaign, Contact
    from reports.handlers import on_activities_recorded, on_stage_changed

    now = timezone.now()
    contact_ids = list(Contact.objects.order_by("-id").values_list("pk", flat=True)[:20_000])
    campaign_id = Campaign.objects.values_list("pk", flat=True).first()
    sends = list(
        Activity.objects.filter(kind="email_sent", occurred_at__gte=now - timedelta(days=30))
        .exclude(message_id="")
        .order_by("-occurred_at")
        .values("contact_id", "campaign_id", "message_id", "occurred_at")[:20_000]
    )
    if connection.vendor == "postgresql":  # dead rows of earlier runs' rolled-back samples
        with connection.cursor() as cursor:
            cursor.execute(
                "VACUUM crm_activity, crm_lifecycletransition, reports_emaildaily, "
                "reports_emailstepdaily, reports_stagedaily"
            )
    # Recent contacts, sends and their events are in the cache of a live system (just
    # written or read by ingestion); read the pools once so samples do not time cold disk.
    messages = [s["message_id"] for s in sends]
    list(Contact.objects.filter(pk__in=contact_ids).values_list("source", "acquired_by_id"))
    list(Activity.objects.filter(message_id__in=messages).values_list("occurred_at"))
    try:
        from nurture.models import EmailSend

        list(EmailSend.objects.filter(message_id__in=messages).values_list("step_id"))
    except ImportError:  # pragma: no cover - nurture not installed
        pass

    def activities(batch):
        on_activities_recorded(ActivitiesRecorded(batch))

    def transitions(batch):
        on_stage_changed(StageChanged(batch))

    out = {"contacts": env.n_contacts, "load": os.getloadavg()[0]}
    cases = {
        "engagement": (
            lambda i: _engagement_batch(random.Random(f"eng{i}"), contact_ids, campaign_id, now),
            activities,
        ),
        "email": (lambda i: _email_batch(random.Random(f"email{i}"), sends, now), activities),
        "stage": (
            lambda i: _stage_batch(random.Random(f"stage{i}"), contact_ids, now),
            transitions,
        ),
    }
    try:  # the email/stage rollups and step facts alone (reports.upkeep), when present
        from reports.upkeep import upkeep_apply_activities, upkeep_apply_transitions

        cases["engagement_rollups"] = (
            cases["engagement"][0],
            lambda b: upkeep_apply_activities(activities=b),
        )
        cases["email_rollups"] = (
            cases["email"][0],
            lambda b: upkeep_apply_activities(activities=b),
        )
        cases["stage_rollups"] = (
            cases["stage"][0],
            lambda b: upkeep_apply_transitions(transitions=b),
        )
    except ImportError:
        pass
    for name, (make, handle) in cases.items():
        for figure, value in _handler_samples(make, handle).items():
            out[f"{name}_{figure}"] = value
    out["target"] = "engagement <= 5 ms, email <= 15 ms median per 1,000-activity batch"
    out["meets_target"] = out["engagement_median_ms"] <= 5 and out["email_median_ms"] <= 15
    return out
