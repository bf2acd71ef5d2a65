"""Nurture background tasks."""

from celery import shared_task


@shared_task(name="nurture.tasks.tick")
def tick() -> None:
    """Advance due enrollments (every minute, from beat)."""
