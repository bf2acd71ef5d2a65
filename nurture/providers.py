"""What nurture adds to CRM pages (settings CONTACT_TIMELINE_PROVIDERS and
CONTACT_SUMMARY_PROVIDERS, see crm.extensions)."""

from __future__ import annotations

from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Coalesce

from crm.extensions import TimelineEntry

from .models import EmailSend, Enrollment


def timeline(contact, *, before=None, limit: int = 50) -> list[TimelineEntry]:
    """Enrollments (entered, left) and sends of one contact, newest first: three queries.

    Each entry is cut at the time it shows (crm.timeline's contract: at or before
    ``before``) — an enrollment's exit at its exit, a send at its sending — so an entry
    newer than the cursor never comes back on an older page.
    """
    enrollments = Enrollment.objects.filter(contact=contact).select_related("program")
    sends = EmailSend.objects.filter(contact=contact).select_related("program")
    sends = sends.annotate(shown_at=Coalesce("sent_at", "created_at"))
    entered, left = enrollments, enrollments.filter(exited_at__isnull=False)
    if before is not None:
        entered = entered.filter(entered_at__lte=before)
        left = left.filter(exited_at__lte=before)
        sends = sends.filter(shown_at__lte=before)
    # (entry, kind of row, row id): each list below is read in the order the entries are
    # merged in — time, then kind, then newest row — so each is a true prefix of it and
    # the order among entries of one time never depends on the cursor (crm.timeline).
    rows: list[tuple[TimelineEntry, int, int]] = []
    for e in entered.order_by("-entered_at", "-id")[:limit]:
        url = e.program.get_absolute_url()
        entry = TimelineEntry(
            e.entered_at, "enrollment", f"Entered {e.program.name}", e.source, url
        )
        rows.append((entry, 0, e.pk))
    for e in left.order_by("-exited_at", "-id")[:limit]:
        title = f"Left {e.program.name}" if e.state == "exited" else f"Completed {e.program.name}"
        entry = TimelineEntry(
            e.exited_at, "enrollment", title, e.exit_reason, e.program.get_absolute_url()
        )
        rows.append((entry, 1, e.pk))
    for s in sends.order_by("-shown_at", "-id")[:limit]:
        if s.status == EmailSend.Status.SENT:
            title = f"Email “{s.subject}” ({s.program.name})"
        else:
            title = f"Email not sent: {s.skip_reason or s.status} ({s.program.name})"
        entry = TimelineEntry(s.shown_at, "email", title, "", s.program.get_absolute_url())
        rows.append((entry, 2, s.pk))
    rows.sort(key=lambda r: (r[0].at, -r[1], r[2]), reverse=True)
    entries = [entry for entry, _, _ in rows]
    return entries[:limit]


def summaries(contact_ids) -> dict[int, list[str]]:
    """ "last program: X (state)" per contact, in one query: the program of the last email
    the contact was sent — the one that touched it last — or, with none sent yet, the
    program it entered last."""
    ids = list(contact_ids)
    if not ids:
        return {}
    sent = EmailSend.objects.filter(
        contact_id=OuterRef("contact_id"), status=EmailSend.Status.SENT
    ).order_by("-created_at", "-id")
    entered = Enrollment.objects.filter(contact_id=OuterRef("contact_id")).order_by(
        "-entered_at", "-id"
    )
    last = Coalesce(Subquery(sent.values("enrollment_id")[:1]), Subquery(entered.values("pk")[:1]))
    rows = (
        Enrollment.objects.filter(contact_id__in=ids)
        .annotate(last=last)
        .filter(pk=F("last"))
        .values_list("contact_id", "program__name", "state")
    )
    return {cid: [f"last program: {name} ({state})"] for cid, name, state in rows}
