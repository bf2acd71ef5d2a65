"""Foundation benchmarks: the cheapest requests, as a floor for every other page."""

N_REQUESTS = 200


def _ok(response, status=200):
    # A benchmark of an error page measures nothing: refuse to time one.
    assert response.status_code == status, (response.status_code, response.content[:300])


def bench_healthz(env):
    """/healthz: database round trip + broker connection (filesystem broker)."""
    _ok(env.client.get("/healthz"))
    samples = env.timeit(lambda: env.client.get("/healthz"), repeat=N_REQUESTS)
    return {
        "p50_ms": env.percentile(samples, 50) * 1000,
        "p95_ms": env.percentile(samples, 95) * 1000,
        "target": "p95 <= 50 ms",
    }


def bench_dashboard(env):
    """The home page (dashboard) as the demo admin, median of several runs."""
    _ok(env.client.get("/"))
    samples = env.timeit(lambda: env.client.get("/"), repeat=20)
    return {
        "median_ms": env.median(samples) * 1000,
        "p95_ms": env.percentile(samples, 95) * 1000,
    }


def bench_api_root(env):
    """/api/v1/ with token authentication."""
    _ok(env.api.get("/api/v1/"))
    samples = env.timeit(lambda: env.api.get("/api/v1/"), repeat=50)
    return {"median_ms": env.median(samples) * 1000, "p95_ms": env.percentile(samples, 95) * 1000}
