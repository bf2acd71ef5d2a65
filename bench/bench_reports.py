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
