from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CrmConfig(AppConfig):
    default = True  # the app's own config; the admin's below is named in INSTALLED_APPS
    name = "crm"
    verbose_name = "CRM"


class AdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with Leadcycle's site as ``admin.site`` (crm.admin_site)."""

    default = False
    default_site = "crm.admin_site.AdminSite"
