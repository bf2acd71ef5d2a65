"""Forms of the nurture pages."""

from __future__ import annotations

import json

from django import forms

from crm.models import Contact, Segment

from . import rendering
from .models import EmailTemplate, Program, Step, Trigger


class EmailTemplateForm(forms.ModelForm):
    class Meta:
        model = EmailTemplate
        fields = ["name", "subject", "preheader", "text_body", "html_body"]
        widgets = {
            "text_body": forms.Textarea(attrs={"rows": 10}),
            "html_body": forms.Textarea(attrs={"rows": 14}),
        }

    def clean(self):
        data = super().clean()
        for name in ("subject", "preheader", "text_body", "html_body"):
            try:
                rendering.template_check(data.get(name) or "")
            except rendering.TemplateRefused as exc:
                self.add_error(name, str(exc))
        return data


class ProgramForm(forms.ModelForm):
    send_days = forms.TypedMultipleChoiceField(
        choices=[(i, d) for i, d in enumerate(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])],
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked = every day",
    )

    class Meta:
        model = Program
        fields = [
            "name",
            "campaign",
            "description",
            "audience",
            "exit_on_goal",
            "exit_on_mql",
            "exit_on_recycle",
            "reentry",
            "reentry_days",
            "send_days",
            "send_hour_start",
            "send_hour_end",
            "use_contact_timezone",
            "daily_cap",
            "holdout_percent",
        ]

    def clean(self):
        data = super().clean()
        start, end = data.get("send_hour_start"), data.get("send_hour_end")
        if start is not None and end is not None and not 0 <= start < end <= 24:
            self.add_error(
                "send_hour_end", "The window runs from 0–23 to 1–24 and must not be empty."
            )
        if (data.get("holdout_percent") or 0) > 50:
            self.add_error("holdout_percent", "A holdout above 50% leaves too few to nurture.")
        return data


class StepForm(forms.ModelForm):
    """One step; its settings as simple fields, stored in ``config``."""

    hours = forms.IntegerField(required=False, min_value=0, max_value=24 * 365)
    days = forms.IntegerField(required=False, min_value=0, max_value=365)
    condition = forms.ChoiceField(
        required=False,
        choices=[
            ("", "—"),
            ("opened", "Opened the previous email"),
            ("clicked", "Clicked the previous email"),
            ("score_above", "Score above"),
            ("in_segment", "In segment"),
            ("activity_since", "Did an activity since enrolment"),
        ],
    )
    value = forms.CharField(required=False, max_length=50, help_text="Score, segment id or kind")
    yes_step = forms.IntegerField(required=False, help_text="Step id when true (blank: next)")
    no_step = forms.IntegerField(required=False, help_text="Step id when false (blank: next)")
    message = forms.CharField(required=False, max_length=200)
    target_program = forms.ModelChoiceField(queryset=Program.objects.all(), required=False)

    class Meta:
        model = Step
        fields = ["kind", "template"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.instance.config or {}
        cond = cfg.get("condition") or {}
        self.initial.update(
            {
                "hours": cfg.get("hours"),
                "days": cfg.get("days"),
                "condition": cond.get("type", ""),
                "value": cond.get("value") or cond.get("segment") or cond.get("kind") or "",
                "yes_step": cfg.get("yes_step"),
                "no_step": cfg.get("no_step"),
                "message": cfg.get("message", ""),
                "target_program": cfg.get("program"),
            }
        )

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if kind == Step.Kind.EMAIL and not data.get("template"):
            self.add_error("template", "An email step needs a template.")
        if kind == Step.Kind.WAIT and not (data.get("hours") or data.get("days")):
            self.add_error("days", "Give the wait in hours or days.")
        if kind == Step.Kind.BRANCH and not data.get("condition"):
            self.add_error("condition", "Choose the condition to branch on.")
        if kind == Step.Kind.MOVE_TO_PROGRAM and not data.get("target_program"):
            self.add_error("target_program", "Choose the program to move to.")
        if kind == Step.Kind.BRANCH and data.get("condition") == "score_above":
            try:
                int(data.get("value") or "")
            except ValueError:
                self.add_error("value", "Give the score as a whole number.")
        return data

    def save(self, commit=True):
        step = super().save(commit=False)
        d = self.cleaned_data
        kind = d["kind"]
        config: dict = {}
        if kind == Step.Kind.WAIT:
            config = {k: d[k] for k in ("hours", "days") if d.get(k)}
        elif kind == Step.Kind.BRANCH:
            cond: dict = {"type": d["condition"]}
            if d["condition"] == "score_above":
                cond["value"] = int(d["value"])
            elif d["condition"] == "in_segment":
                cond["segment"] = int(d["value"]) if (d["value"] or "").isdigit() else None
            elif d["condition"] == "activity_since":
                cond["kind"] = d["value"]
            config = {"condition": cond, "yes_step": d.get("yes_step"), "no_step": d.get("no_step")}
        elif kind == Step.Kind.NOTIFY_OWNER:
            config = {"message": d.get("message", "")}
        elif kind == Step.Kind.MOVE_TO_PROGRAM:
            config = {"program": d["target_program"].pk}
        if kind != Step.Kind.EMAIL:
            step.template = None
        step.config = config
        if commit:
            step.save()
        return step


class TriggerForm(forms.ModelForm):
    class Meta:
        model = Trigger
        fields = [
            "kind",
            "segment",
            "activity_kind",
            "url_pattern",
            "form",
            "campaign",
            "date_attribute",
            "offset_days",
            "yearly",
            "reason_code",
        ]

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if kind == Trigger.Kind.SEGMENT_JOINED and not data.get("segment"):
            self.add_error("segment", "Choose the segment.")
        if kind == Trigger.Kind.ACTIVITY and not data.get("activity_kind"):
            self.add_error("activity_kind", "Choose the activity.")
        if kind == Trigger.Kind.DATE and not data.get("date_attribute"):
            self.add_error("date_attribute", "Name the contact date attribute, e.g. birthday.")
        return data


class EnrollForm(forms.Form):
    contact_ids = forms.CharField(
        required=False, help_text="Contact ids, comma-separated", max_length=10_000
    )
    segment = forms.ModelChoiceField(queryset=Segment.objects.all(), required=False)

    def clean_contact_ids(self):
        raw = self.cleaned_data["contact_ids"]
        try:
            return [int(x) for x in raw.replace(" ", "").split(",") if x]
        except ValueError:
            raise forms.ValidationError("Contact ids are whole numbers, comma-separated.") from None

    def clean(self):
        data = super().clean()
        if not data.get("contact_ids") and not data.get("segment"):
            raise forms.ValidationError("Give contact ids or choose a segment.")
        return data


class PreviewForm(forms.Form):
    contact = forms.ModelChoiceField(queryset=Contact.objects.all(), widget=forms.NumberInput)


def config_json(step: Step) -> str:
    return json.dumps(step.config or {}, sort_keys=True)
