"""Template context shared by every page."""

from .notifications import UnreadNotices
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


def notices(request):
    """The top bar's unread-notices count for a signed-in user (one COUNT, when shown)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread_notices": UnreadNotices(user)}
