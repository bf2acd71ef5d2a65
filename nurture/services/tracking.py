"""Opens, clicks, unsubscribes and provider events → activities (through crm.ingest)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from crm.ingest import IngestError, activities_record
from crm.models import Activity, ActivityKind, Contact, EmailStatus, Source
from crm.models.activities import UNSUBSCRIBE_SCOPE_PROGRAM, global_unsubscribe_q

from ..mail import recipient_digest
from ..models import EmailSend, Enrollment
from .enrollment import EXIT_UNSUBSCRIBED_PROGRAM, enrollments_exit

log = logging.getLogger(__name__)
# Image proxies and security scanners fetch the pixel without a person reading the mail.
# Apple Mail Privacy Protection cannot be told apart by IP offline; its proxy sends the
# bare "Mozilla/5.0" user agent, which no real mail client uses.
MACHINE_UA = re.compile(
    r"GoogleImageProxy|ggpht\.com|YahooMailProxy|Yahoo! Slurp|bot\b|crawler|spider|Barracuda|"
    r"Mimecast|Proofpoint|Symantec|Forcepoint|python-requests|curl/|wget|HeadlessChrome|"
    r"Microsoft Office Protocol Discovery|LinkedInBot|Slackbot",
    re.IGNORECASE,
)
MACHINE_OPEN_SECONDS = 5


def is_machine_open(user_agent: str, sent_at: datetime | None, at: datetime) -> bool:
    ua = (user_agent or "").strip()
    if not ua or ua == "Mozilla/5.0" or MACHINE_UA.search(ua):
        return True
    return bool(sent_at and at - sent_at < timedelta(seconds=MACHINE_OPEN_SECONDS))


def _send(message_id: str) -> EmailSend | None:
    # A "sending" send is being handed over (or was, and awaits its status update): its
    # recipient may already have it, so its open pixel and links work. An erased person's
    # reading is not recorded any more (the pixel is still served, crm.privacy).
    return (
        EmailSend.objects.filter(
            message_id=message_id,
            status__in=[EmailSend.Status.SENT, EmailSend.Status.SENDING],
            contact__erased_at__isnull=True,
        )
        .select_related("program", "contact")
        .first()
    )


def _item(send: EmailSend, kind: str, at: datetime, **extra) -> dict:
    return {
        "kind": kind,
        "occurred_at": min(at, timezone.now()),
        "contact": send.contact_id,
        "campaign": send.program.campaign_id,
        "message_id": send.message_id,
        **extra,
    }


def open_record(*, message_id: str, user_agent: str = "") -> bool:
    """Record a tracked open; return False for an unknown message."""
    send = _send(message_id)
    if send is None:
        return False
    now = timezone.now()
    activities_record(
        items=[
            _item(
                send,
                ActivityKind.EMAIL_OPENED,
                now,
                is_machine=is_machine_open(user_agent, send.sent_at, now),
                details={"user_agent": (user_agent or "")[:200], "via": "pixel"},
            )
        ],
        source=Source.OTHER,
    )
    return True


def click_record(*, message_id: str, index: int, user_agent: str = "") -> str | None:
    """Record a click and return the link it leads to; None if not a link of that email."""
    send = _send(message_id)
    if send is None or not isinstance(index, int) or not 0 <= index < len(send.links or []):
        return None
    url = send.links[index]
    if not url.startswith(("http://", "https://")):
        return None
    item = _item(
        send,
        ActivityKind.EMAIL_CLICKED,
        timezone.now(),
        url=url[:2000],
        is_machine=bool(MACHINE_UA.search(user_agent or "")),
        details={"url": url[:1000], "link": index},
    )
    try:
        activities_record(items=[item], source=Source.OTHER)
    except IngestError:
        item.pop("url")  # a URL the validator refuses is still the one in the email
        activities_record(items=[item], source=Source.OTHER)
    return url


def unsubscribe_send(message_id: str) -> EmailSend | None:
    return (
        EmailSend.objects.filter(message_id=message_id).select_related("program", "contact").first()
    )


def contact_unsubscribe(*, message_id: str, program_only: bool = False) -> EmailSend | None:
    """Unsubscribe the recipient of a send at once (or leave only its program).

    Leaving only the program is recorded as well: an ``email_unsubscribed`` activity of
    this email with details ``scope="program"`` (``crm.models.activities``), so it counts
    in the email's unsubscribe rate (METRICS.md) while ``crm.ingest`` leaves the address
    subscribed and nurture's handler leaves the contact's other programs alone; the exit
    from this program happens here, at once. Recorded once per email: a second submit,
    or one after an unsubscribe from all email by the same email, records nothing new.
    """
    send = unsubscribe_send(message_id)
    if send is None or send.contact.erased_at:  # erased: suppressed for good already
        return send
    unsubscribes = Activity.objects.filter(
        message_id=send.message_id,
        contact_id=send.contact_id,
        kind=ActivityKind.EMAIL_UNSUBSCRIBED,
    )
    with transaction.atomic():
        if program_only:
            left = enrollments_exit(
                queryset=Enrollment.objects.filter(
                    contact_id=send.contact_id, program=send.program
                ),
                reason=EXIT_UNSUBSCRIBED_PROGRAM,
            )
            if not left:  # finished already: remember the opt-out so it never re-enters
                Enrollment.objects.filter(pk=send.enrollment_id).update(
                    exit_reason=EXIT_UNSUBSCRIBED_PROGRAM
                )
            if not unsubscribes.exists():
                activities_record(
                    items=[
                        _item(
                            send,
                            ActivityKind.EMAIL_UNSUBSCRIBED,
                            timezone.now(),
                            external_id=f"unsub:{send.message_id}:program",
                            details={"via": "link", "scope": UNSUBSCRIBE_SCOPE_PROGRAM},
                        )
                    ],
                    source=Source.OTHER,
                )
            return send
        # A repeated POST of one unsubscribe (the mail client's one-click and the person's
        # own click) records it once; a contact re-activated since must be unsubscribed
        # again, so that one is recorded anew. The lock orders two concurrent POSTs.
        contact = (
            Contact.objects.select_for_update(no_key=True)
            .only("email_status")
            .get(pk=send.contact_id)
        )
        earlier = unsubscribes.filter(global_unsubscribe_q()).count()
        if earlier and contact.email_status != EmailStatus.ACTIVE:
            return send  # a retry: the address is suppressed already
        # crm.ingest suppresses the address in the same transaction; nurture's handler
        # ends the contact's live enrollments; the sender re-checks before each hand-over.
        external_id = f"unsub:{send.message_id}" + (f":{earlier + 1}" if earlier else "")
        activities_record(
            items=[
                _item(
                    send,
                    ActivityKind.EMAIL_UNSUBSCRIBED,
                    timezone.now(),
                    external_id=external_id,
                    details={"via": "link"},
                )
            ],
            source=Source.OTHER,
        )
    return send


# --- Provider webhooks (django-anymail normalised tracking events) ----------------------

ESP_SLUGS = {"Amazon SES": "amazon_ses", "Postmark": "postmark", "Mailgun": "mailgun"}
POSTMARK_FILTER_NOTICES = {"SpamNotification", "VirusNotification"}


def _classify(esp: str, event) -> tuple[str | None, dict]:
    et = event.event_type
    raw = event.esp_event if isinstance(event.esp_event, dict) else {}
    if et == "delivered":
        return ActivityKind.EMAIL_DELIVERED, {}
    if et == "deferred":
        # Delayed, not bounced: greylisting, a full queue, a DNS hiccup (Mailgun
        # failed/temporary, Postmark Transient or DnsError). The provider keeps trying and
        # reports a bounce of its own if it gives up, so a deferral records nothing:
        # neither suppression nor the bounce metrics may count it.
        return None, {}
    if esp == "postmark" and raw.get("Type") in POSTMARK_FILTER_NOTICES:
        # A receiving filter held the message (spam or virus scanner): not the person's
        # complaint and not a dead mailbox (Postmark leaves the address active), so a soft
        # bounce, where anymail says "complained" / "bounced".
        return ActivityKind.EMAIL_BOUNCED, {"bounce_type": "soft", "esp_type": raw["Type"]}
    if et in ("bounced", "rejected"):
        hard = et == "bounced" or (
            et == "rejected" and event.reject_reason in ("bounced", "invalid")
        )
        if esp == "postmark" and raw.get("Type") == "SoftBounce":
            hard = False
        if esp == "amazon_ses" and (raw.get("bounce") or {}).get("bounceType") == "Transient":
            hard = False  # SES gave up on a temporary failure (mailbox full …): a soft bounce
        details = {"bounce_type": "hard" if hard else "soft", "esp_type": et}
        if event.reject_reason:
            details["reason"] = str(event.reject_reason)
        if event.description:
            details["description"] = str(event.description)[:300]
        return ActivityKind.EMAIL_BOUNCED, details
    if et == "opened":
        return ActivityKind.EMAIL_OPENED, {}
    if et == "clicked":
        return ActivityKind.EMAIL_CLICKED, {"url": str(event.click_url or "")[:1000]}
    if et == "complained":
        return ActivityKind.EMAIL_COMPLAINED, {}
    if et == "unsubscribed":
        return ActivityKind.EMAIL_UNSUBSCRIBED, {}
    return None, {}


# The fields of a legacy (form-encoded) Mailgun webhook that sign the request, not the event.
_MAILGUN_SIGNATURE_FIELDS = {"token", "signature", "timestamp"}


def _mailgun_event_id(raw: dict) -> str | None:
    """The event's identity across Mailgun's retries. Anymail's ``event_id`` is the
    signature's token, which Mailgun draws anew for every attempt: a retried delivery would
    be recorded twice. ``event-data.id`` is unique within a day, so with the event's own
    timestamp it names the event; an event without an id, or a legacy form post, is
    named by its content without the signature."""
    data = raw.get("event-data")
    if isinstance(data, dict) and data.get("id"):
        return f"{data['id']}:{data.get('timestamp')}"
    if not isinstance(data, dict):  # legacy: the signature's fields sit among the event's
        data = {k: v for k, v in raw.items() if k not in _MAILGUN_SIGNATURE_FIELDS}
    if not data:
        return None
    body = json.dumps(data, sort_keys=True, default=str)
    return "h-" + hashlib.sha256(body.encode()).hexdigest()


def _event_id(esp: str, event) -> str:
    event_id = event.event_id
    if esp == "mailgun" and isinstance(event.esp_event, dict):
        event_id = _mailgun_event_id(event.esp_event) or event_id
    if not event_id:
        # No provider id (e.g. Postmark opens): the body itself identifies a replay.
        body = json.dumps(event.esp_event, sort_keys=True, default=str)
        event_id = hashlib.sha256(body.encode()).hexdigest()
    external = f"{esp}:{event_id}"
    if event.recipient and esp == "amazon_ses":
        # One SES notification may name several recipients, each its own event; named by
        # a keyed digest, not the address, which erasure could not reach in this column.
        external += f":{recipient_digest(event.recipient)}"
    if len(external) > 200:
        external = f"{esp}:{hashlib.sha256(external.encode()).hexdigest()}"
    return external


def esp_event_record(*, esp_name: str, event) -> bool:
    """Turn one normalised provider event into an activity; False if it records nothing.

    Unknown messages or recipients are logged and ignored (the webhook still answers 200
    so the provider does not retry forever). Replays are dropped by ``external_id``.
    """
    esp = ESP_SLUGS.get(esp_name, re.sub(r"\W+", "_", esp_name.lower()))
    kind, details = _classify(esp, event)
    if kind is None:
        log.info("%s event %s ignored (no activity for it)", esp, event.event_type)
        return False
    ids = {str(event.message_id or "").strip().strip("<>")} - {""}
    meta_id = (event.metadata or {}).get("leadcycle_message_id")
    recipient = (event.recipient or "").strip().lower()
    if not ids and not meta_id:
        # Legacy payloads name no message: a known recipient still gets the event, with
        # no message or campaign (a bounce or complaint must still suppress the address).
        contact = Contact.objects.filter(email=Contact.normalise_email(recipient)).first()
        if not recipient or contact is None:
            log.info("%s %s event without message or known recipient ignored", esp, kind)
            return False
        send = None
    else:
        query = Q(esp_message_id__in=ids) | Q(message_id__in=ids)
        if meta_id:
            query |= Q(message_id=str(meta_id))
        send = EmailSend.objects.filter(query).select_related("program", "contact").first()
        if send is None:
            log.info("%s %s event for unknown message %r ignored", esp, event.event_type, ids)
            return False
        contact = send.contact
        if contact.erased_at:
            log.info("%s %s event for an erased contact ignored", esp, kind)
            return False
        if recipient and recipient != contact.email.lower():
            if not send.to_digest or recipient_digest(recipient) != send.to_digest:
                log.info("%s event for another recipient of %r ignored", esp, ids)
                return False
            # Sent to an address the contact no longer has (merged from a duplicate, or
            # edited since): still this person's email and behaviour, but a hard bounce
            # says nothing of the current address (crm.ingest does not suppress it).
            details["address_replaced"] = True
    at = event.timestamp or timezone.now()
    extra = {"external_id": _event_id(esp, event), "details": {"esp": esp, **details}}
    if kind == ActivityKind.EMAIL_OPENED:
        sent_at = send.sent_at if send else None
        extra["is_machine"] = is_machine_open(event.user_agent or "", sent_at, at)
    if kind == ActivityKind.EMAIL_CLICKED:  # a link scanner's click, as click_record has it
        extra["is_machine"] = bool(MACHINE_UA.search(event.user_agent or ""))
    if kind == ActivityKind.EMAIL_CLICKED and details.get("url", "").startswith("http"):
        extra["url"] = details["url"]
    if send is not None:
        item = _item(send, kind, at, **extra)
    else:
        item = {
            "kind": kind,
            "occurred_at": min(at, timezone.now()),
            "contact": contact.pk,
            **extra,
        }
    try:
        activities_record(items=[item], source=Source.OTHER)
    except IngestError as exc:
        if "url" not in item:
            raise
        log.info("%s click URL refused (%s); recorded without it", esp, exc.errors)
        item.pop("url")
        activities_record(items=[item], source=Source.OTHER)
    return True
