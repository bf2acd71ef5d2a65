"""SegmentChange.xid: the writing transaction, so cursors read the log in commit-safe order.

The column is added with the constant default 0 and only then given its function default:
a constant default needs no table rewrite on PostgreSQL (the change log can hold millions
of rows), and it gives every existing row xid 0. Those rows sort before every new one and
among themselves in id order, as the triggers read them so far, so each trigger's cursor
carries over as (0, last_change_id) (nurture 0007). Writers wait for the ALTER's lock, so
a transaction that was open meanwhile writes its rows with its real xid, after them.
"""

from django.db import migrations, models

import crm.models.segments

HELP = (
    "The writing transaction (PostgreSQL; 0 on SQLite and for rows older than this column): "
    "with id, the order in which a cursor reads the log."
)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0018_activity_queue"),
    ]

    operations = [
        migrations.AddField(
            model_name="segmentchange",
            name="xid",
            field=models.BigIntegerField(db_default=0, editable=False, help_text=HELP),
        ),
        migrations.AlterField(
            model_name="segmentchange",
            name="xid",
            field=models.BigIntegerField(
                db_default=crm.models.segments.TransactionId(), editable=False, help_text=HELP
            ),
        ),
        migrations.AddIndex(
            model_name="segmentchange",
            index=models.Index(
                condition=models.Q(("kind", "joined")),
                fields=["segment", "xid", "id"],
                name="segment_change_joins",
            ),
        ),
    ]
