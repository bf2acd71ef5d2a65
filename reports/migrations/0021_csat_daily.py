from django.db import migrations, models


def rebuild(apps, schema_editor):
    """Fill the CSAT day rows from the existing answers (reports.csat_facts)."""
    from reports.csat_facts import csat_daily_rebuild

    csat_daily_rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0020_funnel_drop_day_rows"),
    ]

    operations = [
        migrations.CreateModel(
            name="CsatDaily",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("answer", models.SmallIntegerField()),
                ("n", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("day", "answer"), name="csat_daily_key")
                ],
            },
        ),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
