"""Scoring background tasks: thin wrappers that take ids and call a service."""

import logging

from celery import shared_task

from crm.mail_tasks import MAIL_ERRORS, MailTask

from . import services

log = logging.getLogger(__name__)


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


@shared_task(name="scoring.tasks.mql_owners_email", base=MailTask)
def mql_owners_email(contact_ids: list[int]) -> int:
    """Email the owners of a hand-off batch's new MQLs: one task per batch, retried with
    back-off while the mail server fails (only the owners not yet mailed)."""
    from . import handoff

    return handoff.owner_emails_send(contact_ids=contact_ids)


@shared_task(name="scoring.tasks.owner_emails_sweep")
def owner_emails_sweep() -> int:
    """Every minute (beat): send the owner emails still pending a while after their
    hand-off (its task could not be queued, or gave up). A mail error is logged and left
    to the next minute, never retried here: the rows wait — until, days on, they are given
    up with an error logged (handoff.OWNER_EMAIL_GIVE_UP_AFTER)."""
    from . import handoff

    handoff.owner_emails_give_up()
    try:
        return handoff.owner_emails_send(older_than=handoff.OWNER_EMAIL_SWEEP_AFTER)
    except MAIL_ERRORS as exc:
        log.warning("pending owner emails: the mail server failed (%s); next minute", exc)
        return 0
