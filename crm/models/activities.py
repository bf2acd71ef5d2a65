"""Activities and the lifecycle history.

Which activities count as what is defined here once, as ``Q`` conditions for the database
and as predicates of an activity's fields for Python over a batch (the two must agree;
tests pin them on both databases). Every app reads them from here: reports (clicks,
opens, conversions), scoring (engagement rules on clicks, inactivity), segments ("did"
conditions), nurture (the program funnel, activity triggers and branches) and the
re-opened leads.

* A **click** (METRICS.md "unique clicks") is a person's click on a link of the email:
  not one flagged as a machine's (link scanners), and not one on the unsubscribe link —
  the sender leaves that link untracked, but a provider's own click tracking reports it.
  An unsubscribe-link click is recognised by its URL, which starts with
  :func:`unsubscribe_link_prefix` (case-insensitively, as SQLite's ``LIKE`` compares).
* An **engagement** (METRICS.md "re-opened leads"; scoring's inactivity) is an activity of
  ``ENGAGEMENT_KINDS`` that is not a machine's and, for a click, is a click.
* An **unsubscribe** (``email_unsubscribed``) is from all email unless its details say
  ``{"scope": "program"}`` (:data:`UNSUBSCRIBE_SCOPE_PROGRAM`): the recipient chose "only
  from this program" on the email's unsubscribe page (``nurture.services.tracking``),
  which exits that program itself. Choice: one kind with a scope rather than a kind of
  its own, because both are "contacts who unsubscribed from the email" (METRICS.md
  "unsubscribe rate"), so the email report, its rollups and their rebuild
  (``reports.rollups``, ``reports.upkeep``), the program funnel, the drill-down, segments'
  "did email_unsubscribed" and scoring's engagement rules on that kind count both, each
  email once. What a program-only one must not do is what only a global one does:
  suppress the address (``crm.ingest``), end every enrollment (``nurture.handlers``) and
  so the negative "unsubscribed" rule, which reads the address's status. Any other scope,
  or none, is global: a mistake suppresses rather than keeps mailing. No unsubscribe
  fires an activity trigger (``nurture.handlers``).
"""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import DateTimeField, Exists, ExpressionWrapper, OuterRef, Q

from .choices import ENGAGEMENT_KINDS, ActivityKind, Stage

_ENGAGEMENT = sorted(ENGAGEMENT_KINDS)
UNSUBSCRIBE_SCOPE_PROGRAM = "program"
CONVERSION_WINDOW = timedelta(days=7)  # METRICS.md "conversion rate": the attribution window


def unsubscribe_link_prefix() -> str:
    """The start of the site's unsubscribe links (``{SITE_URL}/u/``, nurture.urls_public,
    the prefix the sender leaves untracked); read when called, never at import time."""
    return f"{settings.SITE_URL}/u/"


def on_unsubscribe_link_q(path: str = "") -> Q:
    """The activity's URL is an unsubscribe link (``path``: the lookup path to the activity,
    e.g. "activities__" from Contact)."""
    return Q(**{f"{path}url__istartswith": unsubscribe_link_prefix()})


def unsubscribe_click_q() -> Q:
    """A click on the unsubscribe link (not a click, not engagement; module docstring)."""
    return Q(kind=ActivityKind.EMAIL_CLICKED) & on_unsubscribe_link_q()


def click_q() -> Q:
    """A click that counts (METRICS.md "unique clicks"): a person's, not on the
    unsubscribe link."""
    return Q(kind=ActivityKind.EMAIL_CLICKED, is_machine=False) & ~on_unsubscribe_link_q()


def open_q() -> Q:
    """An open that counts (METRICS.md "unique opens"): a person's open, or a click that
    counts (a click implies an open; one that is no click implies nothing)."""
    return Q(kind=ActivityKind.EMAIL_OPENED, is_machine=False) | click_q()


def engagement_q() -> Q:
    """An engagement (METRICS.md "re-opened leads"): a person's activity of an engagement
    kind, an unsubscribe-link click excepted."""
    return Q(kind__in=_ENGAGEMENT, is_machine=False) & ~unsubscribe_click_q()


def persons_q(kind: str) -> Q:
    """Activities of ``kind`` that are a person's doing — what a condition naming a kind
    counts (segments' "did"/"did not", nurture's activity triggers and its "activity
    since" branch), as scoring's engagement rules do: never an event flagged as a
    machine's (a privacy proxy's open, a link scanner's click), and for ``email_clicked``
    exactly :func:`click_q`. Choice: ``email_opened`` means a recorded open (a person's),
    not "an open or a click" as the open *rate* counts (:func:`open_q`): a count of
    opens must not count an email's click as a second open; "opened or clicked" is an
    ``any`` of the two."""
    if kind == ActivityKind.EMAIL_CLICKED:
        return click_q()
    return Q(kind=kind, is_machine=False)


def is_unsubscribe_click(kind: str, url: str | None, prefix: str) -> bool:
    """:func:`unsubscribe_click_q` for an activity's fields (``prefix``:
    :func:`unsubscribe_link_prefix`, read once per batch)."""
    return kind == ActivityKind.EMAIL_CLICKED and (url or "").lower().startswith(prefix.lower())


def is_click(kind: str, is_machine: bool, url: str | None, prefix: str) -> bool:
    """:func:`click_q` for an activity's fields."""
    return (
        kind == ActivityKind.EMAIL_CLICKED
        and not is_machine
        and not is_unsubscribe_click(kind, url, prefix)
    )


def is_persons(kind: str, is_machine: bool, url: str | None, prefix: str) -> bool:
    """:func:`persons_q` (of the activity's own kind) for an activity's fields."""
    if kind == ActivityKind.EMAIL_CLICKED:
        return is_click(kind, is_machine, url, prefix)
    return not is_machine


def is_engagement(kind: str, is_machine: bool, url: str | None, prefix: str) -> bool:
    """:func:`engagement_q` for an activity's fields."""
    return (
        kind in ENGAGEMENT_KINDS and not is_machine and not is_unsubscribe_click(kind, url, prefix)
    )


def program_unsubscribe_q() -> Q:
    """An unsubscribe from one nurture program only (module docstring)."""
    return Q(kind=ActivityKind.EMAIL_UNSUBSCRIBED, details__scope=UNSUBSCRIBE_SCOPE_PROGRAM)


def global_unsubscribe_q() -> Q:
    """An unsubscribe from all email: any other scope, or none. (The key's absence is
    tested apart: a negated JSON key lookup is NULL, not true, where the key is missing.)"""
    return Q(kind=ActivityKind.EMAIL_UNSUBSCRIBED) & (
        Q(details__scope__isnull=True) | ~Q(details__scope=UNSUBSCRIBE_SCOPE_PROGRAM)
    )


def is_program_unsubscribe(kind: str, details) -> bool:
    """:func:`program_unsubscribe_q` for an activity's fields: it suppresses nothing."""
    return (
        kind == ActivityKind.EMAIL_UNSUBSCRIBED
        and isinstance(details, dict)
        and details.get("scope") == UNSUBSCRIBE_SCOPE_PROGRAM
    )


def is_suppressing_bounce(kind: str, details) -> bool:
    """A hard bounce of the contact's current address: it suppresses the address. One
    reported for an address the contact had before (an email sent to a merged duplicate,
    or before the address was edited: ``address_replaced``) still counts as a hard bounce
    of that email in the reports, but says nothing of the address in use now."""
    return (
        kind == ActivityKind.EMAIL_BOUNCED
        and isinstance(details, dict)
        and details.get("bounce_type") == "hard"
        and not details.get("address_replaced")
    )


def goal_actions_after(goal_kind=None):
    """The contact's goal actions from this click (the outer activity) to the end of the
    attribution window, METRICS.md "conversion rate" ("clicked the email and then did the
    goal action within the window"): the window opens at the click, not at the send, and
    its end is inclusive. ``goal_kind``: the goal's activity kind, by default the one of
    the click's campaign."""
    window_end = ExpressionWrapper(
        OuterRef("occurred_at") + CONVERSION_WINDOW, output_field=DateTimeField()
    )
    return Activity.objects.filter(
        contact_id=OuterRef("contact_id"),
        kind=OuterRef("campaign__goal_action") if goal_kind is None else goal_kind,
        occurred_at__gte=OuterRef("occurred_at"),
        occurred_at__lte=window_end,
    )


def converting_click_q(goal_kind=None) -> Q:
    """A click that counts, followed by the goal action within the window (the email
    report, its rollups and the program funnel all count conversions by this)."""
    return click_q() & Exists(goal_actions_after(goal_kind))


class ActivityQuerySet(models.QuerySet):
    def in_period(self, start, end) -> "ActivityQuerySet":
        """Activities whose ``occurred_at`` lies in the half-open period [start, end)."""
        return self.filter(occurred_at__gte=start, occurred_at__lt=end)

    def of_kind(self, *kinds: str) -> "ActivityQuerySet":
        return self.filter(kind__in=kinds)

    def human(self) -> "ActivityQuerySet":
        """Exclude opens flagged as machine opens (privacy proxies, scanners)."""
        return self.exclude(is_machine=True)

    def clicks(self) -> "ActivityQuerySet":
        """Clicks that count (:func:`click_q`)."""
        return self.filter(click_q())

    def engagements(self) -> "ActivityQuerySet":
        """Engagement activities (:func:`engagement_q`)."""
        return self.filter(engagement_q())


class Activity(models.Model):
    # No single-column indexes on the foreign keys: activity_contact_time and
    # activity_campaign_contact lead with them and serve the same lookups (and cascades), and
    # each index on this table is paid by every ingested row.
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="activities", db_index=False
    )
    kind = models.CharField(max_length=40, choices=ActivityKind.choices)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    campaign = models.ForeignKey(
        "crm.Campaign",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="activities",
        db_index=False,
    )
    # A retried delivery carries the same external_id and is dropped (NULLs never collide);
    # unique through Meta.constraints, see there.
    external_id = models.CharField(max_length=200, null=True, blank=True)
    # The email message an email event belongs to (nurture's EmailSend.message_id).
    message_id = models.CharField(max_length=200, blank=True, default="")
    url = models.URLField(max_length=2000, blank=True)
    is_machine = models.BooleanField(default=False, help_text="Open by a machine, not a person")
    details = models.JSONField(default=dict, blank=True)

    objects = ActivityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "activities"
        ordering = ["-occurred_at", "-id"]
        constraints = [
            # Idempotent ingestion: crm.ingest's duplicate check and its INSERT … ON
            # CONFLICT (external_id). A constraint rather than unique=True, which on
            # PostgreSQL adds a second (LIKE-pattern) index no query needs.
            models.UniqueConstraint(fields=["external_id"], name="activity_external_id"),
        ]
        indexes = [
            # Contact timeline, newest first; scoring and segments per contact; also the
            # contact foreign key's lookups and cascades (leading column).
            models.Index(fields=["contact", "-occurred_at"], name="activity_contact_time"),
            # Segments/scoring "did kind X within N days"; report scans by kind and period.
            # The contact rides along (PostgreSQL INCLUDE): a segment's behaviour condition
            # becomes an index-only scan hashed against the contacts (the preview, the full
            # refresh), where a probe of the contact's timeline per candidate contact grew
            # with the number of contacts.
            models.Index(
                fields=["kind", "occurred_at"], name="activity_kind_time", include=["contact"]
            ),
            # Per-campaign email and attribution reports; the campaign foreign key's
            # lookups and SET NULL on delete (leading column). The contact rides along
            # (PostgreSQL INCLUDE) so "contacts who touched campaign X" (touch counts; the
            # email upkeep's "which goal contacts clicked a goal campaign in the window",
            # reports.upkeep._clicks_before_goals) is an index-only scan, not a heap read per
            # row. (The contact list's campaign filter reads crm.CampaignMember.)
            models.Index(
                fields=["campaign", "kind", "occurred_at"],
                name="activity_campaign_contact",
                include=["contact"],
            ),
            # Per-step email report joins events to their send by message id.
            models.Index(
                fields=["message_id"],
                name="activity_message",
                condition=~models.Q(message_id=""),
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_kind_display()} by {self.contact_id} at {self.occurred_at:%Y-%m-%d %H:%M}"
        )


class LifecycleTransitionQuerySet(models.QuerySet):
    def in_period(self, start, end) -> "LifecycleTransitionQuerySet":
        """Transitions that happened (``at``, not recorded) in [start, end)."""
        return self.filter(at__gte=start, at__lt=end)

    def into(self, *stages: str) -> "LifecycleTransitionQuerySet":
        return self.filter(to_stage__in=stages)


class LifecycleTransition(models.Model):
    """One change of stage. Written only by ``crm.lifecycle``; kept forever."""

    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="transitions")
    from_stage = models.CharField(max_length=20, choices=Stage.choices, blank=True)
    to_stage = models.CharField(max_length=20, choices=Stage.choices)
    at = models.DateTimeField(help_text="When the change happened")
    recorded_at = models.DateTimeField(auto_now_add=True)
    by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    by_system = models.CharField(max_length=50, blank=True, help_text="e.g. scoring, import")
    reason_code = models.CharField(max_length=50, blank=True)
    note = models.TextField(blank=True)
    recycle_round = models.PositiveIntegerField(default=0)
    activity = models.ForeignKey(
        "crm.Activity", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = LifecycleTransitionQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Funnel/leads reports: entries into a stage in a period.
            models.Index(fields=["to_stage", "at"], name="transition_stage_time"),
            # Contact timeline and stage-conversion cohorts.
            models.Index(fields=["contact", "at"], name="transition_contact_time"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.from_stage or '∅'} → {self.to_stage} at {self.at}"

    @property
    def actor(self) -> str:
        return str(self.by_user) if self.by_user_id else (self.by_system or "system")


class Reopening(models.Model):
    """A recycled contact engaged again: marked once per recycle round (METRICS.md)."""

    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="reopenings")
    recycle_round = models.PositiveIntegerField()
    at = models.DateTimeField()
    activity = models.ForeignKey(
        "crm.Activity", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "recycle_round"], name="one_reopening_per_round"
            )
        ]
        indexes = [
            # MQL queue "re-engaged" view and leads report.
            models.Index(fields=["at"], name="reopening_time"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} re-opened in round {self.recycle_round}"
