from datetime import timedelta

import pytest
from django.core import mail, signing
from django.utils import timezone

from crm.models import Activity, EmailStatus
from nurture import tokens
from nurture.models import EmailSend, Enrollment
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari"


@pytest.fixture
def sent():
    program = ProgramFactory()
    StepFactory(program=program)
    StepFactory(program=program)  # a second email, queued for later
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    enrollments_advance()
    send = EmailSend.objects.get()
    EmailSend.objects.filter(pk=send.pk).update(sent_at=timezone.now() - timedelta(minutes=5))
    send.refresh_from_db()
    return send


def _path(url):
    return url.replace("https://crm.example.com", "")


def test_a_click_redirects_to_the_link_and_records_it(client, sent):
    response = client.get(_path(tokens.click_url(sent.message_id, 0)), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302
    assert response["Location"] == "https://example.com/guide?a=1&b=2"
    click = Activity.objects.get(kind="email_clicked")
    assert click.message_id == sent.message_id
    assert click.details["url"] == "https://example.com/guide?a=1&b=2"
    assert click.campaign_id == sent.program.campaign_id


def test_a_click_token_cannot_redirect_elsewhere(client, sent):
    # A valid signature for an index the email does not have: no redirect.
    assert client.get(_path(tokens.click_url(sent.message_id, 7))).status_code == 404
    forged = signing.dumps({"m": sent.message_id, "l": 0, "u": "https://evil.example"})
    assert client.get(f"/t/c/{forged}").status_code == 404  # wrong salt
    assert not Activity.objects.filter(kind="email_clicked").exists()


def test_tampered_and_expired_tokens_record_nothing(client, sent, settings):
    url = _path(tokens.open_url(sent.message_id))
    tampered = url[:-6] + ("A" if url[-6] != "A" else "B") + url[-5:]
    assert client.get(tampered).status_code == 404
    assert client.get("/t/c/not-a-token").status_code == 404
    assert client.get("/u/not-a-token").status_code == 404
    settings.TRACKING_TOKEN_MAX_AGE_DAYS = 30
    # Build a 31-day-old token by signing with a clock in the past.
    past = int((timezone.now() - timedelta(days=31)).timestamp())
    token = signing.dumps({"m": sent.message_id, "l": 0}, salt=tokens.CLICK, compress=True)
    value = token.rsplit(":", 2)[0]
    stale = signing.TimestampSigner(salt=tokens.CLICK)
    stale.timestamp = lambda: signing.b62_encode(past)
    expired_token = stale.sign(value)
    assert client.get(f"/t/c/{expired_token}").status_code == 404
    assert not Activity.objects.exclude(kind="email_sent").exists()


def test_open_pixel_records_opens_and_flags_machine_opens(client, sent):
    response = client.get(_path(tokens.open_url(sent.message_id)), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    client.get(
        _path(tokens.open_url(sent.message_id)),
        HTTP_USER_AGENT="Mozilla/5.0 Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    )
    opens = list(Activity.objects.filter(kind="email_opened").order_by("id"))
    assert [o.is_machine for o in opens] == [False, True]


def test_an_open_seconds_after_the_send_is_a_machine_open(client, sent):
    EmailSend.objects.filter(pk=sent.pk).update(sent_at=timezone.now())
    client.get(_path(tokens.open_url(sent.message_id)), HTTP_USER_AGENT=BROWSER)
    assert Activity.objects.get(kind="email_opened").is_machine is True


def test_one_click_unsubscribe_works_without_cookies_or_csrf(sent):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(
        _path(tokens.unsubscribe_url(sent.message_id)),
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    sent.contact.refresh_from_db()
    assert sent.contact.email_status == EmailStatus.UNSUBSCRIBED
    assert (
        Activity.objects.filter(kind="email_unsubscribed", message_id=sent.message_id).count() == 1
    )
    assert not Activity.objects.filter(kind="email_clicked").exists()
    # The queued second email is never sent.
    mail.outbox.clear()
    enrollments_advance(now=timezone.now() + timedelta(minutes=1))
    assert mail.outbox == []
    assert Enrollment.objects.get().state == Enrollment.State.EXITED


def test_a_second_unsubscribe_after_a_reactivation_applies_again(client, sent):
    """Review finding: the second unsubscribe from one email was de-duplicated by its
    external id and did nothing, leaving a re-activated contact subscribed."""
    from crm.services.contacts import contact_update

    url = _path(tokens.unsubscribe_url(sent.message_id))
    one_click = {"data": "List-Unsubscribe=One-Click"}
    form = "application/x-www-form-urlencoded"
    assert client.post(url, content_type=form, **one_click).status_code == 200
    # The mail client's one-click and the person's own click: recorded once.
    assert client.post(url, content_type=form, **one_click).status_code == 200
    assert Activity.objects.filter(kind="email_unsubscribed").count() == 1
    contact = sent.contact
    contact.refresh_from_db()
    assert contact.email_status == EmailStatus.UNSUBSCRIBED

    contact_update(contact=contact, email_status=EmailStatus.ACTIVE)  # re-subscribed by hand
    assert client.post(url, content_type=form, **one_click).status_code == 200
    contact.refresh_from_db()
    assert contact.email_status == EmailStatus.UNSUBSCRIBED
    assert Activity.objects.filter(kind="email_unsubscribed").count() == 2


def test_unsubscribe_get_shows_a_confirmation_and_changes_nothing(client, sent):
    response = client.get(_path(tokens.unsubscribe_url(sent.message_id)))
    assert response.status_code == 200
    assert b"Unsubscribe" in response.content
    sent.contact.refresh_from_db()
    assert sent.contact.email_status == EmailStatus.ACTIVE


def test_unsubscribe_from_one_program_only(client, sent):
    response = client.post(_path(tokens.unsubscribe_url(sent.message_id)), {"scope": "program"})
    assert response.status_code == 200
    sent.contact.refresh_from_db()
    assert sent.contact.email_status == EmailStatus.ACTIVE
    enrollment = Enrollment.objects.get()
    assert enrollment.exit_reason == "unsubscribed_program"
    # Never re-enters that program.
    sent.program.reentry = "always"
    sent.program.save()
    assert contacts_enroll(program=sent.program, contact_ids=[sent.contact_id], source="m") == 0


def test_leaving_one_program_counts_as_an_unsubscribe_from_its_email_only(client, sent):
    """METRICS.md "unsubscribe rate": contacts who unsubscribed from the email ÷ delivered.
    Leaving only this program is an unsubscribe from this email: recorded (scope
    "program") and counted in the email report (rollups as a rebuild computes them), but
    the address stays subscribed and the contact's other programs go on."""
    from crm.timeline import contact_timeline
    from reports.facts import facts_reconcile
    from reports.metrics.email import email_by_campaign
    from reports.query import ReportQuery, site_tz
    from reports.rollups import rollups_reconcile

    other = ProgramFactory()
    StepFactory(program=other)
    contacts_enroll(program=other, contact_ids=[sent.contact_id], source="m")
    url = _path(tokens.unsubscribe_url(sent.message_id))
    assert client.post(url, {"scope": "program"}).status_code == 200
    assert client.post(url, {"scope": "program"}).status_code == 200  # a double submit
    (left,) = Activity.objects.filter(kind="email_unsubscribed")
    assert (left.message_id, left.campaign_id) == (sent.message_id, sent.program.campaign_id)
    assert left.details["scope"] == "program"
    sent.contact.refresh_from_db()
    assert sent.contact.email_status == EmailStatus.ACTIVE
    assert Enrollment.objects.get(program=sent.program).exit_reason == "unsubscribed_program"
    assert Enrollment.objects.live().filter(program=other).exists()
    (entry,) = [e for e in contact_timeline(sent.contact).entries if e.title == "Unsubscribed"]
    assert "scope: program" in entry.detail  # the contact page says which unsubscribe

    today = timezone.now().astimezone(site_tz()).date()
    assert rollups_reconcile(day=today) == {"email": {}, "stage": {}}
    assert facts_reconcile(day=today) == {"email_steps": {}}
    rows, _ = email_by_campaign(ReportQuery(start=today, end=today + timedelta(days=1)))
    (row,) = rows
    assert (row["sent"], row["delivered"], row["unsubscribed"]) == (1, 1, 1)
    assert (row["unsubscribe_rate"], row["unsubscribe_flag"]) == (1.0, True)

    # Then "from all our emails" from the same link: suppressed, once more an unsubscribe
    # of that email, still one contact who unsubscribed from it.
    assert client.post(url, {"scope": "all"}).status_code == 200
    sent.contact.refresh_from_db()
    assert sent.contact.email_status == EmailStatus.UNSUBSCRIBED
    assert Activity.objects.filter(kind="email_unsubscribed").count() == 2
    assert not Enrollment.objects.live().filter(program=other).exists()
    rows, _ = email_by_campaign(ReportQuery(start=today, end=today + timedelta(days=1)))
    assert [r["unsubscribed"] for r in rows if r["campaign_id"] == sent.program.campaign_id] == [1]
    assert rollups_reconcile(day=today) == {"email": {}, "stage": {}}


def test_the_unsubscribe_link_is_not_rewritten_as_a_tracked_click(sent):
    html = mail.outbox[0].alternatives[0][0]
    assert "https://crm.example.com/u/" in html
    assert len(sent.links) == 1


def test_its_fast_signer_signs_exactly_like_djangos_timestamp_signer():
    for purpose in (tokens.OPEN, tokens.CLICK, tokens.UNSUBSCRIBE):
        ours = tokens.make(purpose, {"m": "abc@leadcycle.local", "l": 3})
        django_signer = signing.TimestampSigner(salt=purpose)
        value, stamp, _ = ours.rsplit(":", 2)
        django_signer.timestamp = lambda stamp=stamp: stamp
        assert ours == django_signer.sign(value)
        assert tokens.read(purpose, ours) == {"m": "abc@leadcycle.local", "l": 3}


def test_the_batch_url_builder_makes_the_same_urls_as_the_functions(monkeypatch):
    monkeypatch.setattr(tokens.time, "time", lambda: 1_800_000_000.5)  # one timestamp
    urls = tokens.Urls()
    assert urls.open("m@h") == tokens.open_url("m@h")
    assert urls.click("m@h", 2) == tokens.click_url("m@h", 2)
    assert urls.unsubscribe("m@h") == tokens.unsubscribe_url("m@h")
    token = urls.click("m@h", 2).rsplit("/", 1)[1]
    assert tokens.read(tokens.CLICK, token) == {"m": "m@h", "l": 2}


def test_the_unsubscribe_links_start_with_the_prefix_that_tells_their_clicks_apart():
    """crm.models.activities recognises a click on the unsubscribe link by this prefix
    (crm imports no nurture code, so it names the URL itself)."""
    from crm.models.activities import unsubscribe_link_prefix

    assert tokens.Urls().unsubscribe_prefix == unsubscribe_link_prefix()
    assert tokens.unsubscribe_url("m@x").startswith(unsubscribe_link_prefix())
