"""Demo data for the CRM core and the context shared by every app's seeder."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from .roles import Role

# The demo log-ins printed by `make run`. Demo only: never use these in production.
DEMO_PASSWORD = "leadcycle-demo"
DEMO_USERS = [
    # username, role, first name, last name
    ("marketing", Role.MARKETING, "Maya", "Marketer"),
    ("sales", Role.SALES, "Sam", "Seller"),
    ("admin", Role.ADMIN, "Ada", "Admin"),
    ("sales2", Role.SALES, "Sasha", "Closer"),
]


@dataclass
class SeedContext:
    """What seeders share: the random source, the size, the users and what earlier seeders made."""

    seed: int
    contacts: int
    users: dict[str, Any]
    stdout: Any = None
    now: datetime = field(default_factory=timezone.now)
    shared: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        # A year of history ending now, on a stable day boundary so reruns line up.
        self.start = (self.now - timedelta(days=365)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )

    def log(self, message: str) -> None:
        if self.stdout:
            self.stdout.write(f"  {message}")


def ensure_demo_users() -> dict[str, Any]:
    """Create (or keep) one demo user per role and return them by user name."""
    User = get_user_model()
    users = {}
    for username, role, first, last in DEMO_USERS:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={
                "first_name": first,
                "last_name": last,
                "email": f"{username}@leadcycle.example",
            },
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.is_staff = role == Role.ADMIN
            user.is_superuser = role == Role.ADMIN
            user.save()
        user.groups.add(Group.objects.get(name=role))
        users[username] = user
    return users


def seed(ctx: SeedContext) -> None:
    """Companies, contacts, campaigns with costs, a year of activity, history and deals."""
