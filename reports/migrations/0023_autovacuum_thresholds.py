"""Autovacuum threshold for reports_transitionfact, PostgreSQL: the funnel's velocity
percentiles are an index-only read of it (reports.metrics.velocity), fast only while its
visibility map is current — see crm/migrations/0017_autovacuum_thresholds.py for why the
defaults (20 % of the table) are too late. Measured at 1M: 75k dead rows left by bulk
clean-ups made the 365-day funnel API 229 ms of SQL instead of 98 ms.
"""

from django.db import migrations

SETTINGS = {
    "reports_transitionfact": 0.02,
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
    dependencies = [("reports", "0022_landing_fact_unread_indexes")]

    operations = [migrations.RunPython(thresholds_set, thresholds_reset, elidable=False)]
