"""Template context shared by every page."""

from .roles import Role, user_roles


def roles(request):
    """Expose the user's roles so navigation shows only what the role may use."""
    names = user_roles(getattr(request, "user", None))
    return {
        "user_roles": names,
        "is_marketing": Role.MARKETING in names or Role.ADMIN in names,
        "is_sales": Role.SALES in names or Role.ADMIN in names,
        "is_admin_role": Role.ADMIN in names,
    }
