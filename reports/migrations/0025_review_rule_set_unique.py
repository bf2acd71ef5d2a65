"""One register item per rule set, step 2: the constraint (duplicates folded in 0024)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0024_review_rule_set_fold"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="reviewitem",
            constraint=models.UniqueConstraint(
                condition=models.Q(("object_id__isnull", True)),
                fields=("type",),
                name="review_item_unique_rule_set",
            ),
        ),
    ]
