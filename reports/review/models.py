"""Register models: content assets, reviewable items and their (immutable) reviews."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class ContentAsset(models.Model):
    class Type(models.TextChoices):
        WEBINAR = "webinar", "Webinar"
        EMAIL = "email", "Email"
        WHITE_PAPER = "white_paper", "White paper"
        EBOOK = "ebook", "E-book"
        VIDEO = "video", "Video"
        BLOG_POST = "blog_post", "Blog post"
        CASE_STUDY = "case_study", "Case study"
        OTHER = "other", "Other"

    title = models.CharField(max_length=200)
    type = models.CharField(max_length=20, choices=Type.choices)
    url = models.URLField(
        max_length=500, blank=True, help_text="Visits and downloads of this URL count for it"
    )
    campaigns = models.ManyToManyField("crm.Campaign", blank=True, related_name="content_assets")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["type", "title"]

    def __str__(self) -> str:
        return self.title


class ReviewItem(models.Model):
    """One line of the register: something the team must audit on a cadence."""

    class Type(models.TextChoices):
        PROGRAM = "program", "Nurture program"
        AUTOMATION = "automation", "Automation rule"
        SCORING = "scoring", "Scoring rule set"
        ASSIGNMENT = "assignment", "Assignment rules"
        CONTENT = "content", "Content"

    # Default cadences of METRICS.md, in days: (first review after start, then every).
    DEFAULT_CADENCE = {
        Type.PROGRAM: (90, 90),
        Type.AUTOMATION: (30, 90),
        Type.SCORING: (91, 91),
        Type.ASSIGNMENT: (91, 91),
        Type.CONTENT: (90, 90),
    }
    STABLE_SCORING_DAYS = 182

    type = models.CharField(max_length=20, choices=Type.choices)
    # The reviewed object's id in its own table (program, trigger, asset); none for the
    # scoring and assignment rule sets, which are reviewed as a whole.
    object_id = models.PositiveBigIntegerField(null=True, blank=True)
    name = models.CharField(max_length=200)
    content_type = models.CharField(
        max_length=20, choices=ContentAsset.Type.choices, blank=True, help_text="For content items"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(help_text="When the item went live")
    first_review_days = models.PositiveIntegerField()
    cadence_days = models.PositiveIntegerField()
    stable = models.BooleanField(
        default=False, help_text="Scoring: reviewed every six months once stable"
    )
    active = models.BooleanField(default=True)
    baseline = models.JSONField(default=dict, blank=True)
    baseline_source = models.CharField(
        max_length=10, choices=[("auto", "Computed"), ("manual", "Entered by hand")], blank=True
    )
    baseline_note = models.CharField(max_length=300, blank=True)
    last_reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["type", "content_type", "name"]
        constraints = [
            models.UniqueConstraint(fields=["type", "object_id"], name="review_item_unique"),
            # The rule sets (no object id): NULLs never collide in the constraint above, so
            # two first syncs at once could each insert one.
            models.UniqueConstraint(
                fields=["type"],
                condition=models.Q(object_id__isnull=True),
                name="review_item_unique_rule_set",
            ),
            models.CheckConstraint(
                condition=models.Q(cadence_days__gt=0), name="review_cadence_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()}: {self.name}"

    @property
    def effective_cadence_days(self) -> int:
        if self.type == self.Type.SCORING and self.stable:
            return max(self.cadence_days, self.STABLE_SCORING_DAYS)
        return self.cadence_days

    def next_due(self):
        """The next due date by cadence alone (the scoring alert is applied by the register)."""
        if self.last_reviewed_at is None:
            return self.started_at + timedelta(days=self.first_review_days)
        return self.last_reviewed_at + timedelta(days=self.effective_cadence_days)


class Review(models.Model):
    """A dated review with its metric snapshot. Never edited after the fact."""

    class Decision(models.TextChoices):
        KEEP = "keep", "Keep"
        CHANGE = "change", "Change"
        RETIRE = "retire", "Retire"

    item = models.ForeignKey(ReviewItem, on_delete=models.PROTECT, related_name="reviews")
    reviewed_at = models.DateTimeField()
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    metrics = models.JSONField(default=dict)
    notes = models.TextField(blank=True)
    decision = models.CharField(max_length=10, choices=Decision.choices)

    class Meta:
        ordering = ["item", "reviewed_at"]
        indexes = [
            # Register page: latest review per item; spreadsheet: reviews in date order.
            models.Index(fields=["item", "reviewed_at"], name="review_item_time"),
        ]

    def __str__(self) -> str:
        return f"{self.item} reviewed {self.reviewed_at:%Y-%m-%d}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValidationError("Reviews are a record: they are never edited after the fact.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Reviews are a record: they are never deleted.")
