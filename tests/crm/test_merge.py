from datetime import timedelta

import pytest
from django.utils import timezone

from crm import services
from crm.models import Activity, Contact, Deal, LifecycleTransition, Segment, SegmentMembership
from tests.factories import ActivityFactory, DealFactory

pytestmark = pytest.mark.django_db


def test_merging_keeps_the_older_contact_and_moves_everything():
    now = timezone.now()
    old = services.contact_create(email="old@example.com", created_at=now - timedelta(days=9))
    new = services.contact_create(
        email="new@example.com", job_title="CTO", phone="123", attributes={"plan": "pro"}
    )
    ActivityFactory(contact=new)
    ActivityFactory(contact=old)
    DealFactory(contact=new)
    both = Segment.objects.create(name="Both", kind="static")
    only_new = Segment.objects.create(name="New only", kind="static")
    SegmentMembership.objects.create(segment=both, contact=old, joined_at=now)
    SegmentMembership.objects.create(segment=both, contact=new, joined_at=now)
    SegmentMembership.objects.create(segment=only_new, contact=new, joined_at=now)

    # Passing them the "wrong" way round still keeps the older one.
    kept = services.contact_merge(keep=new, duplicate=old)

    assert kept.pk == old.pk
    assert list(Contact.objects.values_list("email", flat=True)) == ["old@example.com"]
    assert Activity.objects.filter(contact=old).count() == 2
    assert LifecycleTransition.objects.filter(contact=old).count() == 2
    assert Deal.objects.get().contact_id == old.pk
    assert SegmentMembership.objects.filter(contact=old).count() == 2
    kept.refresh_from_db()
    assert (kept.job_title, kept.phone, kept.attributes) == ("CTO", "123", {"plan": "pro"})


def test_merging_a_contact_with_itself_is_refused():
    contact = services.contact_create(email="a@example.com")
    with pytest.raises(Exception, match="itself"):
        services.contact_merge(keep=contact, duplicate=contact)


def test_merging_contacts_live_in_one_program_keeps_every_enrollment_and_send(settings):
    """Review finding: the duplicate's enrollments could not move (one live enrollment per
    program) and deleting it took its sends along, breaking links of delivered mail."""
    from django.test import Client

    from nurture import tokens
    from nurture.models import EmailSend, Enrollment
    from nurture.services.enrollment import contacts_enroll
    from nurture.services.sending import enrollments_advance
    from tests.nurture.factories import ProgramFactory, StepFactory

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://crm.example.com"
    both, only_dup = ProgramFactory(), ProgramFactory()
    for program in (both, only_dup):
        StepFactory(program=program, position=1)
        StepFactory(program=program, position=2)
    keep = services.contact_create(
        email="keep@example.com", created_at=timezone.now() - timedelta(days=1)
    )
    dup = services.contact_create(email="dup@example.com")
    contacts_enroll(program=both, contact_ids=[keep.pk, dup.pk], source="manual")
    contacts_enroll(program=only_dup, contact_ids=[dup.pk], source="manual")
    enrollments_advance()
    dup_sends = set(EmailSend.objects.filter(contact=dup).values_list("message_id", flat=True))
    assert len(dup_sends) == 2

    services.contact_merge(keep=keep, duplicate=dup)

    # Every send survives, now the kept contact's, and its unsubscribe link still works.
    assert (
        set(
            EmailSend.objects.filter(contact=keep, message_id__in=dup_sends).values_list(
                "message_id", flat=True
            )
        )
        == dup_sends
    )
    states = sorted(
        Enrollment.objects.filter(contact=keep).values_list("program_id", "state", "exit_reason")
    )
    assert states == sorted(
        [
            (both.pk, "active", ""),  # the kept contact's own
            (both.pk, "exited", "merged"),  # the duplicate's, ended: one live per program
            (only_dup.pk, "active", ""),
        ]
    )
    for message_id in dup_sends:
        url = tokens.unsubscribe_url(message_id).removeprefix("https://crm.example.com")
        assert Client().get(url).status_code == 200
    # The moved enrollments go on: the next step of each live one is sent to the kept address.
    enrollments_advance(now=timezone.now() + timedelta(minutes=1))
    assert EmailSend.objects.filter(contact=keep, status="sent").count() == 5


def test_an_enrollment_with_sends_cannot_be_deleted_alone():
    from django.db.models import RestrictedError

    from nurture.models import Enrollment
    from nurture.services.enrollment import contacts_enroll
    from nurture.services.sending import enrollments_advance
    from tests.nurture.factories import ProgramFactory, StepFactory

    program = ProgramFactory()
    StepFactory(program=program)
    contact = services.contact_create(email="a@example.com")
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    with pytest.raises(RestrictedError):
        Enrollment.objects.get().delete()
    # Deleting the contact itself still deletes its enrollments and sends.
    contact.delete()
    assert not Enrollment.objects.exists()
