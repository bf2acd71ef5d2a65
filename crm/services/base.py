"""Writes on contacts and companies that span models (Style: services own the transaction)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from .. import events, lifecycle
from ..models import Contact, EmailStatus


def contacts_create_bulk(
    *, rows: Iterable[dict], by_user=None, by_system: str = ""
) -> list[Contact]:
    """Create contacts from validated field dicts, with their first lifecycle transition.

    Emails are normalised; ``created_suppressed`` is frozen from the initial email status
    and consent (METRICS.md, "new leads"). Callers have already removed existing emails.
    """
    now = timezone.now()
    contacts = []
    for row in rows:
        contact = Contact(**row)
        contact.email = Contact.normalise_email(contact.email)
        contact.created_at = contact.created_at or now
        contact.stage_changed_at = contact.created_at
        if contact.email_status != EmailStatus.ACTIVE and not contact.email_status_changed_at:
            contact.email_status_changed_at = contact.created_at
        contact.created_suppressed = contact.is_suppressed
        contacts.append(contact)
    if not contacts:
        return []
    with transaction.atomic():
        Contact.objects.bulk_create(contacts)
        lifecycle.stages_initial(contacts=contacts, by_user=by_user, by_system=by_system)
        events.contacts_changed([c.pk for c in contacts], at=now)
    return contacts


def contact_create(*, by_user=None, by_system: str = "", **fields) -> Contact:
    """Create one contact (see :func:`contacts_create_bulk`)."""
    return contacts_create_bulk(rows=[fields], by_user=by_user, by_system=by_system)[0]
