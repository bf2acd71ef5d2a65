"""Forms of the scoring pages; validation shares scoring.rules with the API."""

from django import forms
from django.contrib.auth import get_user_model

from crm.models import Company
from crm.roles import Role

from .models import AssignmentRule, Rule, ScoringSettings
from .rules import OPERATORS, field_choices, rule_errors
from .services import ASSIGNMENT_RULE_FIELDS, RULE_FIELDS


class RuleForm(forms.ModelForm):
    operator = forms.ChoiceField(
        choices=[("", "—"), *OPERATORS.items()], required=False, help_text="Fit rules"
    )

    class Meta:
        model = Rule
        fields = RULE_FIELDS
        widgets = {"active_from": forms.DateTimeInput(attrs={"type": "datetime-local"})}
        help_texts = {
            "field": "Fit rules: " + ", ".join(f for f, _ in field_choices()),
            "value": "For 'is one of': comma-separated values",
        }

    def clean(self):
        data = super().clean()
        payload = {**data, "campaign": data.get("campaign")}
        for name, messages in rule_errors(payload).items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)
        return data

    def draft(self) -> Rule:
        """The edited rule as an unsaved object, for the back-test."""
        return self.save(commit=False)


class SettingsForm(forms.ModelForm):
    mql_threshold = forms.IntegerField(min_value=1, error_messages={
        "min_value": "The MQL threshold must be a whole number above zero."})  # fmt: skip

    class Meta:
        model = ScoringSettings
        fields = ["mql_threshold", "min_fit", "recycle_policy"]


class AssignmentRuleForm(forms.ModelForm):
    size_band = forms.ChoiceField(choices=[("", "any"), *Company.SizeBand.choices], required=False)

    class Meta:
        model = AssignmentRule
        fields = ASSIGNMENT_RULE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = (
            get_user_model().objects.filter(is_active=True, groups__name=Role.SALES).distinct()
        )


class BacktestDaysForm(forms.Form):
    days = forms.IntegerField(min_value=1, max_value=365, initial=90)
