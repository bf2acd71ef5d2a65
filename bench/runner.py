"""Run every ``bench/bench_*.py`` module and append the results to BENCHMARKS.md.

Called by ``bench/run.sh`` (``make bench``) once PostgreSQL is up, migrated and seeded.
A benchmark module defines ``bench_<name>(env)`` functions returning a dict of figures,
e.g. ``{"p95_ms": 12.3, "target": "p95 <= 300 ms"}``. ``env`` offers:

* ``env.client`` — django test Client logged in as the demo admin;
* ``env.api`` — DRF APIClient authenticated with the demo admin's token;
* ``env.n_contacts`` — contacts in the database;
* ``env.timeit(fn, repeat=5)`` — seconds per call, one sample per run (after one warm-up);
* ``env.percentile(samples, p)`` and ``env.median(samples)``;
* ``env.peak_rss_mb()`` — peak resident memory of this process so far.

Usage: ``python bench/runner.py [--only NAME ...] [--out BENCHMARKS.md]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import math
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")


class Env:
    def __init__(self, *, n_contacts: int):
        from django.contrib.auth import get_user_model
        from django.test import Client
        from rest_framework.authtoken.models import Token
        from rest_framework.test import APIClient

        admin = get_user_model().objects.get(username="admin")
        self.admin = admin
        self.client = Client()
        self.client.force_login(admin)
        token, _ = Token.objects.get_or_create(user=admin)
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        self.n_contacts = n_contacts

    @staticmethod
    def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> list[float]:
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return samples

    @staticmethod
    def percentile(samples: list[float], p: float) -> float:
        """Nearest-rank percentile (p in 0..100)."""
        ordered = sorted(samples)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    @staticmethod
    def median(samples: list[float]) -> float:
        return statistics.median(samples)

    @staticmethod
    def peak_rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def machine() -> dict[str, str]:
    from django.db import connection

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            db = f"PostgreSQL {cursor.fetchone()[0]}"
        else:
            db = f"{connection.vendor} {connection.Database.sqlite_version}"
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": ram,
        "Python": platform.python_version(),
        "database": db,
        "OS": platform.platform(terse=True),
    }


def discover(only: set[str]) -> list[tuple[str, Callable]]:
    found = []
    for path in sorted((ROOT / "bench").glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in sorted(dir(module)):
            fn = getattr(module, name)
            if name.startswith("bench_") and callable(fn):
                short = name.removeprefix("bench_")
                if not only or short in only or path.stem in only:
                    found.append((f"{path.stem}.{short}", fn))
    return found


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=[], help="benchmark or module names")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()

    import django

    django.setup()
    from crm.models import Contact

    n_contacts = Contact.objects.count()
    env = Env(n_contacts=n_contacts)
    results, failures = [], 0
    for name, fn in discover(set(args.only)):
        print(f"bench: {name} …", flush=True)
        start = time.perf_counter()
        try:
            figures = fn(env) or {}
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failures += 1
            figures = {"error": traceback.format_exc(limit=3).strip().splitlines()[-1]}
        figures["wall_s"] = round(time.perf_counter() - start, 2)
        figures["peak_rss_mb"] = round(env.peak_rss_mb(), 1)
        print(f"bench: {name} -> {figures}", flush=True)
        results.append((name, figures))

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {now} — N = {n_contacts:,} contacts\n"]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += [
        f"- seed: {os.environ.get('BENCH_SEED', '42')}; "
        f"samples: medians/percentiles of repeated runs after a warm-up\n",
        "| benchmark | figures |",
        "|---|---|",
    ]
    for name, figures in results:
        cells = ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items())
        lines.append(f"| `{name}` | {cells} |")
    out = Path(args.out)
    if not out.exists():
        out.write_text(
            "# Benchmarks\n\nAppended by `make bench` (bench/run.sh → bench/runner.py); "
            "newest last. Times are seconds unless the name says ms.\n"
        )
    with out.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bench: appended {len(results)} result(s) to {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
