"""Amazon SES activities were named ``amazon_ses:<event>:<recipient address>``; erasure
cannot reach the address there. They are renamed with the address's keyed digest, the
name nurture.services.tracking gives such events now (so a provider's retry of an event
recorded before the upgrade is still recognised)."""

from django.db import migrations
from django.utils.crypto import salted_hmac

BATCH = 2000


def _digest(address: str) -> str:
    # nurture.mail.recipient_digest as of this migration (a migration keeps its own copy).
    return salted_hmac("leadcycle.recipient", address.strip().lower()).hexdigest()[:24]


def forwards(apps, schema_editor):
    Activity = apps.get_model("crm", "Activity")
    rows = (
        Activity.objects.filter(external_id__startswith="amazon_ses:", external_id__contains="@")
        .only("pk", "external_id")
        .order_by("pk")
    )
    changed = []
    for activity in rows.iterator(chunk_size=BATCH):
        head, _, address = activity.external_id.rpartition(":")
        if head and "@" in address:
            activity.external_id = f"{head}:{_digest(address)}"
            changed.append(activity)
        if len(changed) >= BATCH:
            Activity.objects.bulk_update(changed, ["external_id"])
            changed = []
    Activity.objects.bulk_update(changed, ["external_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("nurture", "0008_send_to_digest"),
        ("crm", "0019_segment_change_log_order"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
