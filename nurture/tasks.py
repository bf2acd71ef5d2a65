"""Nurture background tasks (thin: they call services)."""

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="nurture.tasks.tick")
def tick(max_seconds: float = 50) -> dict:
    """Apply queued activities, run entry triggers, then advance due enrollments (every
    minute, from beat).

    ``max_seconds`` bounds the sending loop (beat ticks every minute); the benchmark
    raises it to advance a whole backlog in one call."""
    from crm.activity_queue import queue_drain

    from .services.enrollment import triggers_run
    from .services.sending import enrollments_advance

    # Queued activities first (crm.activity_queue): a goal reached or a trigger fired a
    # moment ago ends or starts its enrollment before due steps go out. Returns at once
    # when the queue is empty or another worker is draining it; bounded, so a backlog
    # after downtime does not hold up sending (the queue's own drains work through it).
    try:
        queue_drain(max_seconds=10)
    except Exception:
        log.exception("nurture tick: draining the activity queue failed; sending anyway")
    try:
        entered = triggers_run()  # each rule on its own: a failing one is logged and skipped
    except Exception:
        log.exception("nurture tick: running the entry rules failed; sending anyway")
        entered = 0
    result = enrollments_advance(max_seconds=max_seconds)
    if entered or result.processed:
        log.info(
            "nurture tick: %s entered, %s processed, %s sent, %s skipped, %s failed in %.1fs",
            entered,
            result.processed,
            result.sent,
            result.skipped,
            result.failed,
            result.seconds,
        )
    return {
        "entered": entered,
        "processed": result.processed,
        "sent": result.sent,
        "batches": result.batches,
    }
