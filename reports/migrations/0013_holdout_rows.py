from django.db import migrations, models


def rebuild(apps, schema_editor):
    """Count the existing enrollments per entry day, program and group."""
    from reports.holdout_facts import holdout_rebuild

    holdout_rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0011_nurtured_cohort_rows"),
        ("nurture", "0001_initial"),  # the rebuild reads the enrollments
    ]

    operations = [
        migrations.CreateModel(
            name="HoldoutDaily",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("program_id", models.IntegerField()),
                ("group", models.CharField(max_length=10)),
                ("prev_day", models.DateField()),
                ("enrolled", models.IntegerField(default=0)),
                ("opportunity", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "program_id", "group", "prev_day"),
                        name="holdout_daily_key",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="HoldoutReachDaily",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("reached_day", models.DateField()),
                ("day", models.DateField()),
                ("program_id", models.IntegerField()),
                ("group", models.CharField(max_length=10)),
                ("prev_day", models.DateField()),
                ("enrolled", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("reached_day", "program_id", "group", "day", "prev_day"),
                        name="holdout_reach_daily_key",
                    )
                ],
            },
        ),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
