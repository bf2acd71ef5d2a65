"""A message's sends are committed before it is handed over (review finding: the batch used
to commit only after the hand-over, so links answered 404 and provider events for the
messages were dropped as "unknown message" until then)."""

import pytest

from crm.models import Activity, ActivityKind, Contact, EmailStatus
from nurture.models import EmailSend
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory
from tests.nurture.visiting_backend import SECRET, VisitDuringHandOver


@pytest.mark.django_db(transaction=True)
def test_links_and_webhooks_work_while_the_message_is_being_handed_over(settings, monkeypatch):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    settings.EMAIL_BACKEND = "tests.nurture.visiting_backend.VisitDuringHandOver"
    monkeypatch.setattr(VisitDuringHandOver, "results", [])
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")

    assert enrollments_advance().sent == 1

    assert VisitDuringHandOver.results == [
        ("click", 302),
        ("unsubscribe page", 200),
        ("bounce webhook", 200),
        ("one-click unsubscribe", 200),
    ]
    send = EmailSend.objects.get()
    assert send.status == EmailSend.Status.SENT
    kinds = set(Activity.objects.filter(message_id=send.message_id).values_list("kind", flat=True))
    assert {
        ActivityKind.EMAIL_SENT,
        ActivityKind.EMAIL_CLICKED,
        ActivityKind.EMAIL_BOUNCED,
        ActivityKind.EMAIL_UNSUBSCRIBED,
    } <= kinds
    # The hard bounce (first) suppressed the address; nothing was lost.
    assert Contact.objects.get(pk=contact.pk).email_status == EmailStatus.HARD_BOUNCED
