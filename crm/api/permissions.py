"""DRF permission: the same deny-by-default role rule as the HTML views."""

from rest_framework.permissions import BasePermission

from crm.roles import user_roles, view_access


class RolePermission(BasePermission):
    """Allow a request only when the view's ``access`` rule admits the user's roles.

    A view that declares no ``access`` refuses everyone, so a forgotten declaration fails
    closed. Public API views (none today) would declare ``crm.roles.PUBLIC``.
    """

    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        rule = view_access(view)
        if rule is None:
            return False
        if rule.public:
            return True
        if not request.user or not request.user.is_authenticated:
            return False
        return rule.allows(user_roles(request.user), request.method)
