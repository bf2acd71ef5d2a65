"""Scoring rules, settings and assignment rules with their history, the score ledger and
rescore runs.

A contact's score is the sum of its ledger entries (METRICS.md, "Scores over time");
``crm.ContactScore.score`` caches that sum for sorting and is rewritten in bulk by the engine.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from crm.models.choices import ActivityKind

POINTS_MIN, POINTS_MAX = -1000, 1000


class Rule(models.Model):
    class Kind(models.TextChoices):
        FIT = "fit", "Fit (profile)"
        ENGAGEMENT = "engagement", "Engagement (activity)"
        NEGATIVE = "negative", "Negative engagement"

    class Frequency(models.TextChoices):
        ONCE_EVER = "once_ever", "Once ever"
        ONCE_PER_DAY = "once_per_day", "Once per day"
        ONCE_PER_WEEK = "once_per_week", "Once per week"
        EVERY_TIME = "every_time", "Every time"

    class Negative(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        HARD_BOUNCED = "hard_bounced", "Hard bounce"
        INACTIVE = "inactive", "No activity for N days"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # fit
    field = models.CharField(max_length=120, blank=True)
    operator = models.CharField(max_length=20, blank=True)
    value = models.CharField(max_length=500, blank=True)
    # engagement
    activity_kind = models.CharField(max_length=40, choices=ActivityKind.choices, blank=True)
    campaign = models.ForeignKey(
        "crm.Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    url_contains = models.CharField(
        max_length=200, blank=True, help_text="Counts only visits whose URL contains this text"
    )
    form = models.CharField(max_length=100, blank=True, help_text="details.form of the activity")
    content_type = models.CharField(
        max_length=100, blank=True, help_text="details.content_type of the activity"
    )
    frequency = models.CharField(
        max_length=20, choices=Frequency.choices, default=Frequency.EVERY_TIME
    )
    cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many counted times per contact"
    )
    expire_after_days = models.PositiveIntegerField(null=True, blank=True)
    half_life_days = models.PositiveIntegerField(null=True, blank=True)
    # negative engagement
    negative = models.CharField(max_length=20, choices=Negative.choices, blank=True)
    inactive_days = models.PositiveIntegerField(null=True, blank=True)

    points = models.IntegerField(
        validators=[MinValueValidator(POINTS_MIN), MaxValueValidator(POINTS_MAX)]
    )
    active_from = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["kind", "name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.points:+d})"

    def is_fading(self) -> bool:
        return bool(self.expire_after_days or self.half_life_days)


class RuleVersion(models.Model):
    """A snapshot of a rule after each save: who changed what, when."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField()
    changed = models.JSONField(default=list, help_text="Names of the fields that changed")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "number"], name="one_rule_version_number")
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} v{self.number}"


class ScoringSettings(models.Model):
    """The one row of scoring settings (``ScoringSettings.load()``)."""

    class RecyclePolicy(models.TextChoices):
        KEEP = "keep", "Keep engagement points"
        HALVE = "halve", "Halve engagement points"
        RESET = "reset", "Reset engagement points"

    mql_threshold = models.PositiveIntegerField(default=100, validators=[MinValueValidator(1)])
    min_fit = models.IntegerField(null=True, blank=True)
    recycle_policy = models.CharField(
        max_length=10, choices=RecyclePolicy.choices, default=RecyclePolicy.HALVE
    )
    decay_ran_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Clock of the last completed decay run: a rule coming into force after it "
        "is applied by the next run",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "scoring settings"

    def __str__(self) -> str:
        return f"MQL at {self.mql_threshold}"

    @classmethod
    def load(cls) -> ScoringSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


# How the settings fields read in their history (the register's scoring item, the page).
SETTINGS_LABELS = {
    "mql_threshold": "MQL threshold",
    "min_fit": "minimum fit",
    "recycle_policy": "recycle policy",
}


class SettingsVersion(models.Model):
    """The scoring settings after a change: who changed what, from what, when.

    Written by ``scoring.services.settings_update`` (as each rule save writes a
    ``RuleVersion``), so the review register can list a threshold change beside the MQL
    trend it explains.
    """

    snapshot = models.JSONField(help_text="The settings after the change")
    changed = models.JSONField(default=list, help_text="Names of the fields that changed")
    previous = models.JSONField(default=dict, help_text="The changed fields' values before")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"Scoring settings {self.at:%Y-%m-%d %H:%M}: {self.summary()}"

    def summary(self) -> str:
        """ "MQL threshold 100 → 80, recycle policy halve → reset"."""
        return ", ".join(
            f"{SETTINGS_LABELS.get(name, name)} {_shown(self.previous.get(name))} → "
            f"{_shown(self.snapshot.get(name))}"
            for name in self.changed
        )


def _shown(value) -> str:
    return "none" if value is None else str(value)


class LedgerEntry(models.Model):
    """One change of one contact's score. Appended, never rewritten."""

    class Reason(models.TextChoices):
        ACTIVITY = "activity", "Activity"
        FIT = "fit", "Profile fit"
        DECAY = "decay", "Decay"
        EXPIRY = "expiry", "Expiry"
        RESCORE = "rescore", "Rescore adjustment"
        RECYCLE_RESET = "recycle_reset", "Recycle reset"

    # No single-column indexes on contact and rule: ledger_contact_time and
    # ledger_rule_time lead with them and serve the same lookups (and the cascades); each
    # one more index cost an index insert per appended entry (every batch, every rescore).
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # No database constraint: rules are never deleted (switched off instead: the API's
    # DELETE switches a rule off), and the constraint's check — a row lock on the rule per
    # appended entry, shared by every writer of the ledger — cost a 1M-contact rescore
    # ~1.5 s for its ~580k entries (BENCHMARKS.md, session 13). SET_NULL stays Django's,
    # should a rule ever be deleted through the ORM.
    rule = models.ForeignKey(
        Rule,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="entries",
        db_index=False,
        db_constraint=False,
    )
    # Indexed by ledger_activity (partial): only activity entries name one.
    activity = models.ForeignKey(
        "crm.Activity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    points = models.IntegerField()
    at = models.DateTimeField()
    reason = models.CharField(max_length=20, choices=Reason.choices)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Score breakdown, timeline and score-at-a-moment per contact; the engine's
            # per-(contact, rule) sums over a contact id range.
            models.Index(fields=["contact", "at"], name="ledger_contact_time"),
            # Health page: points given per rule in a period.
            models.Index(fields=["rule", "at"], name="ledger_rule_time"),
            # Deleting activities (a contact's erasure or deletion): the SET_NULL of their
            # entries and the foreign key's check. Partial: rescore, decay, expiry and fit
            # entries name no activity, and at 1M contacts a rescore appends ~660k of
            # them — as a full index, ~2 s of its insert time went to indexing NULLs.
            models.Index(
                fields=["activity"],
                condition=models.Q(activity__isnull=False),
                name="ledger_activity",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.points:+d} ({self.reason})"


class RoundRobinCursor(models.Model):
    """Where the round-robin stands in one pool of sales users, kept in the database so
    every worker shares it (``scoring.handoff``).

    A pool is the sellers whose territory lists a country (``pool``: its code) or, for
    a lead no territory covers, every sales user (``pool`` blank). One cursor per pool:
    a single cursor advanced by every lead skipped the local sellers' turns whenever
    leads of other countries came in between (two DE reps, alternating DE and US leads:
    every DE lead went to the same rep).
    """

    pool = models.CharField(max_length=10, unique=True, blank=True)
    position = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.pool or 'everyone'} at {self.position}"


class AssignmentRule(models.Model):
    """Send matching new MQLs to one sales user; the first matching rule by ``order`` wins."""

    order = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=120)
    countries = models.CharField(
        max_length=300, blank=True, help_text="Country codes, comma-separated (blank: any)"
    )
    industry = models.CharField(max_length=100, blank=True, help_text="Blank: any")
    size_band = models.CharField(max_length=10, blank=True, help_text="Blank: any")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.name

    def country_list(self) -> list[str]:
        return [c.strip().upper() for c in self.countries.split(",") if c.strip()]


class AssignmentRuleChange(models.Model):
    """One write to the lead-assignment rules: created, changed or deleted, by whom, when.

    Written by ``scoring.services.assignment_rule_save`` / ``assignment_rule_delete``, the
    only writers of ``AssignmentRule``. A deleted rule's history stays (``rule`` becomes
    null; ``snapshot`` still names it), so the review register can list it.
    """

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"

    rule = models.ForeignKey(
        AssignmentRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    snapshot = models.JSONField(help_text="The rule after the change (before, for a deletion)")
    changed = models.JSONField(default=list, help_text="Names of the fields that changed")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"Assignment rule “{self.snapshot.get('name', '')}” {self.summary()}"

    def summary(self) -> str:
        """ "created", "changed (countries, user)" or "deleted"."""
        if self.action == self.Action.CHANGED:
            return f"changed ({', '.join(self.changed)})"
        return self.get_action_display().lower()


class RescoreRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    contacts_changed = models.PositiveIntegerField(default=0)
    entries_created = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Rescore {self.pk} ({self.status})"

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return int(100 * self.processed / self.total) if self.total else 0


class PendingOwnerEmail(models.Model):
    """A new MQL whose owner is still to be emailed about it.

    Written in the hand-off's transaction beside the owner's in-app notice, deleted once the
    owner's mail has gone out (scoring.handoff.owner_emails_send). The hand-off's task sends
    it right after the commit; beat's minute sweep sends what that task could not (the broker
    down when it was to be queued, the mail server down past its retries). While one of them
    holds a row (``claim``, until ``claimed_until``) the other leaves it alone, so a mail is
    sent once — or, when a worker dies between the hand-over and the delete, once more after
    the lease.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    claim = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Owner email about contact {self.contact_id} to user {self.owner_id}"
