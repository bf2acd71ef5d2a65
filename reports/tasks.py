"""Reports background tasks."""

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from crm.mail_tasks import MailTask

from .facts import facts_reconcile
from .holdout_facts import holdout_reconcile
from .landing_rollup import landing_rollup_reconcile
from .lifecycle_facts import lifecycle_facts_reconcile
from .query import site_tz
from .rollups import rollups_reconcile
from .stage_facts import stage_facts_reconcile

log = logging.getLogger(__name__)


@shared_task(name="reports.tasks.reconcile_rollups")
def reconcile_rollups(day: str | None = None) -> dict:
    """Rebuild yesterday's rollups (or ``day``, ISO) from raw data and report any difference.

    Queued activity batches are applied first (crm.activity_queue). If some stay queued (a
    parked or backing-off batch), the check waits for another night: a rebuild counts every
    stored activity, and the batch's handlers would add its activities' counts again when
    it is applied.
    """
    from datetime import date

    from crm.activity_queue import queue_drain
    from crm.models import QueuedBatch

    target = (
        date.fromisoformat(day)
        if day
        else timezone.localdate(timezone=site_tz()) - timedelta(days=1)
    )
    queue_drain(max_seconds=600)
    waiting = QueuedBatch.objects.count()
    if waiting:
        log.warning(
            "Reconciliation of %s deferred: %d activity batches are queued", target, waiting
        )
        return {"day": target.isoformat(), "deferred_queued_batches": waiting}
    diff = {**rollups_reconcile(day=target), **facts_reconcile(day=target)}
    diff.update(lifecycle_facts_reconcile(day=target))  # transitions, credits, landing, deals
    diff["holdout"] = holdout_reconcile()  # recounted from every enrollment
    diff["landing_rollup"] = landing_rollup_reconcile()  # after the landing facts above
    diff.update(stage_facts_reconcile(day=target))  # stage entries and populations
    return {"day": target.isoformat(), **{k: len(v) for k, v in diff.items()}}


@shared_task(name="reports.tasks.review_digest", bind=True, base=MailTask)
def review_digest(self, user_ids: list[int] | None = None) -> int:
    """Weekly: bring the register in step with what exists, then mail overdue items to owners.

    The mail server failing is retried with back-off (crm.mail_tasks), so the week's digest
    still goes out; a retry mails only the recipients that failed (``user_ids``).
    Returns the emails sent by this try.
    """
    from .review.digest import review_digest_send
    from .review.services import register_sync

    if user_ids is None:
        register_sync()
    result = review_digest_send(user_ids=user_ids)
    if result.failed:
        raise self.retry_recipients(kwargs={"user_ids": result.failed}, exc=result.error)
    return result.sent
