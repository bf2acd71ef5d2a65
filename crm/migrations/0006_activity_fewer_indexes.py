# Three of the activity table's nine indexes duplicated others (see Activity.Meta): every
# ingested row paid for them.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0005_privacy_erased_at"),
    ]

    # The new unique constraint first, so external_id is never without one.
    operations = [
        migrations.AddConstraint(
            model_name="activity",
            constraint=models.UniqueConstraint(
                fields=("external_id",), name="activity_external_id"
            ),
        ),
        migrations.AlterField(
            model_name="activity",
            name="external_id",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
        migrations.AlterField(
            model_name="activity",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="activities",
                to="crm.campaign",
            ),
        ),
        migrations.AlterField(
            model_name="activity",
            name="contact",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="activities",
                to="crm.contact",
            ),
        ),
    ]
