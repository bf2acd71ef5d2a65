"""Create the three role groups with the model permissions of ARCHITECTURE.md's role table.

The app enforces roles through ``crm.roles`` on every view; the model permissions mirror
the same table so the Django admin and any permission-based tooling agree with it.
"""

from django.db import migrations

MARKETING_MODELS = {"company", "contact", "campaign", "campaigncost", "activity", "segment",
                    "segmentmembership", "deal"}
SALES_MODELS = {"contact", "deal", "company", "activity"}
READ_ONLY_FOR_MARKETING = {"lifecycletransition", "rejectionreason"}


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    crm_perms = Permission.objects.filter(content_type__app_label="crm")

    def pick(models, actions=("add", "change", "delete", "view")):
        return [p for p in crm_perms if p.content_type.model in models and p.codename.split("_")[0] in actions]

    marketing, _ = Group.objects.get_or_create(name="marketing")
    marketing.permissions.set(pick(MARKETING_MODELS) + pick(READ_ONLY_FOR_MARKETING, ("view",)))
    sales, _ = Group.objects.get_or_create(name="sales")
    sales.permissions.set(pick(SALES_MODELS) + pick(READ_ONLY_FOR_MARKETING | {"campaign", "segment"}, ("view",)))
    admin, _ = Group.objects.get_or_create(name="admin")
    admin.permissions.set(Permission.objects.all())


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["marketing", "sales", "admin"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
