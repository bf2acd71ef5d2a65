# CampaignMember: one row per (campaign, contact) pair the activities have, for the contact
# list's campaign filter. The table is created bare, filled from the activities in one
# INSERT … SELECT … GROUP BY (set-based: each activity read once, no rows through Python),
# and only then indexed (one index build instead of an index write per row).

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Max, Min


def members_fill(apps, schema_editor):
    Activity = apps.get_model("crm", "Activity")
    CampaignMember = apps.get_model("crm", "CampaignMember")
    connection = schema_editor.connection
    select, params = (
        Activity.objects.filter(campaign__isnull=False)
        .values("campaign_id", "contact_id")
        .annotate(first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by()
        .query.sql_with_params()
    )
    table = connection.ops.quote_name(CampaignMember._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The GROUP BY's hash table in memory rather than spilled in small batches.
            cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(
            f"INSERT INTO {table} (campaign_id, contact_id, first_touch_at, last_touch_at) "
            f"{select}",
            params,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0011_activity_campaign_covering"),
    ]

    operations = [
        migrations.CreateModel(
            name="CampaignMember",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "campaign",
                        "contact",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("first_touch_at", models.DateTimeField()),
                ("last_touch_at", models.DateTimeField()),
                (
                    "campaign",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="members",
                        to="crm.campaign",
                    ),
                ),
                (
                    "contact",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="campaign_memberships",
                        to="crm.contact",
                    ),
                ),
            ],
        ),
        migrations.RunPython(members_fill, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="campaignmember",
            index=models.Index(fields=["contact"], name="campaign_member_contact"),
        ),
    ]
