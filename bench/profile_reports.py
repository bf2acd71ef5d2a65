"""Where each report's time goes: its SQL queries, slowest first (a diagnostic, not a benchmark).

    DATABASE_URL=… .venv/bin/python bench/profile_reports.py [--days 90 365] [--top 8] [report …]

Calls each report's API once to warm up, then once with ``connection.queries`` recorded,
and prints the wall time, the number of queries, the time they took and the slowest ones.
Reports whose queries grow with the number of contacts (rather than with days) show up here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")

import django  # noqa: E402

django.setup()

from django.db import connection, reset_queries  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from bench.bench_reports import REPORTS, _period  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="*", default=REPORTS)
    parser.add_argument("--days", nargs="*", type=int, default=[90, 365])
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--width", type=int, default=220)
    args = parser.parse_args()

    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    admin = get_user_model().objects.get(username="admin")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=admin)[0].key}")
    for days in args.days:
        for name in args.reports:
            url = f"/api/v1/reports/{name}/?{_period(days)}"
            assert api.get(url).status_code == 200, url
            reset_queries()
            with CaptureQueriesContext(connection) as ctx:
                started = time.perf_counter()
                api.get(url)
                wall = (time.perf_counter() - started) * 1000
            queries = [(float(q["time"]) * 1000, q["sql"]) for q in ctx.captured_queries]
            in_db = sum(t for t, _ in queries)
            print(
                f"\n== {name} {days} d: {wall:.0f} ms, {len(queries)} queries, "
                f"{in_db:.0f} ms in SQL"
            )
            for ms, sql in sorted(queries, reverse=True)[: args.top]:
                print(f"  {ms:7.1f} ms  {' '.join(sql.split())[: args.width]}")


if __name__ == "__main__":
    main()
