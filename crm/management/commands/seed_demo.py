"""Load realistic demo data:
``manage.py seed_demo [--contacts N] [--seed S] [--if-empty] [--history | --no-history]``.

Deterministic for a given seed. Each app fills its own tables through the seeders named in
``settings.DEMO_SEEDERS``; they share one :class:`crm.demo.SeedContext`.
"""

import argparse
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from crm.demo import HISTORY_REPLAY_MAX, SeedContext, ensure_demo_users
from crm.models import Contact


class Command(BaseCommand):
    help = "Load a year of realistic demo data (contacts, activity, programs, costs, deals)."

    def add_arguments(self, parser):
        parser.add_argument("--contacts", type=int, default=2000, help="number of contacts")
        parser.add_argument("--seed", type=int, default=42, help="random seed (deterministic)")
        parser.add_argument(
            "--if-empty", action="store_true", help="do nothing when contacts already exist"
        )
        parser.add_argument(
            "--history",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="replay the year's score ledger and segment membership week by week "
            f"(default: up to {HISTORY_REPLAY_MAX:,} contacts; --no-history dates them now)",
        )

    def handle(self, *args, contacts: int, seed: int, if_empty: bool, history, **options):
        users = ensure_demo_users()
        if if_empty and Contact.objects.exists():
            self.stdout.write("Demo data already present; leaving the database as it is.")
            return
        ctx = SeedContext(
            seed=seed, contacts=contacts, users=users, stdout=self.stdout, history=history
        )
        for path in settings.DEMO_SEEDERS:
            self.stdout.write(f"seeding {path} …")
            started = time.monotonic()
            import_string(path)(ctx)
            # Per seeder, so a slow one shows (the README quotes these times).
            self.stdout.write(f"  {path}: {time.monotonic() - started:.1f} s")
        self.stdout.write(
            self.style.SUCCESS(f"Demo data loaded ({contacts} contacts, seed {seed}).")
        )
