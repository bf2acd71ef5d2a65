"""CRM background tasks: thin wrappers that take ids and call a service."""

from celery import shared_task


@shared_task(name="crm.tasks.refresh_segments")
def refresh_segments() -> None:
    """Periodic full refresh of dynamic segment membership (set-based diff)."""
