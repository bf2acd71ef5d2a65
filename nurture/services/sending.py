"""Advancing due enrollments and sending their emails, in batches.

Delivery guarantee. One batch is one database transaction: the due enrollments (and
their contacts) are locked with ``SELECT … FOR UPDATE SKIP LOCKED`` so any number of
workers share the work; the ``EmailSend`` rows are inserted *before* the mail is handed
to the backend, so the unique (enrollment, step) constraint stops a second copy before
it is sent; the mail is sent inside the transaction and the batch commits afterwards.
A worker killed mid-batch rolls the whole batch back: after restart every due step is
sent again exactly once, so a message the backend had already accepted before the kill
is delivered at most once more. Nothing is ever lost. Locking the contact rows also
means an unsubscribe that commits while a batch runs waits for the batch, and the next
batch sees it: no email reaches a contact after its unsubscribe committed.
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
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import ActivityKind, Notification, Source
from crm.models.choices import ConsentBasis, EmailStatus

from .. import mail, rendering, tokens
from ..models import EmailSend, Enrollment, Program, Step
from . import bulk
from . import steps as step_logic
from .enrollment import EXIT_SUPPRESSED, contacts_enroll

log = logging.getLogger(__name__)
User = get_user_model()
# = ACTIVITY_BATCH_LIMIT: one activities_record call (one run of every "activities
# recorded" handler) per batch; bigger batches amortise those per-call costs.
BATCH_SIZE = 1000
MAX_ATTEMPTS = 4
BACKOFF = [timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]
MAX_STEPS_PER_PASS = 20
SOFT_BOUNCE_LIMIT = 3
# After an email the next step is due "just after now": not in this call, on the next tick.
NEXT_PASS = timedelta(microseconds=1)


@dataclass
class AdvanceResult:
    processed: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0


@dataclass
class _Batch:
    now: datetime
    steps: dict[int, list[Step]]
    index: dict[int, int] = field(default_factory=dict)  # step id → position in its list
    suppressed_soft: set[int] = field(default_factory=set)
    cap_left: dict[int, int] = field(default_factory=dict)
    existing: dict[tuple[int, int], EmailSend] = field(default_factory=dict)
    outgoing: list[tuple[Enrollment, Step, EmailSend, EmailMultiAlternatives]] = field(
        default_factory=list
    )
    new_sends: list[EmailSend] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    moves: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    retried: list[EmailSend] = field(default_factory=list)
    result: AdvanceResult = field(default_factory=AdvanceResult)
    owners: dict[int | None, dict] = field(default_factory=dict)  # user id → merge fields
    # What does not vary per email, computed once per batch.
    host: str = ""
    from_email: str = ""
    mailto: str = ""
    unsubscribe_prefix: str = ""
    urls: tokens.Urls | None = None
    windows: dict[tuple, datetime | None] = field(default_factory=dict)

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
    connection = get_connection()
    try:
        connection.open()
        while time.monotonic() - started < max_seconds:
            r = _advance_batch(now=now, batch_size=batch_size, conn=connection)
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


def _advance_batch(*, now: datetime, batch_size: int, conn) -> AdvanceResult:
    with transaction.atomic():
        enrollments = _lock_and_load(now, batch_size)
        if not enrollments:
            return AdvanceResult()
        program_ids = {e.program_id for e in enrollments}
        all_steps = Step.objects.filter(program_id__in=program_ids).select_related("template")
        by_program: dict[int, list[Step]] = defaultdict(list)
        for s in all_steps.order_by("program_id", "position", "id"):
            by_program[s.program_id].append(s)
        batch = _Batch(now=now, steps=by_program)
        batch.host = urlsplit(settings.SITE_URL).hostname or "leadcycle.local"
        batch.from_email = settings.DEFAULT_FROM_EMAIL
        batch.mailto = mail.unsubscribe_mailto()
        batch.unsubscribe_prefix = tokens.unsubscribe_url("x").split("/u/")[0] + "/u/"
        batch.urls = tokens.Urls()
        for siblings in by_program.values():
            for i, s in enumerate(siblings):
                batch.index[s.pk] = i
        _prefetch(batch, enrollments)
        changes: dict[tuple, list[int]] = defaultdict(list)
        for enrollment in enrollments:
            state, step_id, run_at, reason = _run(batch, enrollment)
            changes[(state, step_id, run_at, reason)].append(enrollment.pk)
        _insert_sends(batch)
        _send(batch, conn)
        _store(batch, changes)
        batch.result.processed = len(enrollments)
        return batch.result


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
        day_start = timezone.localtime(batch.now).replace(hour=0, minute=0, second=0, microsecond=0)
        sent_today = dict(
            EmailSend.objects.filter(
                program_id__in=capped, status=EmailSend.Status.SENT, sent_at__gte=day_start
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
    """Walk one enrollment forward; return its new (state, step id, next run, exit reason)."""
    now = batch.now
    # The batch's own Step instances (templates already joined), not e.current_step.
    step = batch.step_by_id(e.program_id, e.current_step_id) if e.current_step_id else None
    for _ in range(MAX_STEPS_PER_PASS):
        if step is None or step.kind == Step.Kind.END:
            return (Enrollment.State.COMPLETED, None, None, "")
        if step.kind == Step.Kind.WAIT:
            nxt = batch.next_step(step)
            return (Enrollment.State.WAITING, nxt.pk if nxt else None, _wait(step, now), "")
        if step.kind == Step.Kind.BRANCH:
            cfg = step.config or {}
            target = cfg.get("yes_step") if step_logic.branch_holds(e, step) else cfg.get("no_step")
            step = batch.step_by_id(e.program_id, target) if target else batch.next_step(step)
            continue
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
            step = batch.next_step(step)
            continue
        if step.kind == Step.Kind.MOVE_TO_PROGRAM:
            target = (step.config or {}).get("program")
            if target:
                batch.moves[int(target)].add(e.contact_id)
            return (Enrollment.State.EXITED, None, None, "moved")
        # An email step.
        return _email(batch, e, step)
    return (Enrollment.State.ACTIVE, step.pk if step else None, now + timedelta(hours=1), "")


def _wait(step: Step, now: datetime) -> datetime:
    return step_logic.wait_until(step, now)


def _email(batch: _Batch, e: Enrollment, step: Step) -> tuple:
    now, contact, program = batch.now, e.contact, e.program
    existing = batch.existing.get((e.pk, step.pk))
    nxt = batch.next_step(step)
    advance = (Enrollment.State.ACTIVE, nxt.pk if nxt else None, now + NEXT_PASS, "")
    if existing is not None and existing.status != EmailSend.Status.RETRYING:
        return advance  # already handled (sent, skipped or failed for good)
    reason = _suppression_reason(batch, contact)
    if reason or step.template_id is None:
        send = existing or _new_send(batch, e, step)
        send.status = EmailSend.Status.SKIPPED
        send.skip_reason = reason or "no_template"
        send.template_id = step.template_id
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
    if program.pk in batch.cap_left:
        if batch.cap_left[program.pk] <= 0:
            tomorrow = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
            return (Enrollment.State.ACTIVE, step.pk, tomorrow + timedelta(days=1), "")
        batch.cap_left[program.pk] -= 1
    send = existing or _new_send(batch, e, step)
    send.template_id = step.template_id
    send.status = EmailSend.Status.SENT
    send.sent_at = now
    send.attempts += 1
    message = _build_message(batch, send, step.template, e)
    batch.new_sends.append(send)
    batch.outgoing.append((e, step, send, message))
    return advance


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


def _send(batch: _Batch, conn) -> None:
    """Hand each message to the backend over one reused connection."""
    for e, _step, send, message in batch.outgoing:
        try:
            conn.send_messages([message])
        except Exception as exc:  # any backend/provider error: retry with back-off
            log.warning("send %s failed (attempt %s): %s", send.message_id, send.attempts, exc)
            send.error = str(exc)[:300]
            send.sent_at = None
            if send.attempts >= MAX_ATTEMPTS:
                send.status = EmailSend.Status.FAILED
                batch.result.failed += 1
            else:
                send.status = EmailSend.Status.RETRYING
                e._retry_at = batch.now + BACKOFF[min(send.attempts - 1, len(BACKOFF) - 1)]
            continue
        status = getattr(message, "anymail_status", None)
        if status is not None and getattr(status, "message_id", None):
            send.esp_message_id = str(status.message_id)[:200]
        batch.result.sent += 1


def _insert_sends(batch: _Batch) -> None:
    """Insert the new sends *before* handing mail to the backend.

    A concurrent or retried copy of the same (enrollment, step) fails here on the unique
    constraint and rolls its batch back before anything is sent.
    """
    batch.retried = [s for s in batch.new_sends if s.pk is not None]
    bulk.sends_insert([s for s in batch.new_sends if s.pk is None], now=timezone.now())


def _store(batch: _Batch, changes: dict[tuple, list[int]]) -> None:
    now = batch.now
    retried = {s.pk for s in batch.retried}
    updates = [
        s
        for s in batch.new_sends
        if s.pk in retried
        or s.status in (EmailSend.Status.RETRYING, EmailSend.Status.FAILED)
        or s.esp_message_id
    ]
    if updates:
        EmailSend.objects.bulk_update(
            updates,
            ["status", "skip_reason", "attempts", "sent_at", "error", "subject", "links"]
            + ["esp_message_id"],
        )
    # Retries keep their enrollment on the same step, due after the back-off.
    retry = {e.pk: (e, step) for e, step, send, _ in batch.outgoing if hasattr(e, "_retry_at")}
    for key, ids in list(changes.items()):
        kept = [i for i in ids if i not in retry]
        changes[key] = kept
    for e, step in retry.values():
        changes[(Enrollment.State.ACTIVE, step.pk, e._retry_at, "")].append(e.pk)
    for (state, step_id, run_at, reason), ids in changes.items():
        if not ids:
            continue
        done = state in (Enrollment.State.COMPLETED, Enrollment.State.EXITED)
        Enrollment.objects.filter(bulk.in_ids("pk", ids)).update(
            state=state,
            current_step_id=step_id,
            next_run_at=run_at,
            exit_reason=reason,
            exited_at=now if done else None,
        )
    sent = [(e, s) for e, _, s, _ in batch.outgoing if s.status == EmailSend.Status.SENT]
    occurred_at = min(now, timezone.now())  # ingest refuses future times (tests pass `now`)
    if sent:
        activities_record(
            items=[
                {
                    "kind": ActivityKind.EMAIL_SENT,
                    "occurred_at": occurred_at,
                    "contact": s.contact_id,
                    "campaign": e.program.campaign_id,
                    "message_id": s.message_id,
                    "external_id": f"send:{s.message_id}",
                    "details": {"program": s.program_id, "step": s.step_id},
                }
                for e, s in sent
            ],
            source=Source.OTHER,
        )
    if batch.notifications:
        Notification.objects.bulk_create(batch.notifications)
    for program_id, contact_ids in batch.moves.items():
        target = Program.objects.filter(pk=program_id).first()
        if target:
            contacts_enroll(program=target, contact_ids=contact_ids, source="moved", now=now)
