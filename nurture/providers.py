"""What nurture adds to CRM pages (settings CONTACT_TIMELINE_PROVIDERS and
CONTACT_SUMMARY_PROVIDERS, see crm.extensions)."""

from __future__ import annotations

from django.db.models import BooleanField, Case, F, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce

from crm.extensions import TimelineEntry

from .models import EmailSend, Enrollment


def timeline(contact, *, before=None, limit: int = 50) -> list[TimelineEntry]:
    """Enrollments (entered, left) and sends of one contact, newest first: two queries.

    Each entry is cut at the time it shows (crm.timeline's contract: at or before
    ``before``) — an enrollment's exit at its exit, a send at its sending — so an entry
    newer than the cursor never comes back on an older page. Enrollments are read in the
    order of their newest entry shown, so an old enrollment's recent exit is not missed.
    """
    enrollments = Enrollment.objects.filter(contact=contact).select_related("program")
    sends = EmailSend.objects.filter(contact=contact).select_related("program")
    sends = sends.annotate(shown_at=Coalesce("sent_at", "created_at"))
    exit_shown = Q(exited_at__isnull=False)
    if before is not None:
        enrollments = enrollments.filter(entered_at__lte=before)
        sends = sends.filter(shown_at__lte=before)
        exit_shown &= Q(exited_at__lte=before)
    enrollments = enrollments.annotate(
        exit_shown=Case(When(exit_shown, then=True), default=False, output_field=BooleanField()),
        newest=Case(When(exit_shown, then=F("exited_at")), default=F("entered_at")),
    )
    # (entry, kind of row, row id): the order among entries of one time must not depend on
    # the cursor (crm.timeline pages on it), so it is by kind, then newest row first.
    rows: list[tuple[TimelineEntry, int, int]] = []
    for e in enrollments.order_by("-newest", "-id")[:limit]:
        url = e.program.get_absolute_url()
        entered = TimelineEntry(
            e.entered_at, "enrollment", f"Entered {e.program.name}", e.source, url
        )
        rows.append((entered, 0, e.pk))
        if e.exit_shown:
            title = (
                f"Left {e.program.name}" if e.state == "exited" else f"Completed {e.program.name}"
            )
            rows.append(
                (TimelineEntry(e.exited_at, "enrollment", title, e.exit_reason, url), 1, e.pk)
            )
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
