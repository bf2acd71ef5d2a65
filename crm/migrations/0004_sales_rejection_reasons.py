"""Default rejection reasons for the MQL queue.

The codes are fixed: nurture picks the recycle program per reason code and reports group
rejections by it. Labels and ``active`` stay admin-editable.
"""

from django.db import migrations

REASONS = [
    # (code, label, outcome) — not ready → recycle into nurture
    ("no_budget", "No budget", "recycled"),
    ("bad_timing", "Bad timing", "recycled"),
    ("no_project", "No project yet", "recycled"),
    ("no_authority", "No authority", "recycled"),
    # bad fit → disqualify
    ("bad_fit", "Bad fit", "disqualified"),
    ("wrong_contact", "Wrong contact", "disqualified"),
    ("duplicate", "Duplicate", "disqualified"),
    ("competitor", "Competitor", "disqualified"),
]


def create_reasons(apps, schema_editor):
    RejectionReason = apps.get_model("crm", "RejectionReason")
    for position, (code, label, outcome) in enumerate(REASONS, start=1):
        RejectionReason.objects.get_or_create(
            code=code, defaults={"label": label, "outcome": outcome, "position": position}
        )


def remove_reasons(apps, schema_editor):
    apps.get_model("crm", "RejectionReason").objects.filter(
        code__in=[code for code, _, _ in REASONS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0003_notification"),
    ]

    operations = [migrations.RunPython(create_reasons, remove_reasons)]
