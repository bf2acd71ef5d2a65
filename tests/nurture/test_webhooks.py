"""Every real provider payload in shared/data/esp-webhooks turns into the right activity."""

import base64
import hashlib
import hmac
import json
import time
from email.utils import parseaddr
from pathlib import Path

import pytest

from crm.models import Activity
from nurture.models import EmailSend, Enrollment
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory

pytestmark = pytest.mark.django_db
DATA = Path("/work/shared/data/esp-webhooks")
if not DATA.exists():
    DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "esp-webhooks"
SECRET = "hook:s3cret"
SIGNING_KEY = "mailgun-signing-key"
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(SECRET.encode()).decode()}

# file → (kind, bounce_type) or None when the event records nothing.
EXPECTED = {
    "amazon_ses/bounce_event.json": ("email_bounced", "hard"),
    "amazon_ses/click_event.json": ("email_clicked", None),
    "amazon_ses/complaint_event.json": ("email_complained", None),
    "amazon_ses/delivery_event.json": ("email_delivered", None),
    "amazon_ses/multiple_bounce_event.json": ("email_bounced", "hard"),
    "amazon_ses/open_event.json": ("email_opened", None),
    "amazon_ses/reject_event.json": ("email_bounced", "soft"),
    "amazon_ses/rendering_failure_event.json": None,
    "amazon_ses/send_event.json": None,
    "mailgun/alt_smtp_code.json": ("email_bounced", "hard"),
    "mailgun/clicked_event.json": ("email_clicked", None),
    "mailgun/complained_event.json": ("email_complained", None),
    "mailgun/delivered_event.json": ("email_delivered", None),
    "mailgun/delivery_status_is_none_event.json": None,
    "mailgun/dropped_spam.json": ("email_bounced", "soft"),
    "mailgun/dropped_timed_out.json": ("email_bounced", "soft"),
    "mailgun/failed_greylisted_event.json": None,  # a deferral: Mailgun tries again
    "mailgun/failed_permanent_event.json": ("email_bounced", "hard"),
    "mailgun/failed_temporary_event.json": None,  # a deferral
    "mailgun/invalid_mailbox.json": ("email_bounced", "hard"),
    "mailgun/metadata_key_conflicts.json": ("email_clicked", None),
    "mailgun/metadata_post_fields.json": None,  # names neither message nor recipient
    "mailgun/misconfigured_inbound.json": None,  # an inbound route: refused with 400
    "mailgun/opened_event.json": ("email_opened", None),
    "mailgun/rejected_event.json": ("email_bounced", "soft"),
    "mailgun/tags.json": None,
    "mailgun/unsubscribed_event.json": ("email_unsubscribed", None),
    "mailgun/x_tags.json": None,
    "postmark/bounce_event.json": ("email_bounced", "hard"),
    "postmark/bounce_unsubscribe_variant.json": ("email_unsubscribed", None),
    "postmark/click_event.json": ("email_clicked", None),
    "postmark/delivered_event.json": ("email_delivered", None),
    "postmark/open_event.json": ("email_opened", None),
    "postmark/resubscribe.json": None,
    "postmark/spam_event.json": ("email_complained", None),
    "postmark/subscription_change_bounce.json": ("email_bounced", "hard"),
    "postmark/unsubscribe.json": ("email_unsubscribed", None),
}


@pytest.fixture(autouse=True)
def _anymail(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}


def _mailgun_signature(token="a" * 50):
    ts = str(int(time.time()))
    sig = hmac.new(SIGNING_KEY.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": ts, "token": token, "signature": sig}


def _post(client, name: str, body: dict, *, auth=True, token="a" * 50):
    esp = name.split("/")[0]
    extra = dict(AUTH) if auth else {}
    if esp == "postmark":
        return client.post(
            "/webhooks/postmark/tracking/", json.dumps(body), "application/json", **extra
        )
    if esp == "amazon_ses":
        sns = {"Type": "Notification", "MessageId": f"sns-{name}", "Message": json.dumps(body)}
        extra |= {
            "HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification",
            "HTTP_X_AMZ_SNS_MESSAGE_ID": sns["MessageId"],
        }
        return client.post("/webhooks/amazon_ses/tracking/", json.dumps(sns), "text/plain", **extra)
    if "event-data" in body:
        payload = {**body, "signature": _mailgun_signature(token)}
        return client.post(
            "/webhooks/mailgun/tracking/", json.dumps(payload), "application/json", **extra
        )
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
    if "tag" in body:
        form["tag"] = body["tag"]
    return client.post(
        "/webhooks/mailgun/tracking/", {**form, **_mailgun_signature(token)}, **extra
    )


def _message_and_recipient(esp: str, body: dict) -> tuple[str | None, str | None]:
    if esp == "postmark":
        return body.get("MessageID"), body.get("Recipient") or body.get("Email")
    if esp == "amazon_ses":
        mail = body.get("mail", {})
        recipients = (
            [r["emailAddress"] for r in body.get("bounce", {}).get("bouncedRecipients", [])]
            or [
                r["emailAddress"] for r in body.get("complaint", {}).get("complainedRecipients", [])
            ]
            or body.get("delivery", {}).get("recipients")
            or mail.get("destination")
        )
        return mail.get("messageId"), recipients[0]
    data = body.get("event-data", body)
    mid = (data.get("message", {}).get("headers", {}) or {}).get("message-id") or body.get(
        "Message-Id"
    )
    to = parseaddr((data.get("message", {}).get("headers", {}) or {}).get("to", ""))[1]
    return (mid or "").strip("<>") or None, data.get("recipient") or to or None


def _send_for(email: str | None, message_id: str | None) -> EmailSend | None:
    contact = ContactFactory(email=email.lower()) if email else ContactFactory()
    if not message_id:
        return None
    program = ProgramFactory()
    step = StepFactory(program=program)
    enrollment = Enrollment.objects.create(
        contact=contact, program=program, entered_at=contact.created_at, state="completed"
    )
    return EmailSend.objects.create(
        enrollment=enrollment,
        step=step,
        contact=contact,
        program=program,
        message_id=f"ours-{message_id}@crm.example.com",
        esp_message_id=message_id,
        status="sent",
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_payload_becomes_the_right_activity(client, name):
    assert (DATA / name).exists(), name
    body = json.loads((DATA / name).read_text())
    esp = name.split("/")[0]
    message_id, recipient = _message_and_recipient(esp, body)
    send = _send_for(recipient, message_id)

    response = _post(client, name, body)
    expected = EXPECTED[name]
    assert response.status_code == (400 if "misconfigured" in name else 200)
    activities = list(Activity.objects.all())
    if expected is None:
        assert activities == []
        return
    kind, bounce_type = expected
    assert [a.kind for a in activities] == [kind]
    activity = activities[0]
    assert activity.external_id.startswith(f"{esp}:")
    if send is not None:
        assert activity.message_id == send.message_id
        assert activity.campaign_id == send.program.campaign_id
    if bounce_type:
        assert activity.details["bounce_type"] == bounce_type
    if kind == "email_clicked":
        assert activity.details["url"].startswith("http")

    # A replayed delivery of the same event records nothing new — Mailgun signs each
    # retry with a new token.
    _post(client, name, body, token="b" * 50)
    assert Activity.objects.count() == 1


def test_two_mailgun_events_of_one_message_are_two_activities(client):
    """The retry identity is the event's (``event-data.id`` and timestamp): a second click
    on the same email, its own event, is recorded."""
    body = json.loads((DATA / "mailgun/clicked_event.json").read_text())
    message_id, recipient = _message_and_recipient("mailgun", body)
    _send_for(recipient, message_id)
    _post(client, "mailgun/clicked_event.json", body)
    second = json.loads(json.dumps(body))
    second["event-data"]["id"] = "second-click-id"
    second["event-data"]["timestamp"] += 30
    _post(client, "mailgun/clicked_event.json", second, token="c" * 50)
    _post(client, "mailgun/clicked_event.json", second, token="d" * 50)  # its retry
    assert Activity.objects.filter(kind="email_clicked").count() == 2


def test_a_retried_legacy_mailgun_post_is_recorded_once(client):
    """A legacy (form-encoded) Mailgun webhook has no event id; its retry differs only in
    the signature's fields, which sit among the event's."""
    contact = ContactFactory()
    send = _sent_to(contact)
    body = {
        "event": "opened",
        "recipient": contact.email,
        "message-id": send.message_id,
        "user-agent": "Mozilla/5.0",
    }
    for token in ("e" * 50, "f" * 50):
        assert _post(client, "mailgun/legacy.json", body, token=token).status_code == 200
    assert Activity.objects.filter(kind="email_opened").count() == 1


@pytest.mark.parametrize(
    "name", ["postmark/delivered_event.json", "amazon_ses/delivery_event.json"]
)
def test_webhooks_refuse_missing_or_wrong_basic_auth(client, name):
    body = json.loads((DATA / name).read_text())
    message_id, recipient = _message_and_recipient(name.split("/")[0], body)
    _send_for(recipient, message_id)
    response = _post(client, name, body, auth=False)
    assert 400 <= response.status_code < 500
    assert not Activity.objects.exists()


def test_mailgun_webhook_refuses_a_bad_signature(client):
    body = json.loads((DATA / "mailgun/delivered_event.json").read_text())
    payload = {**body, "signature": {**_mailgun_signature(), "signature": "0" * 64}}
    response = client.post(
        "/webhooks/mailgun/tracking/", json.dumps(payload), "application/json", **AUTH
    )
    assert response.status_code == 400
    assert not Activity.objects.exists()


def test_events_for_unknown_messages_are_answered_200_and_record_nothing(client):
    body = json.loads((DATA / "postmark/delivered_event.json").read_text())
    ContactFactory(email=body["Recipient"].lower())
    response = _post(client, "postmark/delivered_event.json", body)
    assert response.status_code == 200
    assert not Activity.objects.exists()


def test_a_hard_bounce_webhook_suppresses_the_contact(client):
    body = json.loads((DATA / "postmark/bounce_event.json").read_text())
    send = _send_for(body["Email"], body["MessageID"])
    _post(client, "postmark/bounce_event.json", body)
    send.contact.refresh_from_db()
    assert send.contact.email_status == "hard_bounced"


def _sent_to(contact):
    from nurture.services.enrollment import contacts_enroll
    from nurture.services.sending import enrollments_advance

    program = ProgramFactory()
    StepFactory(program=program, position=1)
    StepFactory(program=program, position=2, kind="wait", config={"hours": 1})
    StepFactory(program=program, position=3)
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    assert enrollments_advance().sent == 1
    return EmailSend.objects.get()


def test_greylisting_deferrals_are_not_bounces(client):
    """Review finding: Mailgun's failed/temporary events (one message retried) were stored as
    soft bounces, and three of them suppressed a contact whose mail was delivered."""
    from datetime import timedelta

    from django.utils import timezone

    from nurture.services.sending import enrollments_advance

    contact = ContactFactory()
    send = _sent_to(contact)
    grey = json.loads((DATA / "mailgun/failed_greylisted_event.json").read_text())
    for attempt in range(1, 4):
        data = grey["event-data"]
        data["message"]["headers"]["message-id"] = send.message_id
        data["recipient"] = contact.email
        data["delivery-status"]["attempt-no"] = attempt
        data["timestamp"] = time.time() - 600 + attempt
        response = _post(client, "mailgun/x.json", grey, token=f"{attempt}" * 50)
        assert response.status_code == 200
    assert not Activity.objects.filter(kind="email_bounced").exists()

    later = timezone.now() + timedelta(hours=2)
    enrollments_advance(now=later)
    enrollments_advance(now=later + timedelta(hours=2))
    assert EmailSend.objects.filter(status="sent").count() == 2


def test_a_postmark_transient_bounce_is_a_deferral(client):
    body = json.loads((DATA / "postmark/bounce_event.json").read_text())
    body |= {"Type": "Transient", "TypeCode": 2, "Name": "Message delayed"}
    _send_for(body["Email"], body["MessageID"])
    assert _post(client, "postmark/bounce_event.json", body).status_code == 200
    assert not Activity.objects.exists()
    body |= {"Type": "SoftBounce", "TypeCode": 4096, "ID": body["ID"] + 1}
    assert _post(client, "postmark/bounce_event.json", body).status_code == 200
    assert Activity.objects.get().details["bounce_type"] == "soft"


def _mailgun(extra) -> str:
    return json.dumps({"signature": _mailgun_signature(), **extra})


MALFORMED = {
    "postmark-list": ("postmark", json.dumps([{"RecordType": "Delivery"}])),
    "postmark-empty": ("postmark", "{}"),
    "postmark-not-json": ("postmark", "not json"),
    "postmark-bad-time": (
        "postmark",
        json.dumps({"RecordType": "Delivery", "MessageID": "x", "DeliveredAt": "yesterday"}),
    ),
    "postmark-number-time": (
        "postmark",
        json.dumps({"RecordType": "Open", "MessageID": "x", "Recipient": "a@b.c", "ReceivedAt": 5}),
    ),
    "mailgun-no-event-data": ("mailgun", _mailgun({})),
    "mailgun-event-data-string": ("mailgun", _mailgun({"event-data": "x"})),
    "mailgun-list": ("mailgun", json.dumps([1, 2])),
    "mailgun-signature-list": ("mailgun", json.dumps({"signature": [1], "event-data": {}})),
    "ses-not-json": ("amazon_ses", "{"),
    "ses-message-not-json": (
        "amazon_ses",
        json.dumps({"Type": "Notification", "MessageId": "1", "Message": "{"}),
    ),
    "ses-message-list": (
        "amazon_ses",
        json.dumps({"Type": "Notification", "MessageId": "1", "Message": "[1]"}),
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_an_authenticated_malformed_body_is_a_400_not_a_500(client, name):
    """Review finding: a JSON list, a missing or wrong-typed event-data, a non-string
    ReceivedAt or an SNS Message "[1]" crashed anymail's parser (500)."""
    esp, body = MALFORMED[name]
    extra = dict(AUTH)
    if esp == "amazon_ses":
        extra |= {"HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification", "HTTP_X_AMZ_SNS_MESSAGE_ID": "1"}
    client.raise_request_exception = False
    response = client.post(f"/webhooks/{esp}/tracking/", body, "application/json", **extra)
    # Anymail itself reads an empty object, or one with an unreadable time, as an event of
    # an unknown kind: recorded as nothing, 200.
    lenient = name in ("postmark-empty", "postmark-bad-time")
    assert response.status_code == (200 if lenient else 400), response.content
    assert not Activity.objects.exists()


def test_an_error_while_recording_a_good_event_stays_a_500(client, monkeypatch):
    """Providers retry a 500 later; only a body of the wrong shape is the sender's fault."""
    body = json.loads((DATA / "postmark/delivered_event.json").read_text())
    _send_for(body["Recipient"], body["MessageID"])

    def broken(**kwargs):
        raise ValueError("our bug")

    monkeypatch.setattr("nurture.services.tracking.esp_event_record", broken)
    client.raise_request_exception = False
    assert _post(client, "postmark/delivered_event.json", body).status_code == 500
