"""The program page's per-step funnel (nurture.queries.step_funnel) counts by METRICS.md
"Email and program engagement", as the email report does."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import ActivityKind as K
from crm.models import Contact
from nurture.models import EmailSend
from nurture.queries import step_funnel
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from nurture.services.tracking import contact_unsubscribe
from tests.factories import CampaignFactory
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory

pytestmark = pytest.mark.django_db
OFFER = "https://x.example/offer"


@pytest.fixture
def sends():
    """One email step sent to three contacts; the campaign's goal is a demo request."""
    program = ProgramFactory(campaign=CampaignFactory(goal_action=K.DEMO_REQUESTED))
    step = StepFactory(program=program)
    contacts = [ContactFactory() for _ in range(3)]
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")
    enrollments_advance()
    EmailSend.objects.update(sent_at=timezone.now() - timedelta(hours=2))
    by_contact = {s.contact_id: s for s in EmailSend.objects.filter(step=step)}
    return program, step, [by_contact[c.pk] for c in contacts]


def _record(send, kind, minutes, **extra):
    item = {"contact": send.contact_id, "kind": kind, "occurred_at": timezone.now()}
    if kind != K.DEMO_REQUESTED:
        item.update(message_id=send.message_id, campaign=send.program.campaign_id)
    item["occurred_at"] -= timedelta(minutes=60 - minutes)
    activities_record(items=[{**item, **extra}], source="test")


def test_machine_and_unsubscribe_link_clicks_are_neither_clicks_nor_opens(sends):
    program, step, (scanned, leaving, reader) = sends
    # a link scanner clicks; a demo request follows anyway
    _record(scanned, K.EMAIL_CLICKED, 1, url=OFFER, is_machine=True)
    _record(scanned, K.DEMO_REQUESTED, 2)
    # the provider reports the unsubscribe link's click (host in capitals), then the
    # unsubscribe itself; a demo request follows too
    _record(leaving, K.EMAIL_CLICKED, 3, url="https://CRM.example.com/u/token")
    _record(leaving, K.EMAIL_UNSUBSCRIBED, 3)
    _record(leaving, K.DEMO_REQUESTED, 4)
    # the person's own click, then the goal
    _record(reader, K.EMAIL_CLICKED, 5, url=OFFER)
    _record(reader, K.DEMO_REQUESTED, 6)
    assert step_funnel(program)[step.pk] == {
        "sent": 3,
        "bounced": 0,
        "delivered": 3,
        "opened": 1,
        "clicked": 1,
        "unsubscribed": 1,
        "converted": 1,
    }


def test_leaving_only_this_program_counts_as_unsubscribed(sends):
    """METRICS.md "unsubscribe rate": contacts who unsubscribed from the email — from all
    email or, through the unsubscribe page, from this program only."""
    program, step, (stays, leaves_program, leaves_all) = sends
    contact_unsubscribe(message_id=leaves_program.message_id, program_only=True)
    contact_unsubscribe(message_id=leaves_all.message_id)
    funnel = step_funnel(program)[step.pk]
    assert (funnel["delivered"], funnel["unsubscribed"]) == (3, 2)
    statuses = dict(Contact.objects.values_list("pk", "email_status"))
    assert statuses == {
        stays.contact_id: "active",
        leaves_program.contact_id: "active",
        leaves_all.contact_id: "unsubscribed",
    }


def _at(send, kind, when, **extra):
    item = {"contact": send.contact_id, "kind": kind, "occurred_at": when}
    if kind != K.DEMO_REQUESTED:
        item.update(message_id=send.message_id, campaign=send.program.campaign_id)
    activities_record(items=[{**item, **extra}], source="test")


@pytest.fixture
def sent_long_ago(sends):
    """The step's emails went out 20 days ago (room for clicks days after the send)."""
    sent = timezone.now() - timedelta(days=20)
    EmailSend.objects.update(sent_at=sent)
    return (*sends, sent)


def test_conversion_window_opens_at_the_click_not_at_the_send(sent_long_ago):
    """METRICS.md "conversion rate": clicked the email *and then* did the goal action within
    the window (7 days, end inclusive) — counted from the click, as the email report does."""
    program, step, (late_clicker, on_the_edge, too_late), sent = sent_long_ago
    # clicks eight days after the send, requests a demo the next day: converted (a window
    # from the send would miss it)
    _at(late_clicker, K.EMAIL_CLICKED, sent + timedelta(days=8), url=OFFER)
    _at(late_clicker, K.DEMO_REQUESTED, sent + timedelta(days=9))
    # the goal exactly 7 days after the click: converted (the end is inclusive)
    click = sent + timedelta(minutes=5)
    _at(on_the_edge, K.EMAIL_CLICKED, click, url=OFFER)
    _at(on_the_edge, K.DEMO_REQUESTED, click + timedelta(days=7))
    # a second past the window: not converted
    _at(too_late, K.EMAIL_CLICKED, click, url=OFFER)
    _at(too_late, K.DEMO_REQUESTED, click + timedelta(days=7, seconds=1))
    funnel = step_funnel(program)[step.pk]
    assert (funnel["clicked"], funnel["converted"]) == (3, 2)


def test_a_goal_before_the_click_is_no_conversion(sent_long_ago):
    """A demo requested after the send but before the click did not follow the click."""
    program, step, (goal_first, _, _), sent = sent_long_ago
    _at(goal_first, K.DEMO_REQUESTED, sent + timedelta(hours=1))
    _at(goal_first, K.EMAIL_CLICKED, sent + timedelta(hours=3), url=OFFER)
    funnel = step_funnel(program)[step.pk]
    assert (funnel["clicked"], funnel["converted"]) == (1, 0)


def test_a_contact_who_received_the_step_twice_counts_per_email_as_the_email_report(sends):
    """Review finding: sent/delivered counted emails but opens/clicks counted contacts, so
    a contact who re-entered and clicked both emails was 2 delivered and 1 click; the email
    report's per-step table counts 2."""
    from nurture.models import Enrollment
    from reports.metrics.email import step_counts
    from reports.query import ReportQuery

    program, step, (first, _, _) = sends
    Enrollment.objects.filter(pk=first.enrollment_id).update(state=Enrollment.State.COMPLETED)
    again = Enrollment.objects.create(
        contact_id=first.contact_id,
        program=program,
        state=Enrollment.State.ACTIVE,
        entered_at=timezone.now() - timedelta(hours=1),
    )
    second = EmailSend.objects.create(
        enrollment=again,
        step=step,
        contact_id=first.contact_id,
        program=program,
        message_id="<again@x>",
        status=EmailSend.Status.SENT,
        sent_at=timezone.now() - timedelta(hours=1),
    )
    _record(first, K.EMAIL_CLICKED, 1, url=OFFER)
    _record(second, K.EMAIL_CLICKED, 2, url=OFFER)
    _record(second, K.EMAIL_UNSUBSCRIBED, 3)
    funnel = step_funnel(program)[step.pk]
    assert (funnel["sent"], funnel["opened"], funnel["clicked"], funnel["unsubscribed"]) == (
        4,
        2,
        2,
        1,
    )
    today = timezone.localdate()
    period = ReportQuery(start=today - timedelta(days=2), end=today + timedelta(days=1))
    report = step_counts(period)[(step.pk, program.campaign_id)]
    assert (report["unique_opens"], report["unique_clicks"]) == (2, 2)
