"""Forms of the nurture pages."""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError

from crm.models import Contact, Segment

from . import rendering
from .models import EmailTemplate, Program, Step, Trigger
from .services.steps import step_config_check


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
            "exit_on_accept",
            "reentry",
            "reentry_days",
            "send_days",
            "send_hour_start",
            "send_hour_end",
            "use_contact_timezone",
            "daily_cap",
            "holdout_percent",
        ]

    # The send window and holdout rules are Program.clean's, which ModelForm runs.


class StepForm(forms.ModelForm):
    """One step; its settings as simple fields, stored in ``config``."""

    # Settings (step_config_check's keys) → the fields of this form that carry them.
    CONFIG_FIELDS = {"program": "target_program", "segment": "value", "kind": "value"}

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

    def __init__(self, *args, program=None, **kwargs):
        super().__init__(*args, **kwargs)
        # The step's program: a branch may target only its steps.
        self.program = program or (self.instance.program if self.instance.program_id else None)
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
        if not kind:
            return data
        try:
            self.config = step_config_check(
                kind=kind,
                config=self._config(kind, data),
                template=data.get("template"),
                program=self.program,
            )
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                name = self.CONFIG_FIELDS.get(key, key)
                self.add_error(name if name in self.fields else None, messages)
        return data

    @staticmethod
    def _config(kind: str, d: dict) -> dict:
        """The settings as stored, from the form's simple fields."""
        if kind == Step.Kind.WAIT:
            return {k: d[k] for k in ("hours", "days") if d.get(k)}
        if kind == Step.Kind.BRANCH:
            condition = d.get("condition") or ""
            value = (d.get("value") or "").strip()
            try:
                number: int | str = int(value)
            except ValueError:
                number = value  # refused by the check, with the field's message
            cond: dict = {"type": condition}
            if condition == "score_above":
                cond["value"] = number
            elif condition == "in_segment":
                cond["segment"] = number
            elif condition == "activity_since":
                cond["kind"] = value
            return {"condition": cond, "yes_step": d.get("yes_step"), "no_step": d.get("no_step")}
        if kind == Step.Kind.NOTIFY_OWNER:
            return {"message": d.get("message", "")}
        if kind == Step.Kind.MOVE_TO_PROGRAM:
            target = d.get("target_program")
            return {"program": target.pk if target else None}
        return {}

    def save(self, commit=True):
        step = super().save(commit=False)
        if step.kind != Step.Kind.EMAIL:
            step.template = None
        step.config = self.config
        if commit:
            step.save()
        return step


# A date rule's offset: up to ten years before or after the contact's date.
MAX_OFFSET_DAYS = 3660


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
        offset = data.get("offset_days")
        if kind == Trigger.Kind.DATE and offset is not None and abs(offset) > MAX_OFFSET_DAYS:
            # Far beyond any campaign, and past the calendar's range the rule fails every day.
            self.add_error(
                "offset_days", f"Choose an offset within {MAX_OFFSET_DAYS} days of the date."
            )
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
