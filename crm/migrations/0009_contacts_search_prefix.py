"""Prefix indexes for the contact list search (``ContactFilter.search``), PostgreSQL only.

``istartswith`` compiles on PostgreSQL to ``UPPER(col::text) LIKE UPPER('term%')``. Only an
index on that expression with the pattern operator class serves a LIKE prefix under every
collation (a plain btree does so only under "C"; ``C.UTF-8`` is not "C" before PG 17).
``OpClass`` is PostgreSQL-only and the suite also runs on SQLite (whose LIKE is
case-insensitive and uses no such index), so these indexes are created by SQL on PostgreSQL
and are deliberately not part of the model state (no ``Meta.indexes`` entry, nothing for
``makemigrations`` to detect; crm/models/contacts.py Meta points here).
"""

from django.db import migrations

# (index name, table, indexed expression, the query it serves)
INDEXES = [
    # Contact list / API search ?q=: the last-name branch, UPPER(last_name) LIKE 'TERM%'.
    ("contact_last_name_prefix", "crm_contact", "UPPER(last_name) text_pattern_ops"),
    # Contact list / API search ?q=: the first-name branch (and "first last").
    ("contact_first_name_prefix", "crm_contact", "UPPER(first_name) text_pattern_ops"),
    # Contact list search ?q=: the company-name branch (ids of companies whose name starts
    # with the term); also the company list search ?q= (CompanyFilter.search).
    ("company_name_prefix", "crm_company", "UPPER(name) text_pattern_ops"),
]
# The email branch (email LIKE 'term%', stored lower-case) is served by the
# varchar_pattern_ops index Django creates for the unique email column.


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, table, expression in INDEXES:
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({expression})')
    # An expression index has no statistics until the table is analysed, and autovacuum
    # analyses only after enough writes: meanwhile every LIKE prefix is guessed at 0.5% of
    # the contacts, and for a term matching nothing the list pages then walk the whole
    # created_at index hoping to fill a page (150-250 ms at 100k contacts, measured).
    for table in sorted({table for _name, table, _expression in INDEXES}):
        schema_editor.execute(f'ANALYZE "{table}"')


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _table, _expression in INDEXES:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0008_contacts_owner_stage_score"),
    ]

    operations = [
        migrations.RunPython(create, drop, elidable=False),
    ]
