"""Scoring background tasks."""

from celery import shared_task


@shared_task(name="scoring.tasks.decay_tick")
def decay_tick() -> None:
    """Apply decay and expiry of engagement points, set-based."""
