# Campaign members also hold the contacts a campaign acquired (Contact.acquired_by) without
# any activity in it, touch times empty: the contact list's campaign filter becomes one
# semi-join on this table. Filled set-based (INSERT … SELECT) from the contacts.

from django.db import migrations, models
from django.db.models import DateTimeField, Exists, OuterRef, Value


def acquisitions_fill(apps, schema_editor):
    Contact = apps.get_model("crm", "Contact")
    CampaignMember = apps.get_model("crm", "CampaignMember")
    present = CampaignMember.objects.filter(
        contact_id=OuterRef("pk"), campaign_id=OuterRef("acquired_by_id")
    )
    select, params = (
        Contact.objects.filter(acquired_by__isnull=False)
        .exclude(Exists(present))
        .annotate(no_touch=Value(None, output_field=DateTimeField()))
        .values_list("acquired_by_id", "pk", "no_touch", "no_touch")
        .order_by()
        .query.sql_with_params()
    )
    connection = schema_editor.connection
    table = connection.ops.quote_name(CampaignMember._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (campaign_id, contact_id, first_touch_at, last_touch_at) "
            f"{select}",
            params,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0012_campaign_members"),
    ]

    operations = [
        migrations.AlterField(
            model_name="campaignmember",
            name="first_touch_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AlterField(
            model_name="campaignmember",
            name="last_touch_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.RunPython(acquisitions_fill, migrations.RunPython.noop, elidable=True),
    ]
