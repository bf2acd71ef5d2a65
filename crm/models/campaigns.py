"""Campaigns: the unit of spend and attribution, whatever the channel."""

from datetime import date

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse

from .choices import ActivityKind, Channel


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        ARCHIVED = "archived", "Archived"

    class Type(models.TextChoices):
        NURTURE = "nurture", "Nurture"
        RECYCLE = "recycle", "Recycle nurture"
        NEWSLETTER = "newsletter", "Newsletter"
        PROMOTION = "promotion", "Promotion"
        ONBOARDING = "onboarding", "Onboarding"
        AWARENESS = "awareness", "Awareness"
        OTHER = "other", "Other"

    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.EMAIL)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.NURTURE)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    budget = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    goal_action = models.CharField(
        max_length=40,
        choices=ActivityKind.choices,
        blank=True,
        help_text="The activity kind that counts as this campaign's conversion.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start_date", "name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("crm:campaign-detail", args=[self.pk])

    def clean(self) -> None:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValidationError({"end_date": "The end date is before the start date."})


class CampaignCost(models.Model):
    """A cost entry. Its period is the inclusive range of days [period_start, period_end].

    A shared entry (labour, technology) is split across ``shared_with`` campaigns plus its
    own campaign, equally or by emails sent (METRICS.md, "program cost").
    """

    class Category(models.TextChoices):
        MEDIA = "media", "Media"
        CONTENT = "content", "Content"
        LABOUR = "labour", "Labour"
        TECHNOLOGY = "technology", "Technology"

    class Split(models.TextChoices):
        EQUAL = "equal", "Equally"
        EMAILS_SENT = "emails_sent", "By emails sent"

    VARIABLE_CATEGORIES = (Category.MEDIA, Category.CONTENT)

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="costs")
    period_start = models.DateField()
    period_end = models.DateField()
    # The validator gives forms and the API a message; the constraint guards the table.
    amount = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(0)])
    category = models.CharField(max_length=20, choices=Category.choices)
    shared = models.BooleanField(default=False)
    split = models.CharField(max_length=20, choices=Split.choices, default=Split.EQUAL)
    shared_with = models.ManyToManyField(Campaign, blank=True, related_name="shared_costs")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(period_end__gte=models.F("period_start")),
                name="cost_period_ordered",
            ),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="cost_amount_nonneg"),
        ]
        indexes = [
            # Cost per MQL: entries overlapping a report period.
            models.Index(fields=["period_start", "period_end"], name="cost_period"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign}: {self.amount} {self.category}"

    def clean(self) -> None:
        if self.period_start and self.period_end and self.period_end < self.period_start:
            raise ValidationError({"period_end": "The period ends before it starts."})
        if self.shared and self.category in self.VARIABLE_CATEGORIES:
            raise ValidationError(
                {"shared": "Only labour and technology costs may be shared across campaigns."}
            )

    @property
    def days(self) -> int:
        return (self.period_end - self.period_start).days + 1

    def overlap_days(self, start: date, end: date) -> int:
        """Days of this entry inside the half-open report period [start, end)."""
        first = max(self.period_start, start)
        last = min(self.period_end, end.fromordinal(end.toordinal() - 1))
        return max(0, (last - first).days + 1)


class CampaignMember(models.Model):
    """A contact in a campaign (as CRMs' campaign members): it has at least one activity in
    the campaign (first and last touch set) or was acquired by it (``Contact.acquired_by``;
    touch times empty when it has no activity there). Exactly what the activities and
    contacts say, kept current by ``crm.campaign_members`` in the transactions that write
    them (ingest, contact create/edit/import/merge through the "contacts changed" event)
    and rebuilt from them where rows arrive otherwise (migrations, the demo seeder).

    The contact list's campaign filter is one semi-join on this table instead of an OR of
    the acquisition and every activity of the campaign (millions on a big one).
    """

    # (campaign, contact): the campaign filter's per-contact probe and its per-campaign scan;
    # also the upsert's conflict target and the campaign's cascade.
    pk = models.CompositePrimaryKey("campaign", "contact")
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="members", db_index=False
    )
    contact = models.ForeignKey(
        "crm.Contact",
        on_delete=models.CASCADE,
        related_name="campaign_memberships",
        db_index=False,
    )
    # Both empty: a member by acquisition alone, no activity in the campaign.
    first_touch_at = models.DateTimeField(null=True)
    last_touch_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [
            # A contact's memberships: rebuilt after a merge or an acquisition change,
            # deleted with the contact.
            models.Index(fields=["contact"], name="campaign_member_contact"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in campaign {self.campaign_id}"
