"""Scoring background tasks: thin wrappers that take ids and call a service."""

from celery import shared_task

from . import services


@shared_task(name="scoring.tasks.decay_tick")
def decay_tick() -> int:
    """Apply decay and expiry of engagement points, set-based."""
    return services.decay_run()


@shared_task(name="scoring.tasks.rescore", bind=True)
def rescore(self, run_id: int) -> None:
    """Recompute every contact's score for the queued run ``run_id``."""
    services.rescore_execute(run_id=run_id, task_id=self.request.id or "")


@shared_task(name="scoring.tasks.rescores_pick_up", bind=True)
def rescores_pick_up(self) -> int | None:
    """Every minute (beat): start a rescore whose task never came; returns its run id."""
    run = services.rescores_pick_up(task_id=self.request.id or "")
    return run.pk if run else None


@shared_task(name="scoring.tasks.mql_owners_email")
def mql_owners_email(contact_ids: list[int]) -> int:
    """Email the owners of a hand-off batch's new MQLs: one task per batch."""
    from . import handoff

    return handoff.owner_emails_send(contact_ids=contact_ids)
