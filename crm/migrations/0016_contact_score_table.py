"""The cached score moves from ``crm_contact.score`` to ``crm_contactscore`` (see
``crm.models.ContactScore`` for why), with copies of the contact's stage and owner kept by
triggers on crm_contact.

Order matters: the new table is filled from the old column before the column goes, its
indexes are built after the fill (one sort each instead of 1M index inserts), and the
triggers come last — on SQLite, dropping a column may rebuild crm_contact, which drops the
triggers of the old table.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# Trigger bodies, one per vendor. PostgreSQL: a statement trigger with a transition table
# for inserts (one INSERT … SELECT per bulk_create or COPY, not one per row) and a row
# trigger for changes of stage/owner (transition tables cannot name columns).
PG_CREATE = [
    """
    CREATE FUNCTION crm_contactscore_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO crm_contactscore
            (contact_id, score, stage, owner_id, created_at, created_suppressed)
        SELECT id, 0, stage, owner_id, created_at, created_suppressed FROM new_contacts;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER crm_contact_scorecard_insert AFTER INSERT ON crm_contact
    REFERENCING NEW TABLE AS new_contacts FOR EACH STATEMENT
    EXECUTE FUNCTION crm_contactscore_insert()
    """,
    """
    CREATE FUNCTION crm_contactscore_copy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE crm_contactscore SET stage = NEW.stage, owner_id = NEW.owner_id,
            created_at = NEW.created_at, created_suppressed = NEW.created_suppressed
        WHERE contact_id = NEW.id;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER crm_contact_scorecard_copy
    AFTER UPDATE OF stage, owner_id, created_at, created_suppressed ON crm_contact
    FOR EACH ROW WHEN (OLD.stage IS DISTINCT FROM NEW.stage
                       OR OLD.owner_id IS DISTINCT FROM NEW.owner_id
                       OR OLD.created_at IS DISTINCT FROM NEW.created_at
                       OR OLD.created_suppressed IS DISTINCT FROM NEW.created_suppressed)
    EXECUTE FUNCTION crm_contactscore_copy()
    """,
]
PG_DROP = [
    "DROP TRIGGER IF EXISTS crm_contact_scorecard_copy ON crm_contact",
    "DROP TRIGGER IF EXISTS crm_contact_scorecard_insert ON crm_contact",
    "DROP FUNCTION IF EXISTS crm_contactscore_copy()",
    "DROP FUNCTION IF EXISTS crm_contactscore_insert()",
]
SQLITE_CREATE = [
    """
    CREATE TRIGGER crm_contact_scorecard_insert AFTER INSERT ON crm_contact
    BEGIN
        INSERT INTO crm_contactscore
            (contact_id, score, stage, owner_id, created_at, created_suppressed)
        VALUES (NEW.id, 0, NEW.stage, NEW.owner_id, NEW.created_at, NEW.created_suppressed);
    END
    """,
    """
    CREATE TRIGGER crm_contact_scorecard_copy
    AFTER UPDATE OF stage, owner_id, created_at, created_suppressed ON crm_contact
    WHEN OLD.stage IS NOT NEW.stage OR OLD.owner_id IS NOT NEW.owner_id
        OR OLD.created_at IS NOT NEW.created_at
        OR OLD.created_suppressed IS NOT NEW.created_suppressed
    BEGIN
        UPDATE crm_contactscore SET stage = NEW.stage, owner_id = NEW.owner_id,
            created_at = NEW.created_at, created_suppressed = NEW.created_suppressed
        WHERE contact_id = NEW.id;
    END
    """,
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS crm_contact_scorecard_copy",
    "DROP TRIGGER IF EXISTS crm_contact_scorecard_insert",
]
TRIGGERS = {"postgresql": (PG_CREATE, PG_DROP), "sqlite": (SQLITE_CREATE, SQLITE_DROP)}


def triggers_create(apps, schema_editor):
    create, _drop = TRIGGERS[schema_editor.connection.vendor]
    for sql in create:
        schema_editor.execute(sql)


def triggers_drop(apps, schema_editor):
    _create, drop = TRIGGERS[schema_editor.connection.vendor]
    for sql in drop:
        schema_editor.execute(sql)


def scores_copy(apps, schema_editor):
    schema_editor.execute(
        "INSERT INTO crm_contactscore "
        "(contact_id, score, stage, owner_id, created_at, created_suppressed) "
        "SELECT id, score, stage, owner_id, created_at, created_suppressed FROM crm_contact"
    )


def scores_copy_back(apps, schema_editor):
    schema_editor.execute(
        "UPDATE crm_contact SET score = COALESCE((SELECT s.score FROM crm_contactscore s "
        "WHERE s.contact_id = crm_contact.id), 0)"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0015_reports_contact_created_covering"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ContactScore",
            fields=[
                (
                    "contact",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="scorecard",
                        serialize=False,
                        to="crm.contact",
                    ),
                ),
                ("score", models.IntegerField(default=0)),
                (
                    "stage",
                    models.CharField(
                        choices=[
                            ("lead", "Lead"),
                            ("mql", "MQL"),
                            ("sql", "SQL"),
                            ("opportunity", "Opportunity"),
                            ("customer", "Customer"),
                            ("recycled", "Recycled"),
                            ("disqualified", "Disqualified"),
                            ("churned", "Churned"),
                        ],
                        default="lead",
                        max_length=20,
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("created_at", models.DateTimeField()),
                ("created_suppressed", models.BooleanField(default=False)),
            ],
        ),
        migrations.RunPython(scores_copy, scores_copy_back, elidable=False),
        migrations.RemoveIndex(model_name="contact", name="contact_stage_score"),
        migrations.RemoveIndex(model_name="contact", name="contact_score"),
        migrations.RemoveIndex(model_name="contact", name="contact_owner_stage_score"),
        migrations.RemoveIndex(model_name="contact", name="contact_created"),
        migrations.RemoveField(model_name="contact", name="score"),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(
                fields=["created_at", "id"],
                include=("created_suppressed",),
                name="contact_created",
            ),
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(fields=["owner", "stage", "id"], name="contact_owner_stage"),
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(fields=["stage", "id"], name="contact_stage"),
        ),
        migrations.AddIndex(
            model_name="contactscore",
            index=models.Index(fields=["-score", "contact"], name="contactscore_score"),
        ),
        migrations.AddIndex(
            model_name="contactscore",
            index=models.Index(fields=["stage", "-score", "contact"], name="contactscore_stage"),
        ),
        migrations.AddIndex(
            model_name="contactscore",
            index=models.Index(
                fields=["owner", "stage", "-score", "contact"], name="contactscore_owner"
            ),
        ),
        migrations.AddIndex(
            model_name="contactscore",
            index=models.Index(
                condition=models.Q(("created_suppressed", False)),
                fields=["created_at"],
                include=("score",),
                name="contactscore_new_leads",
            ),
        ),
        migrations.RunPython(triggers_create, triggers_drop, elidable=False),
    ]
