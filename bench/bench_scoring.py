"""Scoring benchmarks (issue 6): full rescore vs the bare SQL aggregate, incremental
overhead on a 1,000-activity batch, a 90-day back-test, and a naive per-contact loop.

Targets at 1M contacts / 20M activities / ~20 rules on PostgreSQL: rescore ≤ 60 s and
≤ 2× the bare aggregate, peak RSS ≤ 500 MB; incremental ≤ +20 %; back-test ≤ 30 s.
Every benchmark leaves the data as it found it (changes are rolled back; the rescore's,
which commits, are undone — but for its MQL hand-offs).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Max, Q
from django.test.utils import override_settings
from django.utils import timezone

NAIVE_SAMPLE = 10_000


class _Rollback(Exception):
    pass


def _rolled_back(fn):
    """Run ``fn`` in a transaction that is rolled back; return its result. Deferred
    constraints are checked as each statement ends, so the timed work includes the
    foreign-key checks its commit would have run (bench/rollback.py)."""
    from bench.rollback import checks_at_each_statement

    box = {}
    try:
        with transaction.atomic():
            checks_at_each_statement()
            box["result"] = fn()
            raise _Rollback
    except _Rollback:
        pass
    return box.get("result")


class _RssSampler:
    """Resident set size of this process, sampled every 20 ms while the block runs."""

    def __init__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.before_mb = self.peak_mb = self._now_mb()

    @staticmethod
    def _now_mb() -> float:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._now_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._now_mb())


def bench_scoring_full_rescore(env):
    """Full rescore after a rule change (every 'page visit' point changes), and the bare
    SQL aggregate over the same activities, measured in the same run. The rescore runs
    as the task does: committed, in ``SCORING_RESCORE_CONNECTIONS`` connections."""
    from scoring import rescore_slices, services
    from scoring.models import LedgerEntry, Rule

    rules = Rule.objects.filter(enabled=True).count()
    start = time.perf_counter()
    # A server-side cursor streams the groups: the driver would otherwise buffer the whole
    # result (~0.5 GB at 1M), and this process's memory is what the rescore is judged by.
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(
            "SELECT contact_id, kind, COUNT(*) FROM crm_activity GROUP BY contact_id, kind"
        )
        rows = 0
        while True:
            chunk = cursor.fetchmany(10_000)
            if not chunk:
                break
            rows += len(chunk)
    bare = time.perf_counter() - start

    # The rescore commits: it runs in several connections (scoring.rescore_slices), which
    # would not see a transaction of this one's. Its ledger entries and scores are undone
    # afterwards (_rescore_undo); its MQL hand-offs stay, as a production rescore's would.
    rule = Rule.objects.filter(enabled=True, kind=Rule.Kind.ENGAGEMENT).first()
    last = LedgerEntry.objects.aggregate(m=Max("pk"))["m"] or 0
    if rule:
        Rule.objects.filter(pk=rule.pk).update(points=rule.points + 1)
    try:
        t, cpu = time.perf_counter(), time.process_time()
        with _RssSampler() as rss:
            run = services.scores_rescore_all()
        seconds, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    finally:
        if rule:
            Rule.objects.filter(pk=rule.pk).update(points=rule.points)
        _rescore_undo(last)
    return {
        # The worker's memory: this process's resident set sampled during the rescore
        # (the runner's peak_rss_mb is the high-water mark of every benchmark so far).
        "worker_rss_before_mb": rss.before_mb,
        "worker_rss_peak_mb": rss.peak_mb,
        "contacts": env.n_contacts,
        "rules": rules,
        "connections": rescore_slices.connections_wanted(),
        "rescore_s": seconds,
        "rescore_worker_cpu_s": cpu_s,
        "bare_aggregate_s": bare,
        "ratio": seconds / bare if bare else None,
        "contacts_changed": run.contacts_changed,
        "entries_created": run.entries_created,
        "target": "rescore <= 60 s and <= 2x bare aggregate at 1M; peak RSS <= 500 MB",
    }


def _rescore_undo(last: int) -> None:
    """Take back the ledger entries appended after entry ``last`` and their points from
    the cached scores (one transaction)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "WITH gone AS (DELETE FROM scoring_ledgerentry WHERE id > %s "
            "RETURNING contact_id, points), per AS (SELECT contact_id, SUM(points) AS p "
            "FROM gone GROUP BY contact_id) UPDATE crm_contactscore s SET score = s.score - per.p "
            "FROM per WHERE s.contact_id = per.contact_id AND per.p <> 0",
            [last],
        )


def _batch(n=1000):
    from crm.models import Activity, ActivityKind

    ids = list(
        Activity.objects.order_by("-occurred_at").values_list("contact_id", flat=True)[: n * 3]
    )
    ids = list(dict.fromkeys(ids))[:n] or [0]
    now = timezone.now() - timedelta(minutes=1)
    kinds = [ActivityKind.PAGE_VISIT, ActivityKind.EMAIL_CLICKED, ActivityKind.CONTENT_DOWNLOAD]
    return [
        {
            "contact": ids[i % len(ids)],
            "kind": kinds[i % len(kinds)],
            "occurred_at": now,
            "url": "https://leadcycle.example/pricing" if i % 2 else "",
        }
        for i in range(n)
    ]


def bench_scoring_incremental_overhead(env):
    """Ingesting a 1,000-activity batch with and without the scoring handler.

    The scoring handler runs with everything it sets off: the MQL hand-off of the contacts
    the batch lifts over the threshold goes through ``crm.lifecycle`` and so through every
    app's stage-changed handler, as in the product. Measured three ways: against the core
    path alone (no handlers), against the ingest with every other handler, and the scoring
    handler's own share (only scoring's stage handler on the hand-off), so that a slow
    handler of another app shows up as what it is.
    """
    from django.conf import settings

    from crm.ingest import activities_record

    items = _batch()
    with_scoring = list(settings.ACTIVITIES_RECORDED_HANDLERS)
    without = [h for h in with_scoring if not h.startswith("scoring.")]
    scoring_only = [h for h in with_scoring if h.startswith("scoring.")]
    scoring_stage = [h for h in settings.STAGE_CHANGED_HANDLERS if h.startswith("scoring.")]

    # The handlers run inside the recording transaction here (not from the activity queue,
    # production's default): the same work, measured on the batch it belongs to.
    def ingest(handlers, **extra):
        def run():
            with override_settings(
                ACTIVITIES_RECORDED_HANDLERS=handlers, ACTIVITY_HANDLERS_QUEUED=False, **extra
            ):
                _rolled_back(lambda: activities_record(items=items))

        return run

    core = env.median(env.timeit(ingest([]), repeat=5))
    scoring = env.median(env.timeit(ingest(scoring_only), repeat=5))
    own = env.median(
        env.timeit(ingest(scoring_only, STAGE_CHANGED_HANDLERS=scoring_stage), repeat=5)
    )
    base = env.median(env.timeit(ingest(without), repeat=5))
    scored = env.median(env.timeit(ingest(with_scoring), repeat=5))
    return {
        "batch": len(items),
        "ingest_core_ms": core * 1000,
        "ingest_core_plus_scoring_ms": scoring * 1000,
        "scoring_handler_ms": (scoring - core) * 1000,
        "scoring_handler_own_ms": (own - core) * 1000,
        "overhead_vs_core_pct": 100 * (scoring - core) / core if core else None,
        "ingest_without_scoring_ms": base * 1000,
        "ingest_with_scoring_ms": scored * 1000,
        "overhead_pct": 100 * (scored - base) / base if base else None,
        "target": "<= 20 % overhead",
    }


def bench_scoring_backtest_90_days(env):
    """Back-test of the enabled rules (as a draft) against themselves over 90 days.

    The warm-up run is traced (tracemalloc: the back-test's own Python heap peak, which
    must not grow with the number of contacts); the timed run reports wall and this
    process's CPU time (the rest is the database's).
    """
    import tracemalloc

    from scoring import backtest, engine

    draft = engine.rules_enabled()
    tracemalloc.start()
    try:
        backtest.backtest_run(draft=draft, days=90)
        heap_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    cpu = time.process_time()
    samples = env.timeit(lambda: backtest.backtest_run(draft=draft, days=90), repeat=1, warmup=0)
    return {
        "median_s": env.median(samples),
        "process_cpu_s": round(time.process_time() - cpu, 2),
        "python_heap_peak_mb": round(heap_peak / 2**20, 1),
        "target": "<= 30 s at 1M contacts",
    }


def bench_scoring_naive_loop(env):
    """Per-contact ORM loop (one query per rule per contact) on 10k contacts, for the
    record, against the set-based engine on the same contacts."""
    from crm.models import Activity, Contact
    from scoring import engine
    from scoring.rules import activity_q, fit_q

    rules = engine.rules_enabled()
    now = timezone.now()
    ids = list(Contact.objects.order_by("pk").values_list("pk", flat=True)[:NAIVE_SAMPLE])

    def naive():
        scores = {}
        for contact in Contact.objects.filter(pk__in=ids):
            total = 0
            for r in rules:
                if engine.is_flag(r):
                    hit = Contact.objects.filter(fit_q(r), pk=contact.pk).exists()
                    total += r.points if hit else 0
                elif r.kind == r.Kind.ENGAGEMENT:
                    n = Activity.objects.filter(activity_q(r, now=now), contact=contact).count()
                    total += engine.rule_value(r, count=n, last=None, now=now)
            scores[contact.pk] = total
        return scores

    def set_based():
        if ids:
            engine.expected_values(
                Q(pk__gte=ids[0], pk__lte=ids[-1]),
                engine.RuleSet(rules),
                now=now,
                activity_scope=Q(contact_id__gte=ids[0], contact_id__lte=ids[-1]),
            )

    (naive_s,) = env.timeit(naive, repeat=1, warmup=0)
    (set_s,) = env.timeit(set_based, repeat=1, warmup=0)
    return {
        "sample_contacts": len(ids),
        "naive_s": naive_s,
        "set_based_s": set_s,
        "ratio": naive_s / set_s if set_s else None,
        "note": "naive per-contact loop vs the engine's two aggregate queries",
    }
