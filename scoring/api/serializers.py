"""Input and output shapes of the scoring API; writes go through scoring.services."""

from rest_framework import serializers

from scoring.models import RescoreRun, Rule, RuleVersion, ScoringSettings
from scoring.rules import rule_describe
from scoring.services import RULE_FIELDS


class RuleSerializer(serializers.ModelSerializer):
    description = serializers.SerializerMethodField()

    class Meta:
        model = Rule
        fields = ["id", *RULE_FIELDS, "description", "created_at", "updated_at"]
        read_only_fields = ["id", "description", "created_at", "updated_at"]
        extra_kwargs = {"kind": {"required": True}}

    def get_description(self, rule: Rule) -> str:
        return rule_describe(rule)


class RuleVersionSerializer(serializers.ModelSerializer):
    by = serializers.StringRelatedField()

    class Meta:
        model = RuleVersion
        fields = ["number", "at", "by", "changed", "snapshot"]


class SettingsSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScoringSettings
        fields = ["mql_threshold", "min_fit", "recycle_policy", "updated_at"]
        read_only_fields = ["updated_at"]


class RescoreRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = RescoreRun
        fields = [
            "id", "status", "total", "processed", "percent", "contacts_changed",
            "entries_created", "task_id", "error", "created_at", "started_at", "finished_at",
        ]  # fmt: skip


class BacktestSerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=365, default=90)
    rules = serializers.ListField(child=serializers.DictField(), max_length=200)


class ScoreBreakdownSerializer(serializers.Serializer):
    contact = serializers.IntegerField()
    score = serializers.IntegerField()
    fit = serializers.IntegerField()
    engagement = serializers.IntegerField()
    rules = serializers.ListField(child=serializers.DictField())
