"""The period picker and filter form every report page shares."""

from django import forms
from django.contrib.auth import get_user_model

from crm.models import Campaign, Channel, Segment, Source

from .query import ATTRIBUTION_MODELS, GROUP_BY, PERIOD_PRESETS


class ReportFilterForm(forms.Form):
    period = forms.ChoiceField(choices=list(PERIOD_PRESETS.items()), required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(
        required=False,
        label="End (exclusive)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    compare = forms.BooleanField(required=False, label="Compare with previous period")
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.order_by("name"), required=False)
    channel = forms.ChoiceField(choices=[("", "All channels"), *Channel.choices], required=False)
    source = forms.ChoiceField(choices=[("", "All sources"), *Source.choices], required=False)
    segment = forms.ModelChoiceField(queryset=Segment.objects.order_by("name"), required=False)
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        required=False,
    )
    attribution = forms.ChoiceField(choices=list(ATTRIBUTION_MODELS.items()), required=False)
    group_by = forms.ChoiceField(
        choices=[("", "No grouping"), *[(g, f"By {g}") for g in GROUP_BY]],
        required=False,
        label="Group by",
    )
