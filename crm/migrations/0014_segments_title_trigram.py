"""Indexes for segment behaviour and "contains" conditions at a million contacts.

* ``activity_kind_time`` gains the contact (PostgreSQL INCLUDE): "did / did not do kind X
  within N days" is then an index-only scan of the period's rows of that kind, hashed
  against the contacts, instead of a timeline probe per candidate contact (the segment
  preview of ``bench_segment_preview`` did 10.7k probes per 100k contacts).
* ``contact_job_title_trgm``: a pg_trgm GIN index on ``UPPER(job_title)``, the expression
  ``icontains`` compiles to on PostgreSQL (``UPPER(col::text) LIKE UPPER('%term%')``), for
  segment and scoring conditions such as "title contains 'Director'". Like the prefix
  indexes of 0009 it is created by SQL on PostgreSQL only and is not part of the model
  state. pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it
  without superuser rights; where even that is refused, the index is skipped with a note
  and such conditions fall back to a scan of the contacts, which is correct, only slower.
  ANALYZE afterwards: the expression index also gives the planner the statistics it needs
  to estimate "contains" (without them it guessed 12 Directors of 10.7k and chose a
  nested loop over every activity index).
"""

from django.db import DatabaseError, migrations, models, transaction

TRIGRAM_INDEX = (
    'CREATE INDEX IF NOT EXISTS "contact_job_title_trgm" ON "crm_contact" '
    "USING gin (UPPER(job_title::text) gin_trgm_ops)"
)


def create_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as error:
        print(f"\n  crm.0014: pg_trgm not available ({error}); 'contains' stays a scan.")
        return
    schema_editor.execute(TRIGRAM_INDEX)
    schema_editor.execute('ANALYZE "crm_contact"')


def drop_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute('DROP INDEX IF EXISTS "contact_job_title_trgm"')


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0013_campaign_members_acquired"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="activity", name="activity_kind_time"),
        migrations.AddIndex(
            model_name="activity",
            index=models.Index(
                fields=["kind", "occurred_at"], include=("contact",), name="activity_kind_time"
            ),
        ),
        migrations.RunPython(create_trigram_index, drop_trigram_index, elidable=False),
    ]
