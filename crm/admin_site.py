"""The Django admin site (installed through crm.apps.AdminConfig)."""

from django.contrib import admin

from crm.views.auth import ThrottledAdminAuthenticationForm


class AdminSite(admin.AdminSite):
    """Django's admin site, whose log-in is throttled like the app's.

    /admin/login/ is a second password form for the same accounts — the most valuable
    ones — so it counts failures on the app log-in's counters (crm.throttle).
    """

    site_header = "Leadcycle administration"
    login_form = ThrottledAdminAuthenticationForm
