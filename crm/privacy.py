"""Personal data: export everything held about a contact, and erase it on request.

Erasure anonymises instead of deleting: the contact row, its activities, lifecycle history,
deals and ledger entries stay so every aggregate report (funnel, email, cost per MQL,
revenue) keeps its totals, but nothing left identifies the person. Other apps hold data
about contacts too; they contribute through ``settings.CONTACT_DATA_PROVIDERS``, a list of
dotted paths to modules with ``export(contact) -> dict`` and
``erase(contact) -> None`` — the core never imports them (ARCHITECTURE.md, "Dependencies
between apps").
"""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import (
    Activity,
    ConsentBasis,
    Contact,
    Deal,
    EmailStatus,
    LifecycleTransition,
    Notification,
    Reopening,
    SegmentMembership,
)

ERASED_DOMAIN = "erased.invalid"  # RFC 2606: can never be a real mailbox


def erased_email(contact_id: int) -> str:
    return f"erased-{contact_id}@{ERASED_DOMAIN}"


def _providers() -> list[tuple[str, Any]]:
    """(app label, module) for each dotted module path in ``CONTACT_DATA_PROVIDERS``."""
    return [
        (path.split(".", 1)[0], import_module(path))
        for path in getattr(settings, "CONTACT_DATA_PROVIDERS", ())
    ]


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def contact_data_export(*, contact: Contact) -> dict:
    """Everything held about one contact, as JSON-ready data (GDPR art. 15 / 20)."""
    company = contact.company
    data: dict[str, Any] = {
        "contact": {
            "id": contact.pk,
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "job_title": contact.job_title,
            "phone": contact.phone,
            "country": contact.country,
            "timezone": contact.timezone,
            "source": contact.source,
            "acquired_by_campaign": contact.acquired_by_id,
            "owner": contact.owner.get_username() if contact.owner_id else None,
            "stage": contact.stage,
            "stage_changed_at": _iso(contact.stage_changed_at),
            "recycle_round": contact.recycle_round,
            "score": contact.scorecard.score,
            "email_status": contact.email_status,
            "email_status_changed_at": _iso(contact.email_status_changed_at),
            "consent_basis": contact.consent_basis,
            "consent_given_at": _iso(contact.consent_given_at),
            "consent_source": contact.consent_source,
            "attributes": contact.attributes,
            "created_at": _iso(contact.created_at),
            "updated_at": _iso(contact.updated_at),
            "erased_at": _iso(contact.erased_at),
        },
        "company": (
            {
                "id": company.pk,
                "name": company.name,
                "domain": company.domain,
                "industry": company.industry,
                "size_band": company.size_band,
                "country": company.country,
            }
            if company
            else None
        ),
        "activities": [
            {**row, "occurred_at": _iso(row["occurred_at"])}
            for row in Activity.objects.filter(contact=contact)
            .order_by("occurred_at", "id")
            .values(
                "id",
                "kind",
                "occurred_at",
                "campaign_id",
                "message_id",
                "url",
                "is_machine",
                "details",
            )
            .iterator(chunk_size=2000)
        ],
        "history": [
            {**row, "at": _iso(row["at"])}
            for row in LifecycleTransition.objects.filter(contact=contact)
            .order_by("at", "id")
            .values("from_stage", "to_stage", "at", "by_system", "reason_code", "note")
        ],
        "reopenings": [
            {**row, "at": _iso(row["at"])}
            for row in Reopening.objects.filter(contact=contact)
            .order_by("at")
            .values("recycle_round", "at")
        ],
        "deals": [
            {**row, "created_at": _iso(row["created_at"]), "closed_at": _iso(row["closed_at"])}
            for row in Deal.objects.filter(contact=contact)
            .order_by("created_at", "id")
            .values("id", "name", "amount", "status", "created_at", "closed_at", "lost_reason")
        ],
        "segments": [
            {**row, "joined_at": _iso(row["joined_at"])}
            for row in SegmentMembership.objects.filter(contact=contact)
            .order_by("segment__name")
            .values("segment_id", "segment__name", "joined_at")
        ],
    }
    for row in data["deals"]:
        row["amount"] = str(row["amount"])
    for label, provider in _providers():
        data[label] = provider.export(contact)
    return data


def contact_erase(*, contact: Contact, by=None) -> Contact:
    """Anonymise a contact and everything that names it, keeping the rows reports count.

    Kept: stage, score, dates, recycle round, campaign links, activity kinds/times/message
    ids, transitions, deals' amounts and statuses, the page an activity happened on.
    Cleared: the address (replaced by an ``erased.invalid`` one), names, phone, title,
    attributes, consent source, activity details and the query string and fragment of
    activity URLs, transition notes, deal names and lost reasons (free text sales typed),
    the Django admin's change log of the contact and its deals, and what other apps hold
    (providers). The
    contact stays suppressed for good (no consent basis, unsubscribed). No "contacts
    changed" event is published on purpose: a re-score on the blanked profile would move
    the score and the stage, and reports must keep their totals.
    """
    with transaction.atomic():
        contact = Contact.objects.select_for_update().get(pk=contact.pk)
        old = _identifiers(contact)
        now = timezone.now()
        _activities_scrub(contact)
        # After the scrub: a provider may rebuild what it derives from activities.
        for _path, provider in _providers():
            provider.erase(contact)
        LifecycleTransition.objects.filter(contact=contact).exclude(note="").update(note="")
        deal_ids = list(Deal.objects.filter(contact=contact).values_list("pk", flat=True))
        Deal.objects.filter(pk__in=deal_ids).update(
            name="Deal of an erased contact", lost_reason=""
        )
        _notifications_scrub(contact, old)
        _admin_log_scrub(Contact, [contact.pk], f"Contact #{contact.pk}")
        _admin_log_scrub(Deal, deal_ids, "Deal of an erased contact")
        Contact.objects.filter(pk=contact.pk).update(
            email=erased_email(contact.pk),
            first_name="",
            last_name="",
            job_title="",
            phone="",
            timezone="",
            attributes={},
            consent_basis=ConsentBasis.NONE,
            consent_given_at=None,
            consent_source="",
            email_status=EmailStatus.UNSUBSCRIBED,
            email_status_changed_at=contact.email_status_changed_at or now,
            erased_at=now,
            updated_at=now,
        )
    contact.refresh_from_db()
    return contact


def _activities_scrub(contact: Contact) -> None:
    """Clear details; keep each URL's page but drop its query string and fragment.

    Landing-page reports count visitors per page, so the page stays; what identifies a
    person in a URL (``?email=…``, campaign-tracking ids, tokens) sits after ``?`` or ``#``.
    One contact's activities: bounded, so a chunked bulk_update is fine here.
    """
    Activity.objects.filter(contact=contact).exclude(details={}).update(details={})
    changed = []
    rows = Activity.objects.filter(contact=contact).exclude(url="").only("pk", "url")
    for activity in rows.iterator(chunk_size=1000):
        page = _page_of(activity.url)
        if page != activity.url:
            activity.url = page
            changed.append(activity)
    Activity.objects.bulk_update(changed, ["url"], batch_size=1000)


def _page_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:  # credentials in the authority: keep nothing
        return ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _identifiers(contact: Contact) -> list[str]:
    """The strings that identify the person and may have been copied into other rows."""
    values = [contact.email, contact.full_name, contact.phone]
    return [v for v in values if v and len(v) >= 3]


def _notifications_scrub(contact: Contact, identifiers: list[str]) -> None:
    """Notices about the contact (new MQL, nurture "notify the owner") name the person."""
    about = Q(url=contact.get_absolute_url())
    for value in identifiers:
        about |= Q(text__icontains=value)
    Notification.objects.filter(about).update(text=f"Contact #{contact.pk} (personal data erased)")


def _admin_log_scrub(model, ids, label: str) -> None:
    """The Django admin's change log keeps each object's str() (a contact's name or
    address, a deal's name) and the changed fields' names."""
    from django.contrib.admin.models import LogEntry

    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(model), object_id__in=[str(i) for i in ids]
    ).update(object_repr=label, change_message="")
