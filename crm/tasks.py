"""CRM background tasks: thin wrappers that take ids and call a service."""

from celery import shared_task


@shared_task(name="crm.tasks.refresh_segments")
def refresh_segments() -> None:
    """Periodic full refresh of dynamic segment membership (set-based diff).

    Relative conditions ("within the last N days") drift, so contacts age out of a segment
    without any event; this catches them. Safe on several workers: each segment's refresh
    locks its row.
    """
    from crm.segments import segments_refresh_all

    segments_refresh_all()


@shared_task(name="crm.tasks.refresh_segment")
def refresh_segment(segment_id: int) -> None:
    """Refresh one segment (and the segments that read it), e.g. after an edit."""
    from crm.models import Segment
    from crm.segments import segment_refresh

    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is not None:
        segment_refresh(segment=segment)


@shared_task(name="crm.tasks.drain_activity_queue")
def drain_activity_queue() -> None:
    """Apply the queued "activities recorded" batches (crm.activity_queue).

    Enqueued when a recording transaction commits, and every minute by beat in case a
    message was lost. Drains take turns, so several workers apply batches in order.
    """
    from crm.activity_queue import queue_drain

    queue_drain()
