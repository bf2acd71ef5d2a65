"""Roles and the access rules every view and endpoint declares.

Roles are Django groups (created by a data migration). A view declares who may read it
(GET/HEAD/OPTIONS) and who may write (any other method) with :func:`allow` or the
``access`` attribute of a class-based view; :class:`crm.middleware.RoleAccessMiddleware`
refuses any view that declares nothing (deny by default). DRF views declare the same
``access`` and are checked by :class:`crm.api.permissions.RolePermission`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import models


class Role(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    SALES = "sales", "Sales"
    ADMIN = "admin", "Admin"


ALL_ROLES = frozenset(Role)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Access:
    """Roles that may read and roles that may write; ``public`` skips log-in entirely."""

    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    public: bool = False

    def allows(self, roles: Iterable[str], method: str) -> bool:
        if self.public:
            return True
        wanted = self.read if method.upper() in SAFE_METHODS else self.write
        return bool(wanted & set(roles))


def access(read: Iterable[str] = (), write: Iterable[str] | None = None) -> Access:
    """Build an :class:`Access`; ``write`` defaults to the same roles as ``read``."""
    read = frozenset(read)
    return Access(read=read, write=read if write is None else frozenset(write))


PUBLIC = Access(public=True)
# The role table of ARCHITECTURE.md, named once.
EVERYONE = access(ALL_ROLES)
MARKETING_WRITES = access(ALL_ROLES, write={Role.MARKETING, Role.ADMIN})
MARKETING_ONLY = access({Role.MARKETING, Role.ADMIN})
SALES_WRITES = access(ALL_ROLES, write={Role.SALES, Role.ADMIN})
SALES_AND_MARKETING_WRITE = access(ALL_ROLES, write=ALL_ROLES)
ADMIN_WRITES = access(ALL_ROLES, write={Role.ADMIN})
ADMIN_READS_MARKETING = access({Role.MARKETING, Role.ADMIN}, write={Role.ADMIN})
ADMIN_ONLY = access({Role.ADMIN})


def allow(rule: Access) -> Callable:
    """Decorate a function view with its access rule."""

    def decorate(view: Callable) -> Callable:
        view.access = rule
        return view

    return decorate


public = allow(PUBLIC)


def user_roles(user) -> frozenset[str]:
    """The user's roles; superusers have the admin role. Cached on the user object."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_leadcycle_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True)) & set(ALL_ROLES)
        if user.is_superuser:
            names.add(Role.ADMIN)
        cached = frozenset(names)
        user._leadcycle_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


def view_access(view_func) -> Access | None:
    """The access rule a resolved view declared, if any."""
    rule = getattr(view_func, "access", None)
    view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
    if rule is None and view_class is not None:
        rule = getattr(view_class, "access", None)
    return rule
