"""CRM API serializers: output shapes and input validation; writes go through services."""

from __future__ import annotations

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from crm.filters import staff_users
from crm.models import (
    Activity,
    Campaign,
    CampaignCost,
    Company,
    Contact,
    LifecycleTransition,
    Stage,
)
from crm.services.campaigns import CAMPAIGN_FIELDS

# Deals, decisions and history happen in business time; years far outside it are input
# errors (and near year 1 or 9999 a time-zone shift leaves the range datetime can represent).
MIN_YEAR, MAX_YEAR = 1900, 2200


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a zone: a time without one is ambiguous, so it is refused."""

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:  # well formed but impossible, e.g. month 13
                parsed = None
            if parsed is not None and timezone.is_naive(parsed):
                raise serializers.ValidationError(
                    "Give the time with a time zone, e.g. 2025-03-01T09:00:00Z."
                )
        result = super().to_internal_value(value)
        if not MIN_YEAR <= result.year <= MAX_YEAR:
            raise serializers.ValidationError(f"Give a time between {MIN_YEAR} and {MAX_YEAR}.")
        return result


def _owner_field():
    """An owner is an active user with a role, as the pages' owner choices."""
    return serializers.PrimaryKeyRelatedField(
        queryset=staff_users(), required=False, allow_null=True
    )


class CompanySerializer(serializers.ModelSerializer):
    owner = _owner_field()

    class Meta:
        model = Company
        fields = [
            "id",
            "name",
            "domain",
            "industry",
            "size_band",
            "country",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class ContactSerializer(serializers.ModelSerializer):
    """Read and write a contact; ``stage`` on write is a lifecycle move."""

    # No ``default``: DRF skips read-only fields with a default in partial updates, so a
    # PATCH answer would lack them; a missing company/owner already reads as None.
    company_name = serializers.CharField(source="company.name", read_only=True, allow_null=True)
    owner_username = serializers.CharField(source="owner.username", read_only=True, allow_null=True)
    score = serializers.IntegerField(source="scorecard.score", read_only=True)
    stage = serializers.ChoiceField(choices=Stage.choices, required=False)
    owner = _owner_field()
    created_at = AwareDateTimeField(
        required=False,
        help_text="Set on create only, for a contact brought over from another system with "
        "its history (then import its stage changes oldest first); never in the future. "
        "Default: now.",
    )

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "first_name",
            "last_name",
            "job_title",
            "phone",
            "company",
            "company_name",
            "country",
            "timezone",
            "source",
            "acquired_by",
            "owner",
            "owner_username",
            "stage",
            "stage_changed_at",
            "recycle_round",
            "score",
            "email_status",
            "consent_basis",
            "consent_given_at",
            "consent_source",
            "attributes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "stage_changed_at",
            "recycle_round",
            "updated_at",
        ]

    def validate_created_at(self, value):
        if self.instance is not None:
            if value != self.instance.created_at:
                raise serializers.ValidationError("Set when the contact is created; it stays.")
        elif value > timezone.now():
            raise serializers.ValidationError("A contact cannot be created in the future.")
        return value

    def validate(self, attrs):
        if self.instance is not None:
            attrs.pop("created_at", None)  # unchanged (validate_created_at): not an edit
        return attrs

    def validate_email(self, value: str) -> str:
        email = Contact.normalise_email(value)
        clash = Contact.objects.filter(email=email)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError("Another contact has this email.")
        return email

    def validate_country(self, value: str) -> str:
        value = (value or "").strip().upper()
        if value and (len(value) != 2 or not value.isalpha()):
            raise serializers.ValidationError("Use a two-letter ISO country code.")
        return value

    def validate_attributes(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("attributes must be an object.")
        return value


class UpsertItemSerializer(serializers.Serializer):
    """One item of ``POST contacts/upsert/``: keyed by email; blanks mean "unknown"."""

    email = serializers.CharField(max_length=254)
    first_name = serializers.CharField(required=False, allow_blank=True)
    last_name = serializers.CharField(required=False, allow_blank=True)
    job_title = serializers.CharField(required=False, allow_blank=True)
    phone = serializers.CharField(required=False, allow_blank=True)
    company_name = serializers.CharField(required=False, allow_blank=True)
    country = serializers.CharField(required=False, allow_blank=True)
    timezone = serializers.CharField(required=False, allow_blank=True)
    source = serializers.CharField(required=False, allow_blank=True)
    stage = serializers.CharField(required=False, allow_blank=True)
    lead_status = serializers.CharField(required=False, allow_blank=True)
    email_status = serializers.CharField(required=False, allow_blank=True)
    consent_basis = serializers.CharField(required=False, allow_blank=True)
    consent_source = serializers.CharField(required=False, allow_blank=True)
    attributes = serializers.DictField(required=False)


class TransitionSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(read_only=True)

    class Meta:
        model = LifecycleTransition
        fields = [
            "id",
            "from_stage",
            "to_stage",
            "at",
            "recorded_at",
            "actor",
            "reason_code",
            "note",
            "recycle_round",
        ]


class HistoryImportSerializer(serializers.Serializer):
    to_stage = serializers.ChoiceField(choices=Stage.choices)
    at = AwareDateTimeField()
    reason_code = serializers.CharField(max_length=50, required=False, default="import")
    note = serializers.CharField(required=False, allow_blank=True, default="")


class CampaignSerializer(serializers.ModelSerializer):
    owner = _owner_field()

    class Meta:
        model = Campaign
        fields = ["id", *CAMPAIGN_FIELDS, "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, attrs):
        start = attrs.get("start_date", getattr(self.instance, "start_date", None))
        end = attrs.get("end_date", getattr(self.instance, "end_date", None))
        if start and end and end < start:
            raise serializers.ValidationError({"end_date": "The end date is before the start."})
        return attrs


class CostSerializer(serializers.ModelSerializer):
    shared_with = serializers.PrimaryKeyRelatedField(
        queryset=Campaign.objects.all(), many=True, required=False
    )

    class Meta:
        model = CampaignCost
        fields = [
            "id",
            "campaign",
            "period_start",
            "period_end",
            "amount",
            "category",
            "shared",
            "split",
            "shared_with",
            "note",
            "created_at",
        ]
        read_only_fields = ["campaign", "created_at"]


class ActivitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Activity
        fields = [
            "id",
            "contact",
            "kind",
            "occurred_at",
            "recorded_at",
            "campaign",
            "external_id",
            "message_id",
            "url",
            "is_machine",
            "details",
        ]


class ActivityInSerializer(serializers.Serializer):
    """Schema only: the batch is validated by crm.ingest, which reports per-index errors."""

    kind = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    contact = serializers.IntegerField(required=False)
    email = serializers.EmailField(required=False)
    campaign = serializers.IntegerField(required=False)
    external_id = serializers.CharField(required=False)
    url = serializers.URLField(required=False)
    is_machine = serializers.BooleanField(required=False)
    details = serializers.DictField(required=False)


class IngestResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    contacts_created = serializers.IntegerField()


class UpsertResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    errors = serializers.DictField()
