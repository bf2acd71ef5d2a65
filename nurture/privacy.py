"""What nurture holds about a contact, for crm.privacy (settings.CONTACT_DATA_PROVIDERS).

Enrollments keep their program, state and dates (program funnels count them); sends keep
their status, times and message id (the email report joins events to sends by it) but
lose the subject (personalised with the name) and the links (may carry the address in a
query string) and any provider error text (often quotes the address). Copies of the
person's emails kept by the file e-mail backend (the Outbox, ``nurture.mailfiles``) are
deleted once the erasure commits.
"""

from __future__ import annotations

from django.db import transaction

from .mailfiles import messages_drop_to
from .models import EmailSend, Enrollment


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def export(contact) -> dict:
    enrollments = [
        {
            **row,
            "entered_at": _iso(row["entered_at"]),
            "exited_at": _iso(row["exited_at"]),
            "next_run_at": _iso(row["next_run_at"]),
        }
        for row in Enrollment.objects.filter(contact=contact)
        .order_by("entered_at", "id")
        .values(
            "id",
            "program_id",
            "program__name",
            "state",
            "entered_at",
            "exited_at",
            "exit_reason",
            "source",
            "next_run_at",
        )
    ]
    sends = [
        {**row, "created_at": _iso(row["created_at"]), "sent_at": _iso(row["sent_at"])}
        for row in EmailSend.objects.filter(contact=contact)
        .order_by("created_at", "id")
        .values(
            "id",
            "program_id",
            "step_id",
            "template_id",
            "message_id",
            "status",
            "skip_reason",
            "subject",
            "links",
            "created_at",
            "sent_at",
        )
    ]
    return {"enrollments": enrollments, "sends": sends}


def erase(contact) -> None:
    EmailSend.objects.filter(contact=contact).update(subject="", links=[], error="")
    address = contact.email  # still the person's: crm.privacy replaces it after the providers
    transaction.on_commit(lambda: messages_drop_to(address))
