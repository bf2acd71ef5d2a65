"""``manage.py reports_rebuild [--only email|reopened]``: rebuild report tables from raw
data once after an upgrade changes how they are counted (see reports.rebuild)."""

from django.core.management.base import BaseCommand, CommandError

from reports.rebuild import TABLES, BatchesQueued, report_tables_rebuild


class Command(BaseCommand):
    help = "Rebuild the email rollups and the re-opened lead facts from raw data."

    def add_arguments(self, parser):
        parser.add_argument(
            "--only", choices=TABLES, action="append", help="rebuild only this table (repeatable)"
        )

    def handle(self, *args, only=None, **options):
        try:
            done = report_tables_rebuild(tables=only or TABLES)
        except BatchesQueued as exc:
            raise CommandError(str(exc)) from exc
        if "email" in done:
            self.stdout.write(f"email rollups rebuilt for {done['email']}")
        if "reopened" in done:
            self.stdout.write(f"re-opened lead facts rebuilt for {done['reopened']} contacts")
        self.stdout.write(self.style.SUCCESS("Report tables rebuilt."))
