"""Advancing due enrollments and sending their emails, in batches.

Delivery guarantee. A batch is claimed in one transaction: the due enrollments (and
their contacts) are locked with ``SELECT … FOR UPDATE SKIP LOCKED`` so any number of
workers share the work, every email is rendered and its ``EmailSend`` row inserted with
status ``sending`` (the unique (enrollment, step) constraint stops a second copy before
it is sent), and the enrollment is leased: due again only after
``NURTURE_SEND_LEASE_SECONDS``. The claim commits *before* any mail leaves, so the
tracking links, unsubscribe links and provider webhooks of a message find its send the
moment the recipient can have it. The emails are then handed to the backend in chunks of
``HAND_OVER_CHUNK``, outside any transaction: suppression is read again right before each
chunk, and each chunk's outcome (sent with its hand-over time, retrying, failed, or
skipped) commits in one statement right after it. Once every chunk is handed over, the
enrollments move on and the ``email_sent`` activities are recorded, once for the batch
(one transaction): those writes are what a batch costs most, so they are not repeated per
chunk, and nothing depends on them being earlier — the send's status alone decides
whether a message goes out again.

A worker that dies between a claim and its chunk's status update leaves those sends
"sending": when the lease ends the enrollment is due again, the next tick finds the
send still "sending" and hands the same message (same Message-ID) over once more. One
that dies after a chunk's status update but before the batch's end leaves sends "sent"
on enrollments still leased on their step: after the lease the tick moves those on and
records their ``email_sent`` activities (idempotent by message), sending nothing. So
every step is sent exactly once, except the messages of the interrupted chunk that the
backend had already accepted, which arrive at most once more; nothing is lost. A worker
stops handing over at half the lease, so a live worker and that recovery never overlap;
what it had not handed over is sent by the recovery. A claim whose enrollment ended
meanwhile (an unsubscribe, a goal) is not sent again: the tick marks it failed
("interrupted", delivery unknown), so it shows among the failed sends.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import DatabaseError, transaction
from django.db import connection as db_connection
from django.db.models import Count, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import ActivityKind, Contact, Notification, Source
from crm.models.choices import ConsentBasis, EmailStatus

from .. import mail, rendering, tokens
from ..models import LIVE_STATES, EmailSend, Enrollment, Program, Step
from . import bulk
from . import steps as step_logic
from .enrollment import EXIT_SUPPRESSED, HELD_STEP_ERROR, contacts_enroll

log = logging.getLogger(__name__)
User = get_user_model()
# Enrollments claimed per transaction. One claim renders and inserts this many emails
# with a fixed number of queries; the hand-over then goes chunk by chunk.
BATCH_SIZE = 1000
# Emails handed over between two status updates: each chunk re-reads suppression first
# and stores its sends' outcome after (one statement). Smaller chunks narrow the window in
# which an unsubscribe can cross a chunk and what a dead worker's recovery sends twice;
# bigger ones amortise those per-chunk costs.
HAND_OVER_CHUNK = 100
MAX_ATTEMPTS = 4
BACKOFF = [timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]
MAX_STEPS_PER_PASS = 20
SOFT_BOUNCE_LIMIT = 3
# After an email the next step is due "just after now": not in this call, on the next tick.
NEXT_PASS = timedelta(microseconds=1)
# An enrollment whose step failed is tried again after this (once the step is fixed, it goes on).
STEP_ERROR_RETRY = timedelta(hours=1)
INTERRUPTED = "Interrupted while being handed to the mail backend; delivery unknown."


def claim_lease() -> timedelta:
    """How long a claimed send may stay "sending" before a tick takes it back."""
    return timedelta(seconds=max(int(settings.NURTURE_SEND_LEASE_SECONDS), 1))


@dataclass
class AdvanceResult:
    processed: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0


@dataclass
class _Outgoing:
    """An email claimed by the batch: committed as "sending", then handed over."""

    enrollment: Enrollment
    step: Step
    send: EmailSend
    message: EmailMultiAlternatives
    advance: tuple  # the enrollment's (state, step id, next run, reason) once it is sent
    outcome: tuple | None = None  # set by the hand-over; None: left claimed (lease)


@dataclass
class _Batch:
    now: datetime
    steps: dict[int, list[Step]]
    started: float = 0.0  # time.monotonic() when the call's `now` was taken
    lease: timedelta = timedelta(0)
    lease_until: datetime | None = None
    deadline: float = 0.0  # monotonic time after which nothing more is handed over
    index: dict[int, int] = field(default_factory=dict)  # step id → position in its list
    suppressed_soft: set[int] = field(default_factory=set)
    cap_left: dict[int, int] = field(default_factory=dict)
    existing: dict[tuple[int, int], EmailSend] = field(default_factory=dict)
    outgoing: list[_Outgoing] = field(default_factory=list)
    new_sends: list[EmailSend] = field(default_factory=list)
    # Sends found "sent" on a leased enrollment (their batch's end never ran): (id, campaign).
    recovered: list[tuple[int, int | None]] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    moves: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    step_errors: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    result: AdvanceResult = field(default_factory=AdvanceResult)
    owners: dict[int | None, dict] = field(default_factory=dict)  # user id → merge fields
    # What does not vary per email, computed once per batch.
    host: str = ""
    from_email: str = ""
    mailto: str = ""
    unsubscribe_prefix: str = ""
    urls: tokens.Urls | None = None
    windows: dict[tuple, datetime | None] = field(default_factory=dict)

    def clock(self) -> datetime:
        """The current time on the call's clock: ``now`` plus the time since it was taken
        (the real time in production; tests that pass a later ``now`` stay on theirs)."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)

    def next_step(self, step: Step) -> Step | None:
        siblings = self.steps[step.program_id]
        i = self.index[step.pk] + 1
        return siblings[i] if i < len(siblings) else None

    def step_by_id(self, program_id: int, step_id) -> Step | None:
        i = self.index.get(step_id)
        siblings = self.steps.get(program_id, [])
        if i is None or i >= len(siblings) or siblings[i].pk != step_id:
            return None  # deleted, or a step of another program
        return siblings[i]


def enrollments_advance(
    *, now: datetime | None = None, batch_size: int = BATCH_SIZE, max_seconds: float = 50
) -> AdvanceResult:
    """Process due enrollments batch after batch until none is due or time is up."""
    total = AdvanceResult()
    started = time.monotonic()
    # One "now" for the whole call: rows advanced in this call become due just after it,
    # so consecutive steps run on the next tick instead of looping here.
    now = now or timezone.now()
    lease = claim_lease()
    sends_release_abandoned(now=now, lease=lease)
    connection = get_connection()
    try:
        connection.open()
        while time.monotonic() - started < max_seconds:
            r = _advance_batch(
                now=now, started=started, lease=lease, batch_size=batch_size, conn=connection
            )
            if not r.processed:
                break
            total.processed += r.processed
            total.sent += r.sent
            total.skipped += r.skipped
            total.failed += r.failed
            total.batches += 1
    finally:
        connection.close()
    total.seconds = time.monotonic() - started
    return total


def sends_release_abandoned(*, now: datetime, lease: timedelta) -> int:
    """Mark failed the claims of dead workers whose enrollment has moved on since.

    A claim whose enrollment is still live on its step is recovered by the sender when
    the lease ends (the message goes out once more); one whose enrollment ended (an
    unsubscribe, a goal, a removal) must not be sent again, and whether the backend had
    accepted it is unknown: it is listed among the failed sends instead of staying
    "sending" for ever.
    """
    abandoned = EmailSend.objects.filter(
        status=EmailSend.Status.SENDING, sent_at__lt=now - lease
    ).exclude(enrollment__state__in=LIVE_STATES, enrollment__current_step_id=F("step_id"))
    n = abandoned.update(status=EmailSend.Status.FAILED, sent_at=None, error=INTERRUPTED)
    if n:
        log.warning("%s claimed sends abandoned by a dead worker marked failed (interrupted)", n)
    return n


def _advance_batch(
    *, now: datetime, started: float, lease: timedelta, batch_size: int, conn
) -> AdvanceResult:
    with transaction.atomic():
        batch = _claim(now=now, started=started, lease=lease, batch_size=batch_size)
    if batch is None:
        return AdvanceResult()
    # The claim has committed: a click, an unsubscribe or a provider event for any of
    # these messages finds its send from the moment the message can reach anyone.
    _deliver(batch, conn)
    return batch.result


def _claim(*, now: datetime, started: float, lease: timedelta, batch_size: int) -> _Batch | None:
    """Walk a batch of due enrollments forward and claim their emails (one transaction)."""
    enrollments = _lock_and_load(now, batch_size)
    if not enrollments:
        return None
    program_ids = {e.program_id for e in enrollments}
    all_steps = Step.objects.filter(program_id__in=program_ids).select_related("template")
    by_program: dict[int, list[Step]] = defaultdict(list)
    for s in all_steps.order_by("program_id", "position", "id"):
        by_program[s.program_id].append(s)
    batch = _Batch(now=now, steps=by_program, started=started, lease=lease)
    batch.lease_until = batch.clock() + lease
    # Stop handing over at half the lease: a later tick takes a claim back only when the
    # whole lease has passed, so it never sends what this worker is still sending.
    batch.deadline = time.monotonic() + lease.total_seconds() / 2
    batch.host = urlsplit(settings.SITE_URL).hostname or "leadcycle.local"
    batch.from_email = settings.DEFAULT_FROM_EMAIL
    batch.mailto = mail.unsubscribe_mailto()
    batch.urls = tokens.Urls()
    # the links left untracked: the ones crm.models.activities recognises as no click
    batch.unsubscribe_prefix = batch.urls.unsubscribe_prefix
    for siblings in by_program.values():
        for i, s in enumerate(siblings):
            batch.index[s.pk] = i
    _prefetch(batch, enrollments)
    changes: dict[tuple, list[int]] = defaultdict(list)
    for enrollment in enrollments:
        state, step_id, run_at, reason = _run(batch, enrollment)
        changes[(state, step_id, run_at, reason)].append(enrollment.pk)
    _claim_store(batch, changes)
    for step_id, n in batch.step_errors.items():
        log.error("nurture step %s failed: %s enrollments held on it", step_id, n)
    batch.result.processed = len(enrollments)
    return batch


# The contact columns the sender reads (suppression, window, merge fields, branches,
# owner notifications); the rest of a wide contact row is not loaded 1,000 times a batch.
CONTACT_FIELDS = (
    "id", "first_name", "last_name", "email", "job_title", "country", "company_id",
    "owner_id", "email_status", "consent_basis", "timezone", "scorecard__score",
)  # fmt: skip


def _lock_and_load(now: datetime, batch_size: int) -> list[Enrollment]:
    """Lock a batch of due enrollments with their contacts and load them in one query;
    programs and owners are loaded once each."""
    qs = (
        Enrollment.objects.due(now)
        .order_by("next_run_at", "pk")
        .select_related("contact__company", "contact__scorecard")
        .only(
            *(f.attname for f in Enrollment._meta.concrete_fields),
            *(f"contact__{f}" for f in CONTACT_FIELDS),
            "contact__company__name",
        )
    )
    if db_connection.features.has_select_for_update_of:
        # Lock the enrollment and its contact, not the program (others share the program).
        qs = qs.select_for_update(skip_locked=True, of=("self", "contact"))
    else:
        qs = qs.select_for_update(skip_locked=True)
    enrollments = list(qs[:batch_size])
    programs = Program.objects.select_related("campaign").in_bulk(
        {e.program_id for e in enrollments}
    )
    user_ids = {e.contact.owner_id for e in enrollments} | {
        p.campaign.owner_id for p in programs.values()
    }
    user_ids.discard(None)
    users = User.objects.select_related("profile").in_bulk(user_ids) if user_ids else {}
    for p in programs.values():
        p.campaign.owner = users.get(p.campaign.owner_id)
    for e in enrollments:
        e.program = programs[e.program_id]
        e.contact.owner = users.get(e.contact.owner_id)
    return enrollments


def _prefetch(batch: _Batch, enrollments: list[Enrollment]) -> None:
    """Everything the per-enrollment pass needs, in a fixed number of queries."""
    batch.suppressed_soft = bulk.contacts_soft_bounced(
        [e.contact_id for e in enrollments],
        since=batch.now - timedelta(days=30),
        limit=SOFT_BOUNCE_LIMIT,
    )
    capped = {e.program_id: e.program.daily_cap for e in enrollments if e.program.daily_cap}
    if capped:
        # Concurrent batches of one capped program take turns from here to their claim's
        # commit (the program row's lock), so each counts the other's claimed sends;
        # uncapped programs never wait. In id order: two batches lock alike.
        list(
            Program.objects.select_for_update(no_key=True)
            .filter(pk__in=sorted(capped))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        day_start = timezone.localtime(batch.now).replace(hour=0, minute=0, second=0, microsecond=0)
        # Claimed sends count from their claim (sent_at is the claim time until they are
        # sent); a send that failed gives its slot back (sent_at cleared).
        sent_today = dict(
            EmailSend.objects.filter(
                program_id__in=capped,
                status__in=[EmailSend.Status.SENT, EmailSend.Status.SENDING],
                sent_at__gte=day_start,
            )
            .values("program_id")
            .annotate(n=Count("id"))
            .values_list("program_id", "n")
        )
        batch.cap_left = {pid: cap - sent_today.get(pid, 0) for pid, cap in capped.items()}
    batch.existing = {
        (s.enrollment_id, s.step_id): s
        for s in EmailSend.objects.filter(bulk.in_ids("enrollment_id", [e.pk for e in enrollments]))
    }


def _suppression_reason(batch: _Batch, contact) -> str:
    if contact.email_status != EmailStatus.ACTIVE:
        return contact.email_status
    if contact.consent_basis == ConsentBasis.NONE:
        return "no_consent"
    if contact.pk in batch.suppressed_soft:
        return "soft_bounced"
    return ""


def _run(batch: _Batch, e: Enrollment) -> tuple:
    """Walk one enrollment forward; return its new (state, step id, next run, exit reason).

    A step that fails for this enrollment (settings stored before they were checked, a
    template that does not render …) holds it on that step, marked and due again in an
    hour, and the rest of the batch goes on: one bad row must not stop every program.
    A database error is different: the claim's transaction is broken, so it rolls back
    and the next tick tries again.
    """
    # The batch's own Step instances (templates already joined), not e.current_step.
    step = batch.step_by_id(e.program_id, e.current_step_id) if e.current_step_id else None
    for _ in range(MAX_STEPS_PER_PASS):
        try:
            outcome, step = _step(batch, e, step)
        except DatabaseError:
            raise
        except Exception:
            return _held(batch, e, step)
        if outcome is not None:
            return outcome
    return (Enrollment.State.ACTIVE, step.pk if step else None, batch.now + timedelta(hours=1), "")


def _step(batch: _Batch, e: Enrollment, step: Step | None) -> tuple[tuple | None, Step | None]:
    """Run one step: (the enrollment's new state, None) or (None, the step to run next)."""
    if step is None or step.kind == Step.Kind.END:
        return (Enrollment.State.COMPLETED, None, None, ""), None
    if step.kind == Step.Kind.WAIT:
        if e.state == Enrollment.State.WAITING:
            # The wait is over: on to the step after it *now* (one added or moved while
            # the contact waited counts).
            e.state = Enrollment.State.ACTIVE
            return None, batch.next_step(step)
        return (Enrollment.State.WAITING, step.pk, _wait(step, batch.now), ""), None
    if step.kind == Step.Kind.BRANCH:
        cfg = step.config or {}
        target = cfg.get("yes_step") if step_logic.branch_holds(e, step) else cfg.get("no_step")
        if not target:
            return None, batch.next_step(step)
        found = batch.step_by_id(e.program_id, target)
        if found is None:
            # Not "no step left": a target the program does not have is a broken step
            # (held and logged, _held), never a silent completion of the program.
            raise LookupError(f"branch {step.pk} leads to step {target}, not in the program")
        return None, found
    if step.kind == Step.Kind.NOTIFY_OWNER:
        owner_id = e.contact.owner_id or e.program.campaign.owner_id
        if owner_id:
            message = (step.config or {}).get("message") or "needs your attention"
            batch.notifications.append(
                Notification(
                    user_id=owner_id,
                    text=f"{e.contact}: {message} ({e.program.name})"[:300],
                    url=e.contact.get_absolute_url(),
                )
            )
        return None, batch.next_step(step)
    if step.kind == Step.Kind.MOVE_TO_PROGRAM:
        target = (step.config or {}).get("program")
        if target:
            batch.moves[int(target)].add(e.contact_id)
        return (Enrollment.State.EXITED, None, None, "moved"), None
    return _email(batch, e, step), None


def _held(batch: _Batch, e: Enrollment, step: Step) -> tuple:
    """Hold an enrollment on a step that failed for it (logged once per step and batch)."""
    if step.pk not in batch.step_errors:
        log.exception(
            "nurture step %s (%s, program %s) failed for enrollment %s; its enrollments are "
            "held on it (exit_reason %r) and retried in an hour",
            step.pk,
            step.kind,
            step.program_id,
            e.pk,
            HELD_STEP_ERROR,
        )
    batch.step_errors[step.pk] += 1
    return (Enrollment.State.ACTIVE, step.pk, batch.now + STEP_ERROR_RETRY, HELD_STEP_ERROR)


def _wait(step: Step, now: datetime) -> datetime:
    return step_logic.wait_until(step, now)


def _email(batch: _Batch, e: Enrollment, step: Step) -> tuple:
    now, contact, program = batch.now, e.contact, e.program
    existing = batch.existing.get((e.pk, step.pk))
    nxt = batch.next_step(step)
    advance = (Enrollment.State.ACTIVE, nxt.pk if nxt else None, now + NEXT_PASS, "")
    if existing is not None and existing.status == EmailSend.Status.SENDING:
        if existing.sent_at and existing.sent_at + batch.lease > batch.clock():
            # Another worker's claim, still within its lease (the enrollment was made due
            # early by hand): leave it to that worker.
            return (Enrollment.State.ACTIVE, step.pk, existing.sent_at + batch.lease, "")
        # Claimed by a worker that died before recording the outcome: send it again (the
        # same message; the backend may have accepted it already: at most once more).
        log.warning("send %s: its claim's lease ended; handing it over again", existing.message_id)
    elif existing is not None and existing.status == EmailSend.Status.SENT:
        # Sent by a worker that died before its batch's end: record what it could not.
        batch.recovered.append((existing.pk, program.campaign_id))
        return advance
    elif existing is not None and existing.status == EmailSend.Status.SKIPPED:
        if existing.skip_reason and existing.skip_reason != "no_template":
            # Suppressed at the hand-over by a worker that died before its batch's end (a
            # claim-time suppression exits in the claim itself): exit as it would have.
            return (Enrollment.State.EXITED, None, None, EXIT_SUPPRESSED)
        return advance
    elif existing is not None and existing.status != EmailSend.Status.RETRYING:
        return advance  # already handled (skipped or failed for good)
    reason = _suppression_reason(batch, contact)
    if reason or step.template_id is None:
        send = existing or _new_send(batch, e, step)
        send.status = EmailSend.Status.SKIPPED
        send.skip_reason = reason or "no_template"
        send.template_id = step.template_id
        send.sent_at = None
        batch.new_sends.append(send)
        batch.result.skipped += 1
        if reason:
            return (Enrollment.State.EXITED, None, None, EXIT_SUPPRESSED)
        return advance
    # One answer per program and time zone: the batch has one "now".
    window = (program.pk, contact.timezone)
    if window not in batch.windows:
        batch.windows[window] = step_logic.next_window_opening(program, contact.timezone, now)
    opening = batch.windows[window]
    if opening is not None:
        return (Enrollment.State.ACTIVE, step.pk, opening, "")
    if program.pk in batch.cap_left and batch.cap_left[program.pk] <= 0:
        tomorrow = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (Enrollment.State.ACTIVE, step.pk, tomorrow + timedelta(days=1), "")
    send = existing or _new_send(batch, e, step)
    # Rendered before anything is counted: a template that fails holds this enrollment
    # (see _run) without taking a slot of the cap or leaving a half-made send.
    message = _build_message(batch, send, step.template, e)
    if program.pk in batch.cap_left:
        batch.cap_left[program.pk] -= 1
    send.template_id = step.template_id
    send.status = EmailSend.Status.SENDING
    send.skip_reason = ""
    send.error = ""
    send.sent_at = batch.clock()  # the claim's time until the backend has it
    send.attempts += 1
    batch.new_sends.append(send)
    batch.outgoing.append(_Outgoing(e, step, send, message, advance))
    # Leased: due again only if this claim is never resolved (see the module docstring).
    return (Enrollment.State.ACTIVE, step.pk, batch.lease_until, "")


def _new_send(batch: _Batch, e: Enrollment, step: Step) -> EmailSend:
    # Positional arguments in field order, as Model.from_db does: Django's keyword path
    # walks every field's descriptor and default (a third of a send's bookkeeping).
    row = dict(
        _SEND_DEFAULTS,
        enrollment_id=e.pk,
        step_id=step.pk,
        contact_id=e.contact_id,
        program_id=e.program_id,
        message_id=mail.message_id(batch.host),
        links=[],
    )
    return EmailSend(*[row[name] for name in _SEND_ATTNAMES])


_SEND_ATTNAMES = [f.attname for f in EmailSend._meta.concrete_fields]
_SEND_DEFAULTS = {f.attname: f.get_default() for f in EmailSend._meta.concrete_fields}


def _owner(e: Enrollment, cache: dict | None = None) -> dict:
    owner = e.contact.owner or e.program.campaign.owner
    if owner is None:
        return {}
    if cache is not None:
        if owner.pk not in cache:
            cache[owner.pk] = _owner_fields(owner)
        return cache[owner.pk]
    return _owner_fields(owner)


def _owner_fields(owner) -> dict:
    profile = getattr(owner, "profile", None)
    return {
        "name": owner.get_full_name() or owner.get_username(),
        "first_name": owner.first_name,
        "email": owner.email,
        "signature": getattr(profile, "signature", "") if profile else "",
    }


def contact_merge_fields(contact) -> dict:
    return {
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "email": contact.email,
        "job_title": contact.job_title,
        "country": contact.country,
        "company": contact.company.name if contact.company_id else "",
    }


def _build_message(
    batch: _Batch, send: EmailSend, template, e: Enrollment
) -> EmailMultiAlternatives:
    message_id = send.message_id
    urls = batch.urls
    unsubscribe = urls.unsubscribe(message_id)
    context = rendering.merge_context(
        contact=contact_merge_fields(e.contact),
        owner=_owner(e, batch.owners),
        unsubscribe_url=unsubscribe,
    )
    rendered = rendering.render_email(template, context)
    send.subject = rendered.subject
    send.to_digest = mail.recipient_digest(e.contact.email)
    if rendered.html:
        html, send.links = rendering.rewrite_links(
            rendered.html,
            click_url=lambda i: urls.click(message_id, i),
            skip_prefix=batch.unsubscribe_prefix,
        )
        rendered.html = rendering.add_open_pixel(html, urls.open(message_id))
    return mail.build_email(
        to=e.contact.email,
        rendered=rendered,
        message_id=message_id,
        unsubscribe_url=unsubscribe,
        from_email=batch.from_email,
        mailto=batch.mailto,
    )


def _claim_store(batch: _Batch, changes: dict[tuple, list[int]]) -> None:
    """Write the claim: sends (new ones inserted, re-claimed ones updated), enrollments,
    notifications and moves. A concurrent or retried copy of the same (enrollment, step)
    fails here on the unique constraint and rolls its claim back: nothing is sent."""
    fresh = [s for s in batch.new_sends if s.pk is None]
    again = [s for s in batch.new_sends if s.pk is not None]
    bulk.sends_insert(fresh, now=timezone.now())
    if again:
        EmailSend.objects.bulk_update(
            again,
            ["status", "skip_reason", "attempts", "sent_at", "error", "subject", "links"]
            + ["template_id", "esp_message_id", "to_digest"],
        )
    now = batch.now
    for (state, step_id, run_at, reason), ids in changes.items():
        done = state in (Enrollment.State.COMPLETED, Enrollment.State.EXITED)
        Enrollment.objects.filter(bulk.in_ids("pk", ids)).update(
            state=state,
            current_step_id=step_id,
            next_run_at=run_at,
            exit_reason=reason,
            exited_at=now if done else None,
        )
    if batch.recovered:
        _record_sent(batch.recovered)
    if batch.notifications:
        Notification.objects.bulk_create(batch.notifications)
    for program_id, contact_ids in batch.moves.items():
        target = Program.objects.filter(pk=program_id).first()
        if target:
            contacts_enroll(program=target, contact_ids=contact_ids, source="moved", now=now)


def _deliver(batch: _Batch, conn) -> None:
    """Hand the claimed emails over chunk by chunk, storing each chunk's send statuses
    right after it; then move the enrollments on and record the activities, once."""
    for start in range(0, len(batch.outgoing), HAND_OVER_CHUNK):
        chunk = batch.outgoing[start : start + HAND_OVER_CHUNK]
        stopped = _hand_over(batch, chunk, conn)
        # One statement (atomic on its own): from here these messages are never resent.
        bulk.sends_update([o.send for o in chunk if o.outcome is not None])
        if stopped:
            left = sum(1 for o in batch.outgoing if o.outcome is None)
            log.warning(
                "hand-over stopped at half the claim's lease; %s emails stay claimed and go "
                "out when it ends",
                left,
            )
            break
    with transaction.atomic():
        _finish(batch)


def _hand_over(batch: _Batch, chunk: list[_Outgoing], conn) -> bool:
    """Send one chunk over the reused connection; True if the lease's half ran out."""
    # The contact rows are no longer locked: an unsubscribe, complaint or hard bounce
    # committed since the claim stops the email here.
    suppressed = _suppressed_now({o.enrollment.contact_id for o in chunk})
    for o in chunk:
        send = o.send
        reason = suppressed.get(o.enrollment.contact_id)
        if reason:
            send.status, send.skip_reason, send.sent_at = EmailSend.Status.SKIPPED, reason, None
            o.outcome = (Enrollment.State.EXITED, None, None, EXIT_SUPPRESSED)
            batch.result.skipped += 1
            continue
        if time.monotonic() > batch.deadline:
            return True
        try:
            conn.send_messages([o.message])
        except Exception as exc:  # any backend/provider error: retry with back-off
            log.warning("send %s failed (attempt %s): %s", send.message_id, send.attempts, exc)
            send.error = str(exc)[:300]
            send.sent_at = None  # gives its slot of the daily cap back
            if send.attempts >= MAX_ATTEMPTS:
                send.status = EmailSend.Status.FAILED
                batch.result.failed += 1
                o.outcome = o.advance
            else:
                send.status = EmailSend.Status.RETRYING
                retry_at = batch.now + BACKOFF[min(send.attempts - 1, len(BACKOFF) - 1)]
                o.outcome = (Enrollment.State.ACTIVE, o.step.pk, retry_at, "")
            continue
        send.status = EmailSend.Status.SENT
        send.sent_at = batch.clock()  # accepted now: the machine-open rule counts from here
        status = getattr(o.message, "anymail_status", None)
        if status is not None and getattr(status, "message_id", None):
            send.esp_message_id = str(status.message_id)[:200]
        o.outcome = o.advance
        batch.result.sent += 1
    return False


def _suppressed_now(contact_ids: set[int]) -> dict[int, str]:
    """Contacts suppressed since the claim (one query), with the skip reason."""
    rows = Contact.objects.filter(
        bulk.in_ids("id", contact_ids),
        ~Q(email_status=EmailStatus.ACTIVE) | Q(consent_basis=ConsentBasis.NONE),
    ).values_list("id", "email_status")
    return {pk: status if status != EmailStatus.ACTIVE else "no_consent" for pk, status in rows}


def _finish(batch: _Batch) -> None:
    """Record the batch's email_sent activities and move its enrollments on.

    Activities first: recording them locks their contacts (in id order), and the activity
    queue's drain locks contacts before it exits enrollments, so taking the enrollments
    first could deadlock with it.
    """
    done = [o for o in batch.outgoing if o.outcome is not None]
    if not done:
        return
    _record_sent(
        [
            (o.send.pk, o.enrollment.program.campaign_id)
            for o in done
            if o.send.status == EmailSend.Status.SENT
        ]
    )
    # Only enrollments still on the claimed step move: one that exited meanwhile (an
    # unsubscribe, a goal, a removal) stays exited. The step is compared through
    # COALESCE so that PostgreSQL finds the rows by primary key: with statistics older
    # than a new step it chose the current_step index instead and read every enrollment
    # on the step for each batch (128 ms per 1,000 instead of 15 at 100k).
    moves: dict[tuple, list[int]] = defaultdict(list)
    for o in done:
        moves[(o.step.pk, *o.outcome)].append(o.enrollment.pk)
    for (claimed, state, step_id, run_at, reason), ids in moves.items():
        finished = state in (Enrollment.State.COMPLETED, Enrollment.State.EXITED)
        Enrollment.objects.alias(on_step=Coalesce("current_step_id", Value(0))).filter(
            bulk.in_ids("pk", ids), state__in=LIVE_STATES, on_step=claimed
        ).update(
            state=state,
            current_step_id=step_id,
            next_run_at=run_at,
            exit_reason=reason,
            exited_at=batch.now if finished else None,
        )


def _record_sent(sends: list[tuple[int, int | None]]) -> None:
    """One ``email_sent`` activity per message sent, given as (send id, campaign id).

    The sends are read again: a contact merged since the hand-over has its sends moved to
    the kept contact, one erased has none left, and one stale id must not make the
    recording refuse the whole batch. A repeat of a message is a no-op (external_id).
    """
    if not sends:
        return
    campaigns = dict(sends)
    rows = (
        EmailSend.objects.filter(bulk.in_ids("id", list(campaigns)), status=EmailSend.Status.SENT)
        .order_by("id")
        .values_list("id", "contact_id", "message_id", "sent_at", "program_id", "step_id")
    )
    latest = timezone.now()  # ingest refuses future times (tests pass a later `now`)
    items = [
        {
            "kind": ActivityKind.EMAIL_SENT,
            "occurred_at": min(sent_at or latest, latest),
            "contact": contact_id,
            "campaign": campaigns[pk],
            "message_id": message_id,
            "external_id": f"send:{message_id}",
            "details": {"program": program_id, "step": step_id},
        }
        for pk, contact_id, message_id, sent_at, program_id, step_id in rows
    ]
    limit = int(settings.ACTIVITY_BATCH_LIMIT)  # what one activities_record call accepts
    for start in range(0, len(items), limit):
        activities_record(items=items[start : start + limit], source=Source.OTHER)
