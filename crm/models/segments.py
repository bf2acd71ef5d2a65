"""Segments: stored definitions and stored membership (compiled by crm.segments)."""

from django.conf import settings
from django.db import models
from django.urls import reverse


class Segment(models.Model):
    class Kind(models.TextChoices):
        DYNAMIC = "dynamic", "Dynamic (follows its definition)"
        STATIC = "static", "Static (hand-kept list)"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DYNAMIC)
    definition = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    refreshed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("crm:segment-detail", args=[self.pk])


class SegmentVersion(models.Model):
    """Every saved definition, so a change can be seen and audited."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["segment", "version"], name="segment_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} v{self.version}"


class SegmentMembership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="segment_memberships"
    )
    joined_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "contact"], name="segment_member_unique")
        ]
        indexes = [
            # "Segments of this contact" and membership-of-another-segment conditions.
            models.Index(fields=["contact", "segment"], name="membership_contact"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.segment_id}"


class SegmentChange(models.Model):
    """A join or a leave, with its time: nurture triggers on joins, reports chart members."""

    class Kind(models.TextChoices):
        JOINED = "joined", "Joined"
        LEFT = "left", "Left"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes")
    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Join/leave history chart of a segment.
            models.Index(fields=["segment", "at"], name="segment_change_time"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.kind} {self.segment_id}"
