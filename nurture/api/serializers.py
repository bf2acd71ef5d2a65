"""Serializers of the nurture API."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from .. import rendering
from ..models import EmailTemplate, Enrollment, Program, Step, program_settings_errors
from ..services.steps import step_config_check


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ["id", "position", "kind", "config", "template"]
        read_only_fields = ["id"]

    def validate(self, data):
        kind = data.get("kind", getattr(self.instance, "kind", None))
        config = data.get("config", getattr(self.instance, "config", {}))
        template = data.get("template", getattr(self.instance, "template", None))
        try:
            # The step form's rules: what the sender reads is checked whichever way it came.
            program = self.context.get("program") or getattr(self.instance, "program", None)
            data["config"] = step_config_check(
                kind=kind, config=config, template=template, program=program
            )
        except DjangoValidationError as exc:
            errors = exc.message_dict
            config_errors = {k: v for k, v in errors.items() if k not in ("kind", "template")}
            raise serializers.ValidationError(
                {k: errors[k] for k in ("kind", "template") if k in errors}
                | ({"config": config_errors} if config_errors else {})
            ) from exc
        return data


class ProgramSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = Program
        fields = [
            "id", "name", "description", "campaign", "status", "audience", "exit_on_goal",
            "exit_on_mql", "exit_on_recycle", "exit_on_accept", "reentry", "reentry_days",
            "send_days", "send_hour_start", "send_hour_end", "use_contact_timezone", "daily_cap",
            "holdout_percent", "steps", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_send_days(self, value):
        if not isinstance(value, list) or any(d not in range(7) for d in value):
            raise serializers.ValidationError("A list of weekdays 0 (Monday) to 6.")
        return value

    def validate(self, data):
        # The builder form's rules (Program.clean), on the values the program will have.
        def value(name):
            if name in data:
                return data[name]
            if self.instance is not None:
                return getattr(self.instance, name)
            return Program._meta.get_field(name).get_default()

        errors = program_settings_errors(
            **{n: value(n) for n in ("send_hour_start", "send_hour_end", "holdout_percent")}
        )
        if errors:
            raise serializers.ValidationError(errors)
        return data


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
