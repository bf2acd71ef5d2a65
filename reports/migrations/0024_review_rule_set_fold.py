"""One register item per rule set, step 1: fold duplicates a concurrent first sync may have
made (their reviews move to the oldest item). The constraint is the next migration: on
PostgreSQL the moves leave deferred foreign-key checks pending, and an index cannot be
built in the transaction that has them."""

from django.db import migrations


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
            latest = Review.objects.filter(item=keep).order_by("-reviewed_at").first()
            if latest is not None:
                ReviewItem.objects.filter(pk=keep.pk).update(last_reviewed_at=latest.reviewed_at)
            ReviewItem.objects.filter(pk__in=[i.pk for i in extra]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0023_autovacuum_thresholds"),
    ]

    operations = [
        migrations.RunPython(fold_rule_set_duplicates, migrations.RunPython.noop),
    ]
