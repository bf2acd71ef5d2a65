# Contact rows are rewritten by every score, stage and owner change: three indexes no query
# needed (a duplicate of the company foreign key index, the owner foreign key index that
# contact_owner_stage covers, and a LOWER(last_name) index the search no longer reads) went.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0009_contacts_search_prefix"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="contact",
            name="contact_last_name_lower",
        ),
        migrations.RemoveIndex(
            model_name="contact",
            name="contact_company",
        ),
        migrations.AlterField(
            model_name="contact",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="owned_contacts",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
