"""Provider events: whose they are, and what they may change.

A send records a keyed digest of the address it went to (``EmailSend.to_digest``): an
event for an address the contact no longer has (a merged duplicate's, an edited one) is
still the contact's, but its hard bounce does not suppress the current address; an event
naming another recipient is ignored. Erased contacts record nothing more. Mailgun's
signature is refused when stale or replayed; Postmark's filter notices are soft bounces;
a scanner's click reported by a provider is a machine's, as on the redirect.
"""

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import Activity, Contact
from crm.privacy import contact_erase
from crm.services.contacts import contact_merge
from nurture import tokens
from nurture.models import EmailSend
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory
from tests.nurture.test_webhooks import AUTH, DATA, SECRET, SIGNING_KEY

pytestmark = pytest.mark.django_db
SCANNER_UA = "Mozilla/5.0 (compatible; Barracuda link protection) Mimecast"


@pytest.fixture(autouse=True)
def _setup(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://crm.example.com"


def _sent(contact) -> EmailSend:
    """An email really sent to the contact (the sender records the address's digest)."""
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    assert enrollments_advance().sent == 1
    send = EmailSend.objects.get(contact=contact)
    EmailSend.objects.filter(pk=send.pk).update(sent_at=timezone.now() - timedelta(hours=1))
    return send


def _postmark(client, name, send, address, **fields):
    body = json.loads((DATA / name).read_text())
    body |= {"MessageID": send.message_id, **fields}
    body["Recipient" if "Recipient" in body else "Email"] = address
    return client.post("/webhooks/postmark/tracking/", json.dumps(body), "application/json", **AUTH)


def _merged():
    keep = ContactFactory(
        email="ann@work.example", consent_basis="consent", created_at=timezone.now() - timedelta(9)
    )
    dup = ContactFactory(email="ann.private@home.example", consent_basis="consent")
    send = _sent(dup)
    contact_merge(keep=keep, duplicate=dup)
    return keep, send


def test_a_complaint_about_an_email_sent_to_a_merged_duplicate_suppresses_the_kept_contact(
    client,
):
    keep, send = _merged()
    assert (
        _postmark(client, "postmark/spam_event.json", send, "ann.private@home.example").status_code
        == 200
    )
    keep.refresh_from_db()
    assert Activity.objects.filter(kind="email_complained", contact=keep).count() == 1
    assert keep.email_status == "complained"


def test_deliveries_of_a_merged_duplicates_email_are_recorded_for_the_kept_contact(client):
    keep, send = _merged()
    _postmark(client, "postmark/delivered_event.json", send, "ANN.private@home.example")
    assert Activity.objects.filter(kind="email_delivered", contact=keep).count() == 1


def test_a_hard_bounce_of_an_address_the_contact_no_longer_has_does_not_suppress_it(client):
    keep, send = _merged()
    _postmark(client, "postmark/bounce_event.json", send, "ann.private@home.example")
    bounce = Activity.objects.get(kind="email_bounced", contact=keep)
    assert bounce.details["bounce_type"] == "hard"  # the email did bounce (reports count it)
    assert bounce.details["address_replaced"] is True
    keep.refresh_from_db()
    assert keep.email_status == "active"


def test_an_edited_address_keeps_the_old_emails_events(client):
    contact = ContactFactory(email="old@example.com", consent_basis="consent")
    send = _sent(contact)
    Contact.objects.filter(pk=contact.pk).update(email="new@example.com")
    _postmark(client, "postmark/open_event.json", send, "old@example.com")
    assert Activity.objects.filter(kind="email_opened", contact=contact).count() == 1


def test_an_event_for_another_recipient_of_the_message_is_ignored(client):
    contact = ContactFactory(email="one@example.com", consent_basis="consent")
    send = _sent(contact)
    _postmark(client, "postmark/bounce_event.json", send, "someone.else@example.com")
    assert not Activity.objects.filter(kind="email_bounced").exists()
    contact.refresh_from_db()
    assert contact.email_status == "active"


def test_an_ses_event_id_names_no_address(client):
    contact = ContactFactory(email="zq@privacy-probe.example", consent_basis="consent")
    send = _sent(contact)
    body = json.loads((DATA / "amazon_ses/delivery_event.json").read_text())
    body["delivery"]["recipients"] = body["mail"]["destination"] = [contact.email]
    body["mail"]["messageId"] = send.message_id
    sns = {"Type": "Notification", "MessageId": "sns-1", "Message": json.dumps(body)}
    response = client.post(
        "/webhooks/amazon_ses/tracking/",
        json.dumps(sns),
        "text/plain",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE="Notification",
        HTTP_X_AMZ_SNS_MESSAGE_ID="sns-1",
        **AUTH,
    )
    assert response.status_code == 200
    external_id = Activity.objects.get(kind="email_delivered").external_id
    assert external_id.startswith("amazon_ses:")
    assert "privacy-probe" not in external_id


def test_an_erased_contact_records_nothing_more(client):
    contact = ContactFactory(email="zq@privacy-probe.example", consent_basis="consent")
    send = _sent(contact)
    contact_erase(contact=contact)
    before = Activity.objects.count()
    pixel = client.get(
        f"/t/o/{tokens.make(tokens.OPEN, {'m': send.message_id})}.gif",
        HTTP_USER_AGENT="Mozilla/5.0 (Windows NT 10.0) Thunderbird/115.0",
    )
    assert pixel.status_code == 200
    assert pixel["Content-Type"] == "image/gif"
    unsubscribe = client.post(f"/u/{tokens.make(tokens.UNSUBSCRIBE, {'m': send.message_id})}")
    assert unsubscribe.status_code == 200
    _postmark(client, "postmark/open_event.json", send, "zq@privacy-probe.example")
    assert Activity.objects.count() == before


def test_a_scanners_click_reported_by_the_provider_is_a_machines(client):
    contact = ContactFactory(consent_basis="consent")
    send = _sent(contact)
    _postmark(client, "postmark/click_event.json", send, contact.email, UserAgent=SCANNER_UA)
    assert Activity.objects.get(kind="email_clicked").is_machine is True


@pytest.mark.parametrize("kind", ["SpamNotification", "VirusNotification"])
def test_postmark_filter_notices_are_soft_bounces(client, kind):
    contact = ContactFactory(consent_basis="consent")
    send = _sent(contact)
    _postmark(client, "postmark/bounce_event.json", send, contact.email, Type=kind, Inactive=False)
    bounce = Activity.objects.get(contact=contact, kind="email_bounced")
    assert bounce.details["bounce_type"] == "soft"
    contact.refresh_from_db()
    assert contact.email_status == "active"


def _mailgun_post(client, send, contact, *, timestamp, token, auth=True):
    body = json.loads((DATA / "mailgun/complained_event.json").read_text())
    body["event-data"]["recipient"] = contact.email
    body["event-data"]["message"]["headers"]["message-id"] = send.message_id
    body["event-data"]["id"] = f"forged-{contact.pk}"
    signature = hmac.new(
        SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    payload = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}}
    return client.post(
        "/webhooks/mailgun/tracking/",
        json.dumps({**payload, **body}),
        "application/json",
        **(AUTH if auth else {}),
    )


def test_mailgun_refuses_a_stale_signature_a_replayed_token_and_no_basic_auth(client):
    victims = [ContactFactory(consent_basis="consent") for _ in range(4)]
    sends = [_sent(c) for c in victims]
    now = int(time.time())
    stale = _mailgun_post(
        client, sends[0], victims[0], timestamp=str(now - 400 * 86400), token="t" * 50
    )
    future = _mailgun_post(client, sends[1], victims[1], timestamp=str(now + 3600), token="u" * 50)
    first = _mailgun_post(client, sends[2], victims[2], timestamp=str(now), token="v" * 50)
    replay = _mailgun_post(client, sends[3], victims[3], timestamp=str(now), token="v" * 50)
    no_auth = _mailgun_post(
        client, sends[3], victims[3], timestamp=str(now), token="w" * 50, auth=False
    )
    assert [stale.status_code, future.status_code, first.status_code, replay.status_code] == [
        400,
        400,
        200,
        400,
    ]
    assert no_auth.status_code in (400, 401, 404)
    complained = Contact.objects.filter(email_status="complained")
    assert list(complained.values_list("pk", flat=True)) == [victims[2].pk]


def test_a_merge_records_the_address_of_sends_written_before_sends_recorded_it(client):
    keep = ContactFactory(email="bo@work.example", created_at=timezone.now() - timedelta(9))
    dup = ContactFactory(email="bo.private@home.example", consent_basis="consent")
    send = _sent(dup)
    EmailSend.objects.filter(pk=send.pk).update(to_digest="")  # as before nurture 0008
    contact_merge(keep=keep, duplicate=dup)
    _postmark(client, "postmark/delivered_event.json", send, "bo.private@home.example")
    assert Activity.objects.filter(kind="email_delivered", contact=keep).count() == 1
