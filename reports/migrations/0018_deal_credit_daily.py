from django.db import migrations, models


def rebuild(apps, schema_editor):
    """Fill the deal day rows from the existing credit rows (reports.deal_facts)."""
    from reports.deal_facts import deal_days_rebuild

    deal_days_rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0017_merge_0015_cost_revenue_facts_0016_landing_day_rows"),
    ]

    operations = [
        migrations.CreateModel(
            name="DealCreditDaily",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("campaign_id", models.IntegerField(default=0)),
                ("n", models.IntegerField(default=0)),
                ("credits", models.IntegerField(default=0)),
                ("first", models.IntegerField(default=0)),
                ("last", models.IntegerField(default=0)),
                ("amount", models.BigIntegerField(default=0)),
                ("amount_first", models.BigIntegerField(default=0)),
                ("amount_last", models.BigIntegerField(default=0)),
                ("amount_touches", models.BigIntegerField(default=0)),
                ("linear_0", models.BigIntegerField(default=0)),
                ("linear_1", models.BigIntegerField(default=0)),
                ("linear_2", models.BigIntegerField(default=0)),
                ("u_shaped_0", models.BigIntegerField(default=0)),
                ("u_shaped_1", models.BigIntegerField(default=0)),
                ("u_shaped_2", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "campaign_id", "n"), name="deal_credit_daily_key"
                    )
                ],
            },
        ),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
