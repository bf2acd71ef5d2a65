from django.db import migrations, models


def rebuild(apps, schema_editor):
    """Count the existing landing facts into day and span rows."""
    from reports.landing_rollup import landing_rollup_rebuild

    landing_rollup_rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0014_merge_stage_holdout"),
    ]

    operations = [
        migrations.CreateModel(
            name="LandingDaily",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("url", models.CharField(max_length=2000)),
                ("tag", models.CharField(max_length=1)),
                ("day", models.DateField()),
                ("firsts", models.IntegerField(default=0)),
                ("opened", models.IntegerField(default=0)),
                ("closed", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("day", "url", "tag"), name="landing_daily_key")
                ],
            },
        ),
        migrations.CreateModel(
            name="LandingSpan",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("url", models.CharField(max_length=2000)),
                ("tag", models.CharField(max_length=1)),
                ("grain", models.CharField(max_length=2)),
                ("p_key", models.DateField()),
                ("d_key", models.DateField()),
                ("n", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("grain", "d_key", "p_key", "url", "tag"),
                        name="landing_span_key",
                    )
                ],
                "indexes": [
                    models.Index(
                        condition=models.Q(("grain", "dm")),
                        fields=["p_key", "d_key"],
                        name="landing_span_dm",
                    )
                ],
            },
        ),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
