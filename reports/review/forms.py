"""Forms of the review register."""

from django import forms

from .models import Review, ReviewItem
from .snapshots import METRIC_KEYS


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=Review.Decision.choices)
    notes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=5000
    )


class CadenceForm(forms.ModelForm):
    class Meta:
        model = ReviewItem
        fields = ["owner", "first_review_days", "cadence_days", "stable"]

    def clean_cadence_days(self):
        days = self.cleaned_data["cadence_days"]
        if not 1 <= days <= 730:
            raise forms.ValidationError("Choose a cadence between 1 and 730 days.")
        return days


class BaselineForm(forms.Form):
    """Figures entered by hand, one field per metric of the item's type."""

    note = forms.CharField(max_length=300, required=False, help_text="Where the figures come from")

    def __init__(self, *args, item: ReviewItem, **kwargs):
        super().__init__(*args, **kwargs)
        for key in METRIC_KEYS[item.type]:
            self.fields[key] = forms.FloatField(
                required=False,
                label=key.replace("_", " ").capitalize(),
                help_text="a fraction, e.g. 0.21 for 21%" if key.endswith("rate") else "",
            )

    def figures(self) -> dict[str, float]:
        return {k: v for k, v in self.cleaned_data.items() if k != "note" and v is not None}
