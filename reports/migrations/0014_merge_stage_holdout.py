from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0012_stage_day_rows"),
        ("reports", "0013_holdout_rows"),
    ]

    operations = []
