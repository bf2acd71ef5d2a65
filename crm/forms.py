"""HTML forms of the CRM pages; the writes themselves are services."""

from __future__ import annotations

import json

from django import forms

from .filters import FetchedModelChoiceField, InlineSelect, staff_users
from .models import Campaign, CampaignCost, Company, Contact, Stage
from .services.campaigns import CAMPAIGN_FIELDS
from .services.contacts import EDITABLE_FIELDS

DATE = forms.DateInput(attrs={"type": "date"})


class ContactForm(forms.ModelForm):
    """Create/edit a contact. ``stage`` is a lifecycle move, so it is a plain field here."""

    stage = forms.ChoiceField(choices=Stage.choices, initial=Stage.LEAD)
    attributes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text='Custom attributes as a JSON object, e.g. {"plan": "pro"}.',
    )

    class Meta:
        model = Contact
        fields = [f for f in EDITABLE_FIELDS if f not in ("attributes", "consent_given_at")]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = staff_users()
        self.fields["company"].queryset = Company.objects.order_by("name")
        self.fields["acquired_by"].queryset = Campaign.objects.order_by("name")
        if self.instance.pk:
            self.fields["stage"].initial = self.instance.stage
            self.initial["attributes"] = json.dumps(self.instance.attributes or {})

    def clean_email(self):
        email = Contact.normalise_email(self.cleaned_data["email"])
        clash = Contact.objects.filter(email=email).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("Another contact has this email.")
        return email

    def clean_country(self):
        country = self.cleaned_data.get("country", "").strip().upper()
        if country and (len(country) != 2 or not country.isalpha()):
            raise forms.ValidationError("Use a two-letter ISO country code such as DE.")
        return country

    def clean_attributes(self):
        raw = self.cleaned_data.get("attributes") or ""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError("Not valid JSON.") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("Give a JSON object ({...}).")
        return value

    def service_fields(self) -> dict:
        data = {name: self.cleaned_data[name] for name in self.Meta.fields}
        data["attributes"] = self.cleaned_data["attributes"]
        data["stage"] = self.cleaned_data["stage"]
        return data

    def _post_clean(self):
        # The service saves; keep ModelForm from copying values onto the instance early,
        # so contact_update can tell what changed.
        pass


class CompanyForm(forms.ModelForm):
    class Meta:
        model = Company
        fields = ["name", "domain", "industry", "size_band", "country", "owner"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = staff_users()

    def _post_clean(self):
        pass


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = list(CAMPAIGN_FIELDS)
        widgets = {"start_date": DATE, "end_date": DATE}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = staff_users()

    def clean(self):
        data = super().clean()
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end < start:
            self.add_error("end_date", "The end date is before the start date.")
        return data

    def _post_clean(self):
        pass


class CostForm(forms.ModelForm):
    shared_with = forms.ModelMultipleChoiceField(
        queryset=Campaign.objects.none(),
        required=False,
        help_text="For a shared (labour/technology) cost: the other campaigns it is split with.",
    )

    class Meta:
        model = CampaignCost
        fields = ["period_start", "period_end", "amount", "category", "shared", "split", "note"]
        widgets = {"period_start": DATE, "period_end": DATE}

    def __init__(self, *args, campaign: Campaign, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["shared_with"].queryset = Campaign.objects.exclude(pk=campaign.pk).order_by(
            "name"
        )
        if self.instance.pk:
            self.initial["shared_with"] = list(self.instance.shared_with.all())

    def _post_clean(self):
        pass


class BulkActionForm(forms.Form):
    ACTIONS = [
        ("assign", "Assign owner"),
        ("unassign", "Remove owner"),
        ("segment", "Add to static segment"),
        ("export_csv", "Export CSV"),
        ("export_xlsx", "Export XLSX"),
    ]
    action = forms.ChoiceField(choices=ACTIONS)
    scope = forms.ChoiceField(choices=[("selected", "Selected rows"), ("filter", "Whole filter")])
    owner = FetchedModelChoiceField(queryset=None, required=False, widget=InlineSelect)
    segment = forms.IntegerField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = staff_users()

    def clean(self):
        data = super().clean()
        # A blank owner is not "nobody": clearing owners is its own, explicit action.
        if data.get("action") == "assign" and not data.get("owner"):
            self.add_error("owner", "Choose the owner to assign.")
        return data


class ImportUploadForm(forms.Form):
    KINDS = [("contacts", "Contacts"), ("activities", "Activities")]
    kind = forms.ChoiceField(choices=KINDS)
    file = forms.FileField(help_text="A CSV file (UTF-8 preferred), at most 5 MB.")
