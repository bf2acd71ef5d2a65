"""The queue of recorded batches whose "activities recorded" handlers have not run yet."""

from django.db import models


class QueuedBatchQuerySet(models.QuerySet):
    def pending(self) -> "QueuedBatchQuerySet":
        """Batches waiting to be applied: not parked after repeated failures."""
        return self.filter(parked_at__isnull=True)

    def due(self, now) -> "QueuedBatchQuerySet":
        """Pending batches a drain applies now (a failed one waits out its back-off)."""
        return self.pending().filter(models.Q(retry_at__isnull=True) | models.Q(retry_at__lte=now))


class QueuedBatch(models.Model):
    """One stored batch of activities waiting for its queued handlers (crm.activity_queue).

    Written in the recording transaction, so a batch is queued exactly when its
    activities are stored; deleted in the transaction that runs its handlers, so each batch
    is applied exactly once. The activities are referenced by id, not copied: a batch is
    one row however many activities it holds, and the drain reads them back in one query.
    """

    activity_ids = models.JSONField(help_text="Ids of the batch's stored activities.")
    contact_ids = models.JSONField(
        default=list, help_text="Each activity's contact, in the order of activity_ids."
    )
    created_contact_ids = models.JSONField(
        default=list, help_text="Contacts the batch created (self-identifying activities)."
    )
    size = models.PositiveIntegerField(help_text="How many activities the batch holds.")
    queued_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Failed drains so far; the batch is parked after too many."
    )
    last_error = models.TextField(blank=True)
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="After a failure: not retried before this time."
    )
    parked_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when the batch failed too often; an admin retries it after a fix.",
    )

    objects = QueuedBatchQuerySet.as_manager()

    class Meta:
        # No secondary index: the table holds seconds of backlog, read in primary-key order.
        ordering = ["pk"]
        verbose_name = "queued activity batch"
        verbose_name_plural = "queued activity batches"

    def __str__(self) -> str:
        state = "parked" if self.parked_at else "pending"
        return f"batch {self.pk}: {self.size} activities, {state}"
