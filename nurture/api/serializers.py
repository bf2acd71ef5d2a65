"""Serializers of the nurture API."""

from __future__ import annotations

from rest_framework import serializers

from .. import rendering
from ..models import EmailTemplate, Enrollment, Program, Step


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ["id", "position", "kind", "config", "template"]
        read_only_fields = ["id"]

    def validate(self, data):
        kind = data.get("kind", getattr(self.instance, "kind", None))
        if kind == Step.Kind.EMAIL and not data.get(
            "template", getattr(self.instance, "template", None)
        ):
            raise serializers.ValidationError({"template": "An email step needs a template."})
        if not isinstance(data.get("config", {}), dict):
            raise serializers.ValidationError({"config": "config is a JSON object."})
        return data


class ProgramSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = Program
        fields = [
            "id", "name", "description", "campaign", "status", "audience", "exit_on_goal",
            "exit_on_mql", "exit_on_recycle", "reentry", "reentry_days", "send_days",
            "send_hour_start", "send_hour_end", "use_contact_timezone", "daily_cap",
            "holdout_percent", "steps", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_send_days(self, value):
        if not isinstance(value, list) or any(d not in range(7) for d in value):
            raise serializers.ValidationError("A list of weekdays 0 (Monday) to 6.")
        return value

    def validate_holdout_percent(self, value):
        if value > 50:
            raise serializers.ValidationError("At most 50.")
        return value


class EnrollmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Enrollment
        fields = [
            "id", "contact", "state", "current_step", "next_run_at", "entered_at",
            "exited_at", "exit_reason", "source",
        ]  # fmt: skip
        read_only_fields = fields


class EnrollInputSerializer(serializers.Serializer):
    contacts = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=10_000
    )
    segment = serializers.IntegerField(required=False, min_value=1)

    def validate(self, data):
        if not data.get("contacts") and not data.get("segment"):
            raise serializers.ValidationError("Give `contacts` (ids) or `segment` (id).")
        return data


class EmailTemplateSerializer(serializers.ModelSerializer):
    class Meta:
        model = EmailTemplate
        fields = ["id", "name", "subject", "preheader", "html_body", "text_body", "updated_at"]
        read_only_fields = ["id", "updated_at"]

    def validate(self, data):
        for name in ("subject", "preheader", "html_body", "text_body"):
            try:
                rendering.template_check(data.get(name) or "")
            except rendering.TemplateRefused as exc:
                raise serializers.ValidationError({name: str(exc)}) from exc
        return data
