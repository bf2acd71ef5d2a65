"""One register item per rule set: fold duplicates a concurrent first sync may have made
(their reviews move to the oldest item), then constrain."""

from django.db import migrations, models


def fold_rule_set_duplicates(apps, schema_editor):
    ReviewItem = apps.get_model("reports", "ReviewItem")
    Review = apps.get_model("reports", "Review")
    for type_ in (
        ReviewItem.objects.filter(object_id__isnull=True)
        .values_list("type", flat=True)
        .distinct()
    ):
        keep, *extra = ReviewItem.objects.filter(type=type_, object_id__isnull=True).order_by("pk")
        if extra:
            Review.objects.filter(item__in=extra).update(item=keep)
            ReviewItem.objects.filter(pk__in=[i.pk for i in extra]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0023_autovacuum_thresholds"),
    ]

    operations = [
        migrations.RunPython(fold_rule_set_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="reviewitem",
            constraint=models.UniqueConstraint(
                condition=models.Q(("object_id__isnull", True)),
                fields=("type",),
                name="review_item_unique_rule_set",
            ),
        ),
    ]
