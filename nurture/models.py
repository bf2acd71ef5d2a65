"""Nurture programs: triggers, steps, enrollments, email templates and sends."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from crm.models.choices import ActivityKind

LIVE_STATES = ("active", "waiting")


class Program(models.Model):
    """The automation that runs for a campaign (crm.Campaign is the unit of cost)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        ARCHIVED = "archived", "Archived"

    class Reentry(models.TextChoices):
        NEVER = "never", "Never"
        AFTER_DAYS = "after_days", "After N days"
        ALWAYS = "always", "Each time the trigger fires"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    campaign = models.ForeignKey("crm.Campaign", on_delete=models.PROTECT, related_name="programs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    audience = models.ForeignKey(
        "crm.Segment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="If set, only members of this segment may enter.",
    )
    exit_on_goal = models.BooleanField(
        default=True, help_text="Exit when the campaign goal happens"
    )
    exit_on_mql = models.BooleanField(default=True, help_text="Exit when the contact becomes MQL")
    exit_on_recycle = models.BooleanField(
        default=True, help_text="Exit when sales recycles or disqualifies the contact"
    )
    exit_on_accept = models.BooleanField(
        default=True,
        help_text="Exit when sales takes the lead on (it becomes SQL, opportunity or customer)",
    )
    reentry = models.CharField(max_length=12, choices=Reentry.choices, default=Reentry.NEVER)
    reentry_days = models.PositiveIntegerField(default=0)
    # Send window: weekdays (0 = Monday) and hours [start, end) in the contact's time zone
    # (or the site's when the contact has none / use_contact_timezone is off).
    send_days = models.JSONField(default=list, blank=True, help_text="Weekdays 0–6; empty = all")
    send_hour_start = models.PositiveSmallIntegerField(default=0)
    send_hour_end = models.PositiveSmallIntegerField(default=24)
    use_contact_timezone = models.BooleanField(default=True)
    daily_cap = models.PositiveIntegerField(null=True, blank=True, help_text="Emails per day")
    holdout_percent = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("nurture:program-detail", args=[self.pk])

    def clean(self) -> None:
        """The program's own rules; the builder's form runs them, the API calls them too."""
        errors = program_settings_errors(
            send_hour_start=self.send_hour_start,
            send_hour_end=self.send_hour_end,
            holdout_percent=self.holdout_percent,
        )
        if errors:
            raise ValidationError(errors)

    def is_held_out(self, contact_id: int) -> bool:
        """Stable random holdout: the same contact always lands on the same side."""
        if not self.holdout_percent:
            return False
        digest = hashlib.sha256(f"{self.pk}:{contact_id}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % 100 < self.holdout_percent


def program_settings_errors(
    *, send_hour_start: int | None, send_hour_end: int | None, holdout_percent: int | None
) -> dict[str, str]:
    """A send window that can open (an empty one would hold every email for ever) and a
    holdout that leaves enough to nurture; messages by field."""
    errors = {}
    start, end = send_hour_start, send_hour_end
    if start is not None and end is not None and not 0 <= start < end <= 24:
        errors["send_hour_end"] = "The window runs from 0–23 to 1–24 and must not be empty."
    if (holdout_percent or 0) > 50:
        errors["holdout_percent"] = "A holdout above 50% leaves too few to nurture."
    return errors


class Trigger(models.Model):
    """An entry rule of a program."""

    class Kind(models.TextChoices):
        SEGMENT_JOINED = "segment_joined", "Joined a segment"
        ACTIVITY = "activity", "An activity happened"
        DATE = "date", "A date relative to a contact attribute"
        MANUAL = "manual", "Added by hand or API"
        RECYCLED = "recycled", "Recycled by sales with a reason"

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="triggers")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    segment = models.ForeignKey(
        "crm.Segment", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    activity_kind = models.CharField(max_length=40, choices=ActivityKind.choices, blank=True)
    url_pattern = models.CharField(
        max_length=300, blank=True, help_text="Glob on the activity URL, e.g. */pricing*"
    )
    form = models.CharField(max_length=100, blank=True, help_text="details.form of the activity")
    campaign = models.ForeignKey(
        "crm.Campaign", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    date_attribute = models.SlugField(max_length=50, blank=True, help_text="e.g. birthday")
    offset_days = models.IntegerField(default=0, help_text="Negative: days before the date")
    yearly = models.BooleanField(default=True)
    reason_code = models.CharField(
        max_length=50, blank=True, help_text="crm.RejectionReason code; blank = any"
    )
    # Cursors so each tick reads only what is new. Segment joins: the (xid, id) of the last
    # join read, a position in crm.SegmentChange's log order.
    last_change_xid = models.BigIntegerField(default=0)
    last_change_id = models.BigIntegerField(default=0)
    last_run_on = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.program_id}"


class EmailTemplate(models.Model):
    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=300)
    preheader = models.CharField(max_length=300, blank=True)
    html_body = models.TextField(blank=True)
    text_body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("nurture:template-edit", args=[self.pk])


class Step(models.Model):
    """One step of a program, run in ``position`` order.

    ``config`` by kind: wait ``{"hours": n}`` / ``{"days": n}`` / ``{"weekday": 0-6,
    "hour": h}``; branch ``{"condition": {...}, "yes_step": id|null, "no_step": id|null}``
    (null = the next step); notify_owner ``{"message": "..."}``; move_to_program
    ``{"program": id}``.
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "Send an email"
        WAIT = "wait", "Wait"
        BRANCH = "branch", "Branch on a condition"
        NOTIFY_OWNER = "notify_owner", "Notify the owner"
        MOVE_TO_PROGRAM = "move_to_program", "Move to another program"
        END = "end", "End"

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True)
    template = models.ForeignKey(
        EmailTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="steps"
    )
    # The review register lists steps added between two reviews next to the trend.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["program", "position", "id"]

    def __str__(self) -> str:
        return f"{self.position}. {self.get_kind_display()}"


class ProgramChange(models.Model):
    """One edit of a program — its settings, status, steps or entry rules — by whom and
    when: the review register lists a program's edits between two reviews beside its trend
    (reports.review.changes). Written by the builder's and the API's writes
    (nurture.services.programs.program_change_note); kept with the program."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField(default=timezone.now)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    summary = models.CharField(max_length=300)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # The register: a program's changes in a period.
            models.Index(fields=["program", "at"], name="programchange_program_time"),
        ]

    def __str__(self) -> str:
        return f"{self.program_id} {self.at:%Y-%m-%d %H:%M} {self.summary}"


class EnrollmentQuerySet(models.QuerySet):
    def live(self) -> EnrollmentQuerySet:
        return self.filter(state__in=LIVE_STATES)

    def due(self, now) -> EnrollmentQuerySet:
        """Live enrollments of active programs whose next step is due.

        The active programs are read first, as a list of ids, instead of joined: programs
        are few and rarely change, so PostgreSQL's autovacuum seldom analyses their table,
        and with the join the planner guessed one active program, sorted every due row of
        every program (100k rows, ~1 s) for each batch of 1,000 instead of reading the
        ``enrollment_due`` index in order and stopping at the batch's size.
        """
        active = list(
            Program.objects.filter(status=Program.Status.ACTIVE).values_list("pk", flat=True)
        )
        return self.live().filter(next_run_at__lte=now, program_id__in=active)


class Enrollment(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        WAITING = "waiting", "Waiting"
        COMPLETED = "completed", "Completed"
        EXITED = "exited", "Exited"
        HELD_OUT = "held_out", "Held out"

    # No single-column indexes on contact and program: enrollment_contact_state and
    # enrollment_program_contact lead with them and serve those lookups; every index is
    # rewritten on each step the sender advances (next_run_at changes: no HOT update).
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    program = models.ForeignKey(
        Program, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    # Indexed (Django's default): deleting a step sets its enrollments' current_step to
    # NULL by that column alone (the SET_NULL collector).
    current_step = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    next_run_at = models.DateTimeField(null=True, blank=True)
    entered_at = models.DateTimeField()
    exited_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=40, blank=True)
    source = models.CharField(max_length=20, blank=True, help_text="trigger kind, manual, api …")

    objects = EnrollmentQuerySet.as_manager()

    class Meta:
        ordering = ["-entered_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "program"],
                condition=models.Q(state__in=LIVE_STATES),
                name="one_live_enrollment",
            )
        ]
        indexes = [
            # The tick: live enrollments due now, oldest first, in batches
            # (ORDER BY next_run_at, id LIMIT n FOR UPDATE SKIP LOCKED). The id column
            # makes the index give that order: with next_run_at alone, a batch sorted
            # every due row sharing a next_run_at (a whole segment enrolled at once).
            models.Index(
                fields=["next_run_at", "id"],
                name="enrollment_due",
                condition=models.Q(state__in=LIVE_STATES),
            ),
            # Program page funnel and enrollment list; re-entry checks per program.
            models.Index(fields=["program", "contact"], name="enrollment_program_contact"),
            # Contact timeline and exits by contact (handlers).
            models.Index(fields=["contact", "state"], name="enrollment_contact_state"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.program_id} ({self.state})"


class EmailSend(models.Model):
    class Status(models.TextChoices):
        # Claimed and committed, being handed to the mail backend (nurture.services.sending).
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"
        RETRYING = "retrying", "Retrying"
        FAILED = "failed", "Failed"

    # No single-column indexes on enrollment, contact and program: one_send_per_step,
    # send_contact_time and send_program_status lead with them and serve those lookups
    # (the sender inserts a thousand rows a batch; each index costs every insert).
    # RESTRICT: a send is the record of mail someone has, with links that must keep
    # working; an enrollment cannot be deleted from under its sends (a merge that left
    # one with the deleted duplicate would have lost them). Deleting the contact or the
    # program still deletes both, each through its own cascade.
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.RESTRICT, related_name="sends", db_index=False
    )
    step = models.ForeignKey(Step, null=True, on_delete=models.SET_NULL, related_name="sends")
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    program = models.ForeignKey(
        Program, on_delete=models.CASCADE, related_name="sends", db_index=False
    )
    template = models.ForeignKey(
        EmailTemplate, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Unique by a constraint (send_message_id), not unique=True: that would add a second,
    # varchar_pattern_ops index for LIKE queries nobody makes.
    message_id = models.CharField(max_length=200)
    # The provider's own id (anymail_status.message_id) when sent through django-anymail;
    # tracking webhooks name the message by it.
    esp_message_id = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices)
    skip_reason = models.CharField(max_length=40, blank=True)
    error = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    subject = models.CharField(max_length=300, blank=True)
    # The tracked links of this email, by index: a click token may only lead to one of them.
    links = models.JSONField(default=list, blank=True)
    # A keyed digest of the address the email went to (nurture.mail.recipient_digest), not
    # the address: a provider's event for it is this contact's after a merge or an edit of
    # the address, and the column holds nothing erasure would have to clear.
    to_digest = models.CharField(max_length=24, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # When the backend accepted the message; while the status is "sending", when the send
    # was claimed (the daily cap counts it from then, and the claim's lease runs from it).
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "step"], name="one_send_per_step"),
            # Tracking tokens, webhooks and reports resolve a message id to its send.
            models.UniqueConstraint(fields=["message_id"], name="send_message_id"),
        ]
        indexes = [
            # Webhooks resolve the provider's message id to the send.
            models.Index(
                fields=["esp_message_id"],
                name="send_esp_message",
                condition=~models.Q(esp_message_id=""),
            ),
            # Program page: per-step funnel counts and the failed-sends list; daily cap.
            models.Index(fields=["program", "status", "sent_at"], name="send_program_status"),
            # Contact timeline.
            models.Index(fields=["contact", "created_at"], name="send_contact_time"),
            # The tick's sweep of claims whose worker died after the enrollment moved on
            # (status "sending", claimed before the lease); only in-flight rows are in it.
            models.Index(
                fields=["sent_at"],
                name="send_claimed",
                condition=models.Q(status="sending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.status})"
