"""What nurture adds to CRM pages (settings CONTACT_TIMELINE_PROVIDERS and
CONTACT_SUMMARY_PROVIDERS, see crm.extensions)."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery

from crm.extensions import TimelineEntry

from .models import EmailSend, Enrollment


def timeline(contact, *, before=None, limit: int = 50) -> list[TimelineEntry]:
    """Enrollments (entered, left) and sends of one contact, newest first: two queries."""
    enrollments = Enrollment.objects.filter(contact=contact).select_related("program")
    sends = EmailSend.objects.filter(contact=contact).select_related("program")
    if before is not None:
        enrollments = enrollments.filter(entered_at__lt=before)
        sends = sends.filter(created_at__lt=before)
    entries: list[TimelineEntry] = []
    for e in enrollments.order_by("-entered_at")[:limit]:
        url = e.program.get_absolute_url()
        entries.append(
            TimelineEntry(e.entered_at, "enrollment", f"Entered {e.program.name}", e.source, url)
        )
        if e.exited_at:
            title = (
                f"Left {e.program.name}" if e.state == "exited" else f"Completed {e.program.name}"
            )
            entries.append(TimelineEntry(e.exited_at, "enrollment", title, e.exit_reason, url))
    for s in sends.order_by("-created_at")[:limit]:
        if s.status == EmailSend.Status.SENT:
            title = f"Email “{s.subject}” ({s.program.name})"
        else:
            title = f"Email not sent: {s.skip_reason or s.status} ({s.program.name})"
        entries.append(
            TimelineEntry(
                s.sent_at or s.created_at, "email", title, "", s.program.get_absolute_url()
            )
        )
    entries.sort(key=lambda t: t.at, reverse=True)
    return entries[:limit]


def summaries(contact_ids) -> dict[int, list[str]]:
    """ "last program: X" per contact, in one query."""
    ids = list(contact_ids)
    if not ids:
        return {}
    last = Enrollment.objects.filter(contact_id=OuterRef("contact_id")).order_by(
        "-entered_at", "-id"
    )
    rows = Enrollment.objects.filter(
        contact_id__in=ids, pk=Subquery(last.values("pk")[:1])
    ).values_list("contact_id", "program__name", "state")
    return {cid: [f"last program: {name} ({state})"] for cid, name, state in rows}
