"""Deals and the sales decision vocabulary."""

from django.conf import settings
from django.db import models
from django.urls import reverse


class Deal(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        WON = "won", "Won"
        LOST = "lost", "Lost"

    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="deals")
    company = models.ForeignKey(
        "crm.Company", null=True, blank=True, on_delete=models.SET_NULL, related_name="deals"
    )
    name = models.CharField(max_length=200, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    lost_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Revenue reports: won deals closed in a period.
            models.Index(fields=["status", "closed_at"], name="deal_status_closed"),
        ]

    def __str__(self) -> str:
        return self.name or f"Deal {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("crm:deal-detail", args=[self.pk])


class RejectionReason(models.Model):
    """Why sales rejected an MQL, and what happens next (admin-editable data)."""

    class Outcome(models.TextChoices):
        RECYCLE = "recycled", "Not ready: recycle into nurture"
        DISQUALIFY = "disqualified", "Bad fit: disqualify"

    code = models.SlugField(max_length=50, unique=True)
    label = models.CharField(max_length=100)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    active = models.BooleanField(default=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "label"]

    def __str__(self) -> str:
        return self.label
