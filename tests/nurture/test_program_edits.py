"""Editing a live program (review findings): deleted and appended steps, branch targets,
archiving, waits across daylight-saving changes and contact time zones that are not zones."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from nurture.models import Enrollment, Step
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.nurture.factories import (
    ContactFactory,
    EmailTemplateFactory,
    ProgramFactory,
    StepFactory,
)

pytestmark = pytest.mark.django_db


def test_a_contact_time_zone_that_names_a_zoneinfo_folder_falls_back_to_the_site_zone():
    """contact_zone() catches ZoneInfoNotFoundError/ValueError, but ZoneInfo("US") (or
    "America", "Canada", "Brazil" …, folders of the tz database) raises IsADirectoryError:
    the email step fails and the enrollment is held (step_error) hourly for ever."""
    program = ProgramFactory(send_hour_start=0, send_hour_end=24)
    StepFactory(program=program)
    contact = ContactFactory(timezone="US")
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    enrollments_advance()
    e = Enrollment.objects.get()
    assert e.exit_reason != "step_error"
    assert len(mail.outbox) == 1


def test_the_api_refuses_a_branch_target_that_is_not_a_step_of_the_program(marketing_api):
    program = ProgramFactory()
    other_step = StepFactory(program=ProgramFactory())
    url = f"/api/v1/programs/{program.pk}/steps/"
    for target in (other_step.pk, 987654):
        r = marketing_api.post(
            url,
            {"kind": "branch", "config": {"condition": {"type": "clicked"}, "no_step": target}},
            format="json",
        )
        assert r.status_code == 400, (target, r.status_code, r.content)


def _branch_program():
    program = ProgramFactory()
    StepFactory(program=program, position=1, template=EmailTemplateFactory(subject="First"))
    branch = StepFactory(program=program, position=2, kind=Step.Kind.BRANCH)
    end = StepFactory(program=program, position=3, kind=Step.Kind.END)
    reminder = StepFactory(
        program=program, position=4, template=EmailTemplateFactory(subject="Reminder")
    )
    follow_up = StepFactory(
        program=program, position=5, template=EmailTemplateFactory(subject="Follow-up")
    )
    return program, branch, end, reminder, follow_up


def test_a_dangling_branch_target_does_not_silently_complete_the_enrollment():
    """A branch whose "no" step no longer exists (or is another program's) ends the
    enrollment as completed: everything after it is skipped without a trace."""
    program, branch, end, reminder, follow_up = _branch_program()
    branch.config = {"condition": {"type": "clicked"}, "yes_step": end.pk, "no_step": 987654}
    branch.save()
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    now = timezone.now()
    enrollments_advance(now=now)
    enrollments_advance(now=now + timedelta(minutes=1))
    e = Enrollment.objects.get()
    assert (e.state, e.exit_reason) == ("active", "step_error")  # held, marked, retried


def test_deleting_a_step_a_branch_points_to_keeps_the_branch_working(marketing_client):
    """The builder's delete moves enrollments standing on the step on, but a branch that
    names the deleted step keeps its id: every contact taking that side completes at once
    instead of going on to the following step (here the follow-up email)."""
    program, branch, end, reminder, follow_up = _branch_program()
    branch.config = {"condition": {"type": "clicked"}, "yes_step": end.pk, "no_step": reminder.pk}
    branch.save()
    r = marketing_client.post(reverse("nurture:step-delete", args=[program.pk, reminder.pk]))
    assert r.status_code in (200, 302)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    now = timezone.now()
    enrollments_advance(now=now)  # "First"
    mail.outbox.clear()
    enrollments_advance(now=now + timedelta(minutes=1))  # branch: not clicked → "no"
    assert [m.subject for m in mail.outbox] == ["Follow-up"], Enrollment.objects.get().state
    branch.refresh_from_db()
    assert branch.config["no_step"] == follow_up.pk


def test_deleting_the_last_step_a_branch_points_to_ends_that_side():
    from nurture.services.programs import step_delete

    program, branch, end, reminder, follow_up = _branch_program()
    branch.config = {"condition": {"type": "clicked"}, "yes_step": end.pk, "no_step": follow_up.pk}
    branch.save()
    step_delete(step=follow_up)
    branch.refresh_from_db()
    last = program.steps.order_by("position").last()
    assert (last.kind, branch.config["no_step"]) == (Step.Kind.END, last.pk)


def test_a_days_wait_keeps_the_wall_clock_hour_across_a_dst_change(settings):
    """ "Wait 1 day" is 24 h of absolute time: across the spring change an email sent at
    09:00 Paris time on Saturday goes out at 10:00 on Sunday."""
    settings.TIME_ZONE = "Europe/Paris"
    program = ProgramFactory(use_contact_timezone=False)
    StepFactory(program=program, position=1, kind=Step.Kind.WAIT, config={"days": 1})
    StepFactory(program=program, position=2)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    # Saturday 2026-03-28 09:00 Paris (UTC+1) = 08:00 UTC; DST starts Sunday 02:00.
    sat = datetime(2026, 3, 28, 8, tzinfo=UTC)
    Enrollment.objects.update(next_run_at=sat)
    enrollments_advance(now=sat)
    e = Enrollment.objects.get()
    local = timezone.localtime(e.next_run_at)
    assert (local.day, local.hour) == (29, 9), local


def test_a_step_appended_while_contacts_wait_at_the_end_is_run_for_them():
    """A wait step stores the step after it when the wait *starts*; contacts waiting on a
    trailing wait (current_step NULL) complete when it ends, even though the marketer has
    since appended the next email."""
    from nurture.services.programs import step_append

    program = ProgramFactory()
    StepFactory(program=program, position=1, template=EmailTemplateFactory(subject="One"))
    StepFactory(program=program, position=2, kind=Step.Kind.WAIT, config={"days": 7})
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    now = timezone.now()
    enrollments_advance(now=now)
    enrollments_advance(now=now + timedelta(minutes=1))
    assert Enrollment.objects.get().state == "waiting"
    step_append(program=program, kind=Step.Kind.EMAIL, template=EmailTemplateFactory(subject="Two"))
    mail.outbox.clear()
    enrollments_advance(now=now + timedelta(days=7, minutes=2))
    assert [m.subject for m in mail.outbox] == ["Two"], Enrollment.objects.get().state


def test_archiving_a_program_ends_its_live_enrollments():
    from nurture.models import Program
    from nurture.services.programs import program_set_status

    program = ProgramFactory()
    StepFactory(program=program, position=1, kind=Step.Kind.WAIT, config={"days": 3})
    StepFactory(program=program, position=2)
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    enrollments_advance()
    program_set_status(program=program, status=Program.Status.ARCHIVED)
    assert list(Enrollment.objects.values_list("state", "exit_reason")) == [("exited", "archived")]


def _waiting_program():
    program = ProgramFactory(status="active")
    StepFactory(program=program, position=1, kind=Step.Kind.WAIT, config={"days": 3})
    StepFactory(program=program, position=2)
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    enrollments_advance()
    return program


def test_the_program_page_archives_and_an_archived_program_stays_archived(marketing_client):
    program = _waiting_program()
    page = marketing_client.get(program.get_absolute_url()).content.decode()
    assert 'value="archived"' in page
    url = reverse("nurture:program-status", args=[program.pk])
    marketing_client.post(url, {"status": "archived"})
    assert list(Enrollment.objects.values_list("state", "exit_reason")) == [("exited", "archived")]
    page = marketing_client.get(program.get_absolute_url()).content.decode()
    assert 'value="active"' not in page
    assert 'value="archived"' not in page
    response = marketing_client.post(url, {"status": "active"}, follow=True)
    program.refresh_from_db()
    assert program.status == "archived"
    assert "stays archived" in response.content.decode()


def test_archiving_through_the_api_ends_the_live_enrollments(marketing_api):
    program = _waiting_program()
    url = f"/api/v1/programs/{program.pk}/"
    response = marketing_api.patch(url, {"status": "archived", "name": "Old drip"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "archived"
    assert list(Enrollment.objects.values_list("state", "exit_reason")) == [("exited", "archived")]
    program.refresh_from_db()
    assert program.name == "Old drip"
    again = marketing_api.patch(url, {"status": "active"}, format="json")
    assert again.status_code == 400
    assert "status" in again.json()


def test_contacts_waiting_on_a_deleted_wait_step_go_on_when_their_wait_ends():
    from nurture.services.programs import step_delete

    program = ProgramFactory()
    wait = StepFactory(program=program, position=1, kind=Step.Kind.WAIT, config={"days": 3})
    StepFactory(program=program, position=2, kind=Step.Kind.WAIT, config={"days": 2})
    StepFactory(program=program, position=3, template=EmailTemplateFactory(subject="After"))
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    now = timezone.now()
    enrollments_advance(now=now)
    waiting = Enrollment.objects.get()
    assert (waiting.state, waiting.current_step_id) == ("waiting", wait.pk)
    step_delete(step=wait)
    # the second wait runs (two days) once the first one's time is up: no step is skipped
    enrollments_advance(now=now + timedelta(days=3, minutes=1))
    assert not mail.outbox
    enrollments_advance(now=now + timedelta(days=5, minutes=2))
    assert [m.subject for m in mail.outbox] == ["After"]
