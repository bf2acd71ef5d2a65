"""The Django admin site (installed through crm.apps.AdminConfig)."""

from django.contrib import admin

from crm.roles import Role, has_role
from crm.views.auth import ThrottledAdminAuthenticationForm


class AdminSite(admin.AdminSite):
    """Django's admin site, open to the admin role only, with a throttled log-in.

    The Django admin edits users and raw rows, so it is the admin role's alone. Staff
    status is not enough: a sales rep may be made staff, and the sales and marketing
    groups' model permissions (migration crm/0002) would then let them edit or delete rows
    that no page or API lets them touch (a won deal). With this check only the admin
    role's permissions ever reach the model admins.

    /admin/login/ is a second password form for the same accounts — the most valuable
    ones — so it counts failures on the app log-in's counters (crm.throttle).
    """

    site_header = "Leadcycle administration"
    login_form = ThrottledAdminAuthenticationForm

    def has_permission(self, request) -> bool:
        return super().has_permission(request) and has_role(request.user, Role.ADMIN)
