"""A PostgreSQL rescore run by several database connections at once, one slice of
contact ids each.

One connection runs the rescore's pass as one parallel statement, then the chunks' writes
one after the other; at 1M contacts ~half of that time is serial work in one server
process (the pass's final aggregation and joins run in its leader; every chunk's update,
insert and checks in one backend), while the machine has more cores. Each slice here is
a complete rescore of its contacts (its own pass, in the connection's temporary table,
then its chunks), and slices touch disjoint contacts, so the correctness argument of
scoring.rescore_pass holds per slice unchanged: every chunk still locks its contacts in
id order in its own transaction, and ingestion waits for one chunk at most.

Only outside a transaction: the slices' connections could not see what the caller has
not committed (a test's transaction, a caller's atomic block) — the rescore then runs in
the caller's connection, as one slice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import connection, connections


def connections_wanted() -> int:
    """How many connections a rescore uses: ``SCORING_RESCORE_CONNECTIONS`` (default 2),
    1 inside a transaction (module docstring)."""
    wanted = settings.SCORING_RESCORE_CONNECTIONS
    if connection.in_atomic_block:
        return 1
    return max(1, wanted)


def slice_bounds(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """``n`` id ranges covering ``[lo, hi)`` with about as many contacts each (cut at the
    contact ids' quantiles)."""
    if n <= 1:
        return [(lo, hi)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY id) FROM crm_contact",
            ["{" + ",".join(str(i / n) for i in range(1, n)) + "}"],
        )
        (cuts,) = cursor.fetchone()
    edges = [lo, *sorted({c for c in cuts or [] if lo < c < hi}), hi]
    return list(zip(edges, edges[1:], strict=False))


def in_threads(works: Sequence[Callable[[threading.Event], None]]) -> None:
    """Run each ``work(stop)`` in its own thread (and so its own database connection,
    closed when it ends); when one fails, ``stop`` is set for the others (they return at
    their next chunk) and the first error is raised here once all have ended. An
    exception in this thread while it waits (a task's soft time limit, an interrupt)
    likewise stops them, and is raised once they have ended: no slice goes on writing
    after the run is marked failed."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(work):
        try:
            work(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in works]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        stop.set()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
