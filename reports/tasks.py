"""Reports background tasks."""

from celery import shared_task


@shared_task(name="reports.tasks.reconcile_rollups")
def reconcile_rollups() -> None:
    """Rebuild yesterday's rollups from raw data and report any difference."""


@shared_task(name="reports.tasks.review_digest")
def review_digest() -> None:
    """Weekly digest of overdue reviews to their owners."""
