"""Per-table autovacuum thresholds for the big tables whose reads are index-only, PostgreSQL.

An index-only scan skips the heap only for pages the visibility map marks all-visible; a
vacuum sets those bits. Autovacuum's defaults wait for 20 % of a table to be dead or newly
inserted — 4M rows of crm_activity at 20M — and meanwhile the reads that depend on the
map turn into heap reads (measured at 1M after bulk clean-ups: the report APIs' index-only
reads up to twice as slow). 1–2 % keeps the map current at a vacuum every few hundred
thousand changed rows. crm_contactscore is rewritten by every rescore: its list and report
reads are index-only too.
"""

from django.db import migrations

SETTINGS = {
    "crm_activity": 0.01,
    "crm_contact": 0.02,
    "crm_contactscore": 0.02,
}


def thresholds_set(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, factor in SETTINGS.items():
        schema_editor.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = {factor}, "
            f"autovacuum_vacuum_insert_scale_factor = {factor}, "
            f"autovacuum_analyze_scale_factor = {factor})"
        )


def thresholds_reset(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in SETTINGS:
        schema_editor.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [("crm", "0016_contact_score_table")]

    operations = [migrations.RunPython(thresholds_set, thresholds_reset, elidable=False)]
