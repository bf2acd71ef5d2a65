# activity_campaign becomes activity_campaign_contact: the same keys, plus the contact
# (INCLUDE) for index-only "contacts who touched campaign X" lookups.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0010_contacts_fewer_indexes"),
    ]

    # The covering index first, so campaign lookups always have one.
    operations = [
        migrations.AddIndex(
            model_name="activity",
            index=models.Index(
                fields=["campaign", "kind", "occurred_at"],
                include=("contact",),
                name="activity_campaign_contact",
            ),
        ),
        migrations.RemoveIndex(
            model_name="activity",
            name="activity_campaign",
        ),
    ]
