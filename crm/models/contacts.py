"""Companies and contacts."""

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef
from django.db.models.functions import Lower
from django.urls import reverse

from .choices import ConsentBasis, EmailStatus, Source, Stage


class Company(models.Model):
    class SizeBand(models.TextChoices):
        MICRO = "1-10", "1–10"
        SMALL = "11-50", "11–50"
        MEDIUM = "51-200", "51–200"
        LARGE = "201-1000", "201–1,000"
        ENTERPRISE = "1000+", "1,000+"

    name = models.CharField(max_length=200)
    domain = models.CharField(max_length=200, blank=True, db_index=True)  # matching on import
    industry = models.CharField(max_length=100, blank=True)
    size_band = models.CharField(max_length=10, choices=SizeBand.choices, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 alpha-2")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "companies"
        ordering = ["name"]
        indexes = [
            # Company list sorted/searched by name.
            models.Index(Lower("name"), name="company_name_lower"),
            # Search by name prefix (contact and company lists): UPPER(name)
            # text_pattern_ops, PostgreSQL only, migration 0009_contacts_search_prefix.
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("crm:company-detail", args=[self.pk])


class ContactQuerySet(models.QuerySet):
    def in_stage(self, *stages: str) -> "ContactQuerySet":
        return self.filter(stage__in=stages)

    def mqls(self) -> "ContactQuerySet":
        return self.filter(stage=Stage.MQL)

    def unassigned(self) -> "ContactQuerySet":
        return self.filter(owner__isnull=True)

    def sendable(self) -> "ContactQuerySet":
        """Contacts that may be emailed: active address and a consent basis recorded."""
        return self.filter(email_status=EmailStatus.ACTIVE).exclude(consent_basis=ConsentBasis.NONE)

    def created_in(self, start, end) -> "ContactQuerySet":
        return self.filter(created_at__gte=start, created_at__lt=end)

    def in_segment(self, segment_id: int) -> "ContactQuerySet":
        """Stored members of a segment: a semi-join on its (segment, contact) unique index,
        which the planner runs either way — members first for a small segment, a probe
        per contact of a list's sort order for a big one."""
        from .segments import SegmentMembership

        members = SegmentMembership.objects.filter(segment_id=segment_id, contact=OuterRef("pk"))
        return self.filter(Exists(members))


class Contact(models.Model):
    email = models.EmailField(max_length=254, unique=True)  # stored normalised: see normalise_email
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    job_title = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    company = models.ForeignKey(
        Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="contacts"
    )
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 alpha-2")
    timezone = models.CharField(max_length=64, blank=True, help_text="IANA name, for send windows")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.OTHER)
    acquired_by = models.ForeignKey(
        "crm.Campaign",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="acquired_contacts",
        help_text="The campaign that first acquired this contact (first touch).",
    )
    # No single-column index: contact_owner_stage leads with owner and serves its lookups.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_contacts",
        db_index=False,
    )
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.LEAD)
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    recycle_round = models.PositiveIntegerField(default=0)
    # The current score lives in ContactScore (``contact.scorecard.score``), not here.
    email_status = models.CharField(
        max_length=20, choices=EmailStatus.choices, default=EmailStatus.ACTIVE
    )
    email_status_changed_at = models.DateTimeField(null=True, blank=True)
    consent_basis = models.CharField(
        max_length=30, choices=ConsentBasis.choices, default=ConsentBasis.CONSENT
    )
    consent_given_at = models.DateTimeField(null=True, blank=True)
    consent_source = models.CharField(max_length=200, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # METRICS.md "new leads" excludes contacts already suppressed when created; a later
    # unsubscribe must not change that count, so the fact is frozen at creation.
    created_suppressed = models.BooleanField(default=False)
    # Set by crm.privacy.contact_erase: the row stays (reports keep their totals) but holds
    # no personal data any more, and is never emailed again.
    erased_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Contact list default sort and "new leads in period"; the leads report reads
            # created_suppressed of the new leads of a period from it (index-only).
            models.Index(
                fields=["created_at", "id"],
                include=["created_suppressed"],
                name="contact_created",
            ),
            # MQL queue "mine"/"unassigned" (owner, stage = mql) and the contact list filtered
            # by owner and stage under the sorts that are not score sorts (those read
            # ContactScore's copies of owner and stage).
            models.Index(fields=["owner", "stage", "id"], name="contact_owner_stage"),
            # Stage filters and per-stage counts (reports, segments, the sales views).
            models.Index(fields=["stage", "id"], name="contact_stage"),
            # Contact list sorted by name (?sort=name, backwards for -name), with its
            # tiebreaker: page N reads the index in order instead of sorting every contact.
            models.Index(fields=["last_name", "first_name", "id"], name="contact_name_sort"),
            # The contact list search (?q=) is served by UPPER(first/last name)
            # text_pattern_ops indexes on PostgreSQL only: migration 0009_contacts_search_prefix.
            # (The company filter reads the company foreign key's own index.)
            # Segment and scoring conditions "job title contains …" (UPPER(job_title) LIKE
            # '%TERM%') are served by a pg_trgm GIN index, PostgreSQL only: migration
            # 0014_segments_title_trigram.
            # Email-status filter and suppression checks.
            models.Index(fields=["email_status"], name="contact_email_status"),
        ]

    def __str__(self) -> str:
        return self.full_name or self.email

    def get_absolute_url(self) -> str:
        return reverse("crm:contact-detail", args=[self.pk])

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def is_suppressed(self) -> bool:
        """Whether email may not be sent to the address: unsubscribed, hard-bounced,
        complained or no consent. The sender also pauses an address for a while after three
        soft bounces in 30 days (nurture.services.bulk.contacts_soft_bounced): a temporary
        hold read from the activities at send time, not a property of the contact."""
        return self.email_status != EmailStatus.ACTIVE or self.consent_basis == ConsentBasis.NONE

    @staticmethod
    def normalise_email(email: str) -> str:
        return (email or "").strip().lower()


class ContactScore(models.Model):
    """A contact's current score, in a narrow row of its own.

    The score is the sum of the contact's ledger entries (scoring, METRICS.md "Scores over
    time"); this row caches it for sorting and filtering. It is not a column of Contact
    because the engine rewrites it for hundreds of contacts per ingested batch and for
    most contacts on a rescore, and an update of an indexed column of the contact row is
    never HOT: it inserts into all of that table's ~12 indexes (text, search, trigram …),
    ~95 µs per contact at 1M against ~15 µs here (measured, BENCHMARKS.md).

    ``stage`` and ``owner`` are copies of the contact's, so that the score-sorted lists
    (contact list ``?sort=score``/``stage``, filtered by owner or stage) read one index in
    order; ``created_at`` and ``created_suppressed`` too, so that the score profile of
    the current month's new leads (reports.metrics.leads) is one index-only range here
    instead of a join of every new lead. Database triggers keep the copies (migration
    0016): every contact insert creates its row (score 0 and the contact's values) and
    every change of one of those columns is copied — whatever writes it (lifecycle, bulk
    ``update()``, the admin, raw SQL).
    tests/crm/test_contact_score.py checks the triggers on every database; a migration
    that rebuilds crm_contact on SQLite drops them and must create them again.
    """

    contact = models.OneToOneField(
        Contact, primary_key=True, on_delete=models.CASCADE, related_name="scorecard"
    )
    score = models.IntegerField(default=0)
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.LEAD)
    # Kept by the trigger, not by Django: no constraint, and deleting a user leaves it to
    # Contact.owner's SET_NULL, whose update the trigger copies.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # contactscore_owner leads with it
        related_name="+",
    )
    created_at = models.DateTimeField()
    created_suppressed = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # Contact list ?sort=score / -score (read forwards or backwards), the score
            # range filters; the engine's threshold checks.
            models.Index(fields=["-score", "contact"], name="contactscore_score"),
            # Contact list ?sort=stage, and a stage filter under a score sort; the MQL
            # queue (stage = mql) by score.
            models.Index(fields=["stage", "-score", "contact"], name="contactscore_stage"),
            # Contact list filtered by owner (or unassigned) [and stage] sorted by score.
            models.Index(fields=["owner", "stage", "-score", "contact"], name="contactscore_owner"),
            # Leads report: the current month's new leads (not suppressed when created)
            # and their scores, index-only (reports.metrics.leads._scores_current).
            models.Index(
                fields=["created_at"],
                include=["score"],
                condition=models.Q(created_suppressed=False),
                name="contactscore_new_leads",
            ),
        ]

    def __str__(self) -> str:
        return f"Score {self.score} of contact {self.contact_id}"


class UserProfile(models.Model):
    """What a user adds to their account: signature for emails, territory for assignment."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    title = models.CharField(max_length=100, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    signature = models.TextField(blank=True)
    territory = models.CharField(
        max_length=100, blank=True, help_text="Country codes, comma-separated"
    )
    accepts_leads = models.BooleanField(default=True, help_text="In the round-robin for new MQLs")

    def __str__(self) -> str:
        return f"Profile of {self.user}"


class NotificationQuerySet(models.QuerySet):
    def for_user(self, user) -> "NotificationQuerySet":
        """The user's own notices: nobody reads another user's."""
        return self.filter(user_id=user.pk)

    def unread(self) -> "NotificationQuerySet":
        return self.filter(read_at__isnull=True)


class Notification(models.Model):
    """An in-app notice for a user (new MQL assigned, nurture "notify the owner" step …),
    listed on the user's notifications page (crm.views.notifications)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    text = models.CharField(max_length=300)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Unread notices of the signed-in user (top bar).
            models.Index(fields=["user", "read_at"], name="notification_unread"),
        ]

    def __str__(self) -> str:
        return self.text
