"""CRM API serializers: output shapes and input validation; writes go through services."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

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


class CompanySerializer(serializers.ModelSerializer):
    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), required=False, allow_null=True
    )

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
    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), required=False, allow_null=True
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
            "created_at",
            "updated_at",
        ]

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
    at = serializers.DateTimeField()
    reason_code = serializers.CharField(max_length=50, required=False, default="import")
    note = serializers.CharField(required=False, allow_blank=True, default="")

    def validate_at(self, value):
        # DRF makes naive input aware in the site zone; a past change needs its real zone.
        try:
            parsed = parse_datetime(str(self.initial_data.get("at", "")))
        except ValueError:
            parsed = None
        if parsed is not None and timezone.is_naive(parsed):
            raise serializers.ValidationError("Give the time zone (e.g. Z or +02:00).")
        return value


class CampaignSerializer(serializers.ModelSerializer):
    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), required=False, allow_null=True
    )

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
