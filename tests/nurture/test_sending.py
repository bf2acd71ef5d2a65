from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.db import IntegrityError
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import Activity, ActivityKind, Contact, EmailStatus, Notification
from nurture.models import EmailSend, Enrollment, Program, Step
from nurture.services import sending
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.factories import UserFactory
from tests.nurture.factories import (
    ContactFactory,
    EmailTemplateFactory,
    ProgramFactory,
    StepFactory,
)
from tests.nurture.failing_backend import ObservingBackend

pytestmark = pytest.mark.django_db


def _drip():
    program = ProgramFactory()
    e1 = StepFactory(program=program, position=1)
    StepFactory(program=program, position=2, kind=Step.Kind.WAIT, config={"days": 2})
    branch = StepFactory(program=program, position=3, kind=Step.Kind.BRANCH)
    e2 = StepFactory(program=program, position=4, template=EmailTemplateFactory(subject="Clicked!"))
    end = StepFactory(program=program, position=5, kind=Step.Kind.END)
    e3 = StepFactory(program=program, position=6, template=EmailTemplateFactory(subject="Reminder"))
    branch.config = {"condition": {"type": "clicked"}, "yes_step": e2.pk, "no_step": e3.pk}
    branch.save()
    return program, e1, e2, e3, end


def test_it_runs_a_drip_with_a_branch_end_to_end():
    program, e1, e2, e3, _ = _drip()
    clicker, idle = ContactFactory(first_name="Ann"), ContactFactory(first_name="Bob")
    contacts_enroll(program=program, contact_ids=[clicker.pk, idle.pk], source="manual")

    result = enrollments_advance()
    assert result.sent == 2
    assert len(mail.outbox) == 2
    msg = next(m for m in mail.outbox if m.to == [clicker.email])
    assert msg.subject == "Hello Ann"
    assert msg.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://crm.example.com/u/" in msg.extra_headers["List-Unsubscribe"]
    assert "mailto:news@acme.example" in msg.extra_headers["List-Unsubscribe"]
    assert msg.extra_headers["Message-ID"].startswith("<")
    html = msg.alternatives[0][0]
    assert "https://crm.example.com/t/c/" in html
    assert "/t/o/" in html
    assert "example.com/guide" not in html  # rewritten to a tracking link
    send = EmailSend.objects.get(contact=clicker)
    assert send.links == ["https://example.com/guide?a=1&b=2"]
    assert Activity.objects.filter(kind="email_sent", message_id=send.message_id).count() == 1

    # Next pass reaches the wait step.
    enrollments_advance()
    assert Enrollment.objects.filter(state=Enrollment.State.WAITING).count() == 2
    activities_record(
        items=[
            {
                "kind": ActivityKind.EMAIL_CLICKED,
                "occurred_at": timezone.now(),
                "contact": clicker.pk,
                "message_id": send.message_id,
            }
        ]
    )
    mail.outbox.clear()
    later = timezone.now() + timedelta(days=2, minutes=1)
    enrollments_advance(now=later)
    subjects = {m.to[0]: m.subject for m in mail.outbox}
    assert subjects == {clicker.email: "Clicked!", idle.email: "Reminder"}
    enrollments_advance(now=later + timedelta(minutes=1))
    states = dict(Enrollment.objects.values_list("contact_id", "state"))
    assert states == {clicker.pk: "completed", idle.pk: "completed"}


def test_it_never_sends_one_step_twice():
    program = ProgramFactory()
    step = StepFactory(program=program)
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    enrollment = Enrollment.objects.get()
    # A retried task that still thinks the step is due: the existing send is honoured.
    Enrollment.objects.filter(pk=enrollment.pk).update(current_step=step, state="active")
    enrollments_advance()
    assert len(mail.outbox) == 1
    with pytest.raises(IntegrityError):
        EmailSend.objects.create(
            enrollment=enrollment,
            step=step,
            contact=contact,
            program=program,
            message_id="x@y",
            status="sent",
        )


def test_it_skips_suppressed_contacts_at_send_time():
    program = ProgramFactory()
    StepFactory(program=program)
    ok, unsub, nocons, soft = ContactFactory(), ContactFactory(), ContactFactory(), ContactFactory()
    contacts_enroll(program=program, contact_ids=[ok.pk, unsub.pk, nocons.pk, soft.pk], source="m")
    # Suppressed after enrolment, before the send.
    type(ok).objects.filter(pk=unsub.pk).update(email_status=EmailStatus.UNSUBSCRIBED)
    type(ok).objects.filter(pk=nocons.pk).update(consent_basis="none")
    now = timezone.now()
    for i in range(3):
        Activity.objects.create(
            contact=soft,
            kind="email_bounced",
            occurred_at=now - timedelta(days=i),
            details={"bounce_type": "soft"},
        )
    enrollments_advance()
    assert [m.to for m in mail.outbox] == [[ok.email]]
    reasons = dict(
        EmailSend.objects.filter(status="skipped").values_list("contact_id", "skip_reason")
    )
    assert reasons == {unsub.pk: "unsubscribed", nocons.pk: "no_consent", soft.pk: "soft_bounced"}
    assert Enrollment.objects.filter(state="exited", exit_reason="suppressed").count() == 3


def test_it_holds_out_a_stable_share():
    program = ProgramFactory(holdout_percent=30)
    StepFactory(program=program)
    contacts = ContactFactory.create_batch(60)
    ids = [c.pk for c in contacts]
    contacts_enroll(program=program, contact_ids=ids, source="m")
    held = set(Enrollment.objects.filter(state="held_out").values_list("contact_id", flat=True))
    assert held == {cid for cid in ids if program.is_held_out(cid)}
    assert 5 < len(held) < 35
    enrollments_advance()
    assert len(mail.outbox) == 60 - len(held)
    assert all(program.is_held_out(c) for c in held)  # same answer on every call


def test_a_held_out_contact_gets_one_row_a_day_with_reentry_always():
    """Review finding: each firing of an "always" trigger added another held-out row."""
    program = ProgramFactory(holdout_percent=50, reentry=Program.Reentry.ALWAYS)
    StepFactory(program=program)
    contacts = ContactFactory.create_batch(20)
    held = next(c for c in contacts if program.is_held_out(c.pk))
    nurtured = next(c for c in contacts if not program.is_held_out(c.pk))
    noon = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    for minutes in (0, 5, 10):
        contacts_enroll(
            program=program,
            contact_ids=[held.pk, nurtured.pk],
            source="activity",
            now=noon + timedelta(minutes=minutes),
        )
        Enrollment.objects.filter(contact=nurtured).update(state="completed")
    assert Enrollment.objects.filter(contact=held).count() == 1
    assert Enrollment.objects.filter(contact=nurtured).count() == 3  # re-enters each time
    # The next day counts again (reports count held-out entrants per day).
    contacts_enroll(
        program=program, contact_ids=[held.pk], source="activity", now=noon + timedelta(days=1)
    )
    assert Enrollment.objects.filter(contact=held).count() == 2


def test_it_waits_for_the_send_window():
    program = ProgramFactory(send_days=[0, 1, 2, 3, 4], send_hour_start=9, send_hour_end=17)
    StepFactory(program=program)
    contact = ContactFactory(timezone="Europe/Paris")
    contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    # Saturday 2026-11-21 10:00 UTC: outside the window (weekend).
    saturday = datetime(2026, 11, 21, 10, tzinfo=UTC)
    Enrollment.objects.update(next_run_at=saturday)
    enrollments_advance(now=saturday)
    assert mail.outbox == []
    e = Enrollment.objects.get()
    # Monday 09:00 in Paris is 08:00 UTC.
    assert e.next_run_at == datetime(2026, 11, 23, 8, tzinfo=UTC)


def test_it_respects_the_daily_cap():
    program = ProgramFactory(daily_cap=2)
    StepFactory(program=program)
    contacts_enroll(
        program=program, contact_ids=[c.pk for c in ContactFactory.create_batch(5)], source="m"
    )
    enrollments_advance()
    assert len(mail.outbox) == 2
    assert Enrollment.objects.filter(next_run_at__gt=timezone.now()).count() == 3


def test_a_paused_program_sends_nothing_and_resumes_where_it_stopped():
    program = ProgramFactory(status=Program.Status.PAUSED)
    StepFactory(program=program)
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    enrollments_advance()
    assert mail.outbox == []
    Program.objects.filter(pk=program.pk).update(status=Program.Status.ACTIVE)
    enrollments_advance()
    assert len(mail.outbox) == 1


def test_failed_sends_are_retried_then_marked_failed(settings):
    settings.EMAIL_BACKEND = "tests.nurture.failing_backend.EmailBackend"
    program = ProgramFactory()
    StepFactory(program=program)
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    now = timezone.now()
    for _ in range(4):
        enrollments_advance(now=now)
        now += timedelta(hours=7)
    send = EmailSend.objects.get()
    assert send.status == EmailSend.Status.FAILED
    assert send.attempts == 4
    assert "SMTP down" in send.error


def test_a_worker_killed_mid_batch_resends_at_most_once_more(settings):
    settings.EMAIL_BACKEND = "tests.nurture.failing_backend.CrashingBackend"
    program = ProgramFactory()
    StepFactory(program=program)
    contacts = ContactFactory.create_batch(3)
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")
    now = timezone.now()
    with pytest.raises(KeyboardInterrupt):
        enrollments_advance(now=now)
    # The claim had committed: every send is "sending", every enrollment leased on its step.
    assert set(EmailSend.objects.values_list("status", flat=True)) == {"sending"}
    assert Enrollment.objects.filter(state="active", current_step__isnull=False).count() == 3
    accepted = mail.outbox[0].to
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    # Within the lease nobody touches the claim…
    assert enrollments_advance(now=now + timedelta(minutes=1)).processed == 0
    # …after it, the next tick hands every claimed message over again.
    lease = timedelta(seconds=settings.NURTURE_SEND_LEASE_SECONDS)
    assert enrollments_advance(now=now + lease + timedelta(seconds=1)).sent == 3
    assert EmailSend.objects.filter(status="sent", attempts=2).count() == 3
    recipients = sorted(m.to[0] for m in mail.outbox)
    # Each contact got its email; the one the backend had accepted before the kill got it twice
    # (with the same Message-ID).
    assert recipients == sorted([c.email for c in contacts] + accepted)
    twice = [m.extra_headers["Message-ID"] for m in mail.outbox if m.to == accepted]
    assert len(set(twice)) == 1


def test_a_worker_killed_after_handing_over_resends_nothing_and_records_once(settings, monkeypatch):
    # The chunk's statuses are stored, then the worker dies before its batch's end (where the
    # enrollments move on and the email_sent activities are recorded).
    program = ProgramFactory()
    first = StepFactory(program=program, position=1)
    second = StepFactory(program=program, position=2)
    contacts = ContactFactory.create_batch(3)
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")

    def killed(batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(sending, "_finish", killed)
    now = timezone.now()
    with pytest.raises(KeyboardInterrupt):
        enrollments_advance(now=now)
    monkeypatch.undo()
    assert set(EmailSend.objects.values_list("status", flat=True)) == {"sent"}
    assert set(Enrollment.objects.values_list("current_step", flat=True)) == {first.pk}
    assert not Activity.objects.filter(kind=ActivityKind.EMAIL_SENT).exists()
    assert len(mail.outbox) == 3
    mail.outbox.clear()

    lease = timedelta(seconds=settings.NURTURE_SEND_LEASE_SECONDS)
    after = now + lease + timedelta(seconds=1)
    result = enrollments_advance(now=after)
    # Nothing is handed over again; the enrollments move on; each message gets its activity.
    assert (result.processed, result.sent) == (3, 0)
    assert mail.outbox == []
    assert set(Enrollment.objects.values_list("current_step", flat=True)) == {second.pk}
    sent = Activity.objects.filter(kind=ActivityKind.EMAIL_SENT)
    assert sorted(sent.values_list("message_id", flat=True)) == sorted(
        EmailSend.objects.values_list("message_id", flat=True)
    )
    assert set(sent.values_list("campaign_id", flat=True)) == {program.campaign_id}
    # The next step goes out as usual, and its activities with it.
    assert enrollments_advance(now=after + timedelta(seconds=1)).sent == 3
    assert sent.count() == 6


def test_a_dead_workers_claim_whose_enrollment_ended_is_marked_failed_not_resent(settings):
    settings.EMAIL_BACKEND = "tests.nurture.failing_backend.CrashingBackend"
    program = ProgramFactory()
    StepFactory(program=program)
    contacts = ContactFactory.create_batch(2)
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")
    now = timezone.now()
    with pytest.raises(KeyboardInterrupt):
        enrollments_advance(now=now)
    # One recipient unsubscribes while its email is claimed: its enrollment ends.
    gone = Enrollment.objects.exclude(contact__email=mail.outbox[0].to[0]).get()
    activities_record(
        items=[
            {
                "kind": ActivityKind.EMAIL_UNSUBSCRIBED,
                "occurred_at": timezone.now(),
                "contact": gone.contact_id,
            }
        ]
    )
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox.clear()
    lease = timedelta(seconds=settings.NURTURE_SEND_LEASE_SECONDS)
    enrollments_advance(now=now + lease + timedelta(seconds=1))
    interrupted = EmailSend.objects.get(enrollment=gone)
    assert (interrupted.status, interrupted.sent_at) == ("failed", None)
    assert "interrupted" in interrupted.error.lower()
    assert [m.to[0] for m in mail.outbox] != [gone.contact.email]
    assert EmailSend.objects.exclude(enrollment=gone).get().status == "sent"


def test_a_send_is_stored_as_sending_while_it_is_handed_over(settings, monkeypatch):
    # (That the claim is *committed* by then is tested in test_send_visibility.py.)
    seen = []
    settings.EMAIL_BACKEND = "tests.nurture.failing_backend.ObservingBackend"
    monkeypatch.setattr(
        ObservingBackend,
        "observe",
        staticmethod(
            lambda message: seen.append(
                EmailSend.objects.filter(message_id=message.extra_headers["Message-ID"][1:-1])
                .values_list("status", flat=True)
                .first()
            )
        ),
    )
    program = ProgramFactory()
    StepFactory(program=program)
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    assert enrollments_advance().sent == 1
    assert seen == ["sending"]
    send = EmailSend.objects.get()
    assert send.status == "sent"
    assert send.sent_at >= send.created_at


def test_an_unsubscribe_committed_after_the_claim_stops_the_email(monkeypatch):
    program = ProgramFactory()
    StepFactory(program=program)
    ok, leaving = ContactFactory(), ContactFactory()
    contacts_enroll(program=program, contact_ids=[ok.pk, leaving.pk], source="m")
    claim = sending._claim

    def claim_then_unsubscribe(**kwargs):
        batch = claim(**kwargs)
        type(ok).objects.filter(pk=leaving.pk).update(email_status=EmailStatus.UNSUBSCRIBED)
        return batch

    monkeypatch.setattr(sending, "_claim", claim_then_unsubscribe)
    result = enrollments_advance()
    assert (result.sent, result.skipped) == (1, 1)
    assert [m.to for m in mail.outbox] == [[ok.email]]
    skipped = EmailSend.objects.get(contact=leaving)
    assert (skipped.status, skipped.skip_reason) == ("skipped", "unsubscribed")
    e = Enrollment.objects.get(contact=leaving)
    assert (e.state, e.exit_reason) == ("exited", "suppressed")


def _queries_to_send(n: int) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    program = ProgramFactory()
    StepFactory(program=program, position=1)
    contacts = [ContactFactory() for _ in range(n)]
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="manual")
    mail.outbox = []
    with CaptureQueriesContext(connection) as queries:
        result = enrollments_advance(now=timezone.now() + timedelta(seconds=1))
    assert result.sent == n
    assert len(mail.outbox) == n
    Enrollment.objects.filter(program=program).update(state=Enrollment.State.COMPLETED)
    return len(queries)


def test_a_batch_costs_the_same_queries_for_3_or_30_emails():
    # Set-based: lock+load, steps, programs, users, suppression, existing sends, one
    # insert, one update per outcome, one ingest call — none of them per email.
    assert _queries_to_send(3) == _queries_to_send(30)


def test_the_soft_bounce_limit_counts_messages_not_events():
    program = ProgramFactory()
    StepFactory(program=program)
    one_message, three_messages = ContactFactory(), ContactFactory()
    contacts_enroll(program=program, contact_ids=[one_message.pk, three_messages.pk], source="m")
    now = timezone.now()
    for i in range(3):
        for contact, message in ((one_message, "m@x"), (three_messages, f"m{i}@x")):
            Activity.objects.create(
                contact=contact,
                kind="email_bounced",
                occurred_at=now - timedelta(days=i),
                message_id=message,
                details={"bounce_type": "soft"},
            )
    enrollments_advance()
    assert [m.to for m in mail.outbox] == [[one_message.email]]
    assert EmailSend.objects.get(contact=three_messages).skip_reason == "soft_bounced"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_share_a_programs_daily_cap(monkeypatch):
    """Review finding: two batches each counted the day's sends before the other's claim
    committed, and together sent more than the cap."""
    import threading

    from django.db import connection

    program = ProgramFactory(daily_cap=3)
    StepFactory(program=program)
    contacts = ContactFactory.create_batch(6)
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")
    store = sending._claim_store

    def slow_store(batch, changes):
        threading.Event().wait(0.5)  # the other batch counts meanwhile
        store(batch, changes)

    monkeypatch.setattr(sending, "_claim_store", slow_store)
    results, errors = [], []

    def tick():
        try:
            results.append(enrollments_advance(batch_size=3))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
        threading.Event().wait(0.1)
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert EmailSend.objects.filter(status="sent").count() == 3
    assert len(mail.outbox) == 3


def test_a_failed_send_gives_its_slot_of_the_daily_cap_back(settings):
    settings.EMAIL_BACKEND = "tests.nurture.failing_backend.EmailBackend"
    program = ProgramFactory(daily_cap=1)
    StepFactory(program=program)
    first, second = ContactFactory(), ContactFactory()
    contacts_enroll(program=program, contact_ids=[first.pk], source="m")
    now = timezone.now()
    enrollments_advance(now=now)
    assert EmailSend.objects.get().status == "retrying"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    contacts_enroll(program=program, contact_ids=[second.pk], source="m", now=now)
    enrollments_advance(now=now + timedelta(seconds=1))
    assert [m.to for m in mail.outbox] == [[second.email]]


def test_sent_at_is_when_the_backend_accepted_each_message(settings, monkeypatch):
    """Review finding: every send of a call was dated at the call's start, so the 5-second
    machine-open rule measured from the wrong moment for mail handed over later."""
    import time as real_time

    clock = {"offset": 0.0}

    class Clock:
        @staticmethod
        def monotonic():
            return real_time.monotonic() + clock["offset"]

    def slow(message):
        clock["offset"] += 6  # each hand-over takes six seconds

    settings.EMAIL_BACKEND = "tests.nurture.failing_backend.ObservingBackend"
    monkeypatch.setattr(ObservingBackend, "observe", staticmethod(slow))
    monkeypatch.setattr(sending, "time", Clock)
    program = ProgramFactory()
    StepFactory(program=program)
    contacts_enroll(
        program=program, contact_ids=[c.pk for c in ContactFactory.create_batch(2)], source="m"
    )
    now = timezone.now()
    enrollments_advance(now=now)
    first, second = EmailSend.objects.order_by("sent_at")
    assert first.sent_at - now >= timedelta(seconds=6)
    assert second.sent_at - first.sent_at >= timedelta(seconds=6)


def test_a_click_on_the_unsubscribe_link_does_not_take_the_clicked_branch():
    """The provider reports the unsubscribe link's click; the person did not confirm. It is
    no click (METRICS.md "unique clicks"), so the branch takes the "no" side."""
    program, e1, e2, e3, _ = _drip()
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    enrollments_advance()  # to the wait step
    send = EmailSend.objects.get(contact=contact)
    activities_record(
        items=[
            {
                "kind": ActivityKind.EMAIL_CLICKED,
                "occurred_at": timezone.now(),
                "contact": contact.pk,
                "message_id": send.message_id,
                "url": f"https://crm.example.com/u/{send.message_id}",
            }
        ]
    )
    mail.outbox.clear()
    enrollments_advance(now=timezone.now() + timedelta(days=2, minutes=1))
    assert [m.subject for m in mail.outbox] == ["Reminder"]


def test_an_activity_since_branch_counts_a_persons_activity_only():
    """A privacy proxy's open since the contact entered is nobody's (persons_q): the
    "activity since" branch holds only once the person opens."""
    from nurture.services.steps import branch_holds

    program = ProgramFactory()
    branch = StepFactory(
        program=program,
        kind=Step.Kind.BRANCH,
        config={"condition": {"type": "activity_since", "kind": "email_opened"}},
    )
    contact = ContactFactory()
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollment = Enrollment.objects.get(contact=contact)
    opened = {"kind": "email_opened", "occurred_at": timezone.now(), "contact": contact.pk}
    activities_record(items=[{**opened, "is_machine": True}])
    assert not branch_holds(enrollment, branch)
    activities_record(items=[opened])
    assert branch_holds(enrollment, branch)


def test_a_worker_killed_after_a_hand_over_skip_exits_the_enrollment_on_recovery(
    settings, monkeypatch
):
    """Review finding: consent withdrawn after the claim makes the hand-over store the send
    "skipped"; a worker that died before its batch's end left the enrollment leased, and the
    recovery walked it on through the program (the owner was notified) instead of exiting."""
    owner = UserFactory()
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    StepFactory(program=program, position=2, kind=Step.Kind.NOTIFY_OWNER, config={"message": "hot"})
    StepFactory(program=program, position=3, kind=Step.Kind.END)
    leaving = ContactFactory(owner=owner)
    contacts_enroll(program=program, contact_ids=[leaving.pk], source="m")
    claim = sending._claim

    def claim_then_withdraw_consent(**kwargs):
        batch = claim(**kwargs)
        Contact.objects.filter(pk=leaving.pk).update(consent_basis="none")
        return batch

    def killed(batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(sending, "_claim", claim_then_withdraw_consent)
    monkeypatch.setattr(sending, "_finish", killed)
    now = timezone.now()
    with pytest.raises(KeyboardInterrupt):
        enrollments_advance(now=now)
    monkeypatch.undo()
    assert EmailSend.objects.get().status == "skipped"

    after = now + timedelta(seconds=settings.NURTURE_SEND_LEASE_SECONDS + 1)
    enrollments_advance(now=after)
    enrollments_advance(now=after + timedelta(seconds=1))
    e = Enrollment.objects.get()
    assert (e.state, e.exit_reason) == ("exited", "suppressed")
    assert not Notification.objects.exists()
    assert mail.outbox == []


def test_a_contact_erased_during_the_hand_over_does_not_hold_up_its_batch(monkeypatch):
    """Review finding: the batch's email_sent activities were built from the sends in
    memory, so one contact erased (or merged away) after its email went out made the
    recording refuse the whole batch: no enrollment moved on, no activity was recorded."""
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    second = StepFactory(program=program, position=2)
    contacts = ContactFactory.create_batch(3)
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")
    sends_update = sending.bulk.sends_update

    def store_then_erase_one(sends):
        sends_update(sends)
        Contact.objects.filter(pk=contacts[0].pk).delete()

    monkeypatch.setattr(sending.bulk, "sends_update", store_then_erase_one)
    assert enrollments_advance().sent == 3
    assert set(Enrollment.objects.values_list("current_step", flat=True)) == {second.pk}
    assert Activity.objects.filter(kind=ActivityKind.EMAIL_SENT).count() == 2


def test_a_batch_larger_than_one_ingest_call_records_every_email_sent(settings):
    """Review finding: a batch's email_sent activities went to one activities_record call,
    which refuses more than ACTIVITY_BATCH_LIMIT items: the mail went out, then the batch's
    end failed, and so did every later recovery."""
    settings.ACTIVITY_BATCH_LIMIT = 2
    program = ProgramFactory()
    StepFactory(program=program, position=1)
    second = StepFactory(program=program, position=2)
    contacts = ContactFactory.create_batch(5)
    contacts_enroll(program=program, contact_ids=[c.pk for c in contacts], source="m")
    assert enrollments_advance().sent == 5
    assert Activity.objects.filter(kind=ActivityKind.EMAIL_SENT).count() == 5
    assert set(Enrollment.objects.values_list("current_step", flat=True)) == {second.pk}
