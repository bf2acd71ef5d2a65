"""Demo data for reports, called by `manage.py seed_demo` (settings.DEMO_SEEDERS), last."""

from datetime import timedelta

from .credit_facts import credit_facts_rebuild
from .facts import facts_rebuild
from .holdout_facts import holdout_rebuild
from .landing_rollup import landing_rollup_rebuild
from .lifecycle_facts import lifecycle_facts_rebuild
from .nurtured_facts import nurtured_rebuild
from .query import site_tz
from .rollups import rollups_rebuild
from .stage_facts import stage_facts_rebuild


def seed(ctx) -> None:
    """Rebuild the daily rollups for the demo year (seeders may bulk-load around the hooks)."""
    start = ctx.start.astimezone(site_tz()).date() - timedelta(days=1)
    end = ctx.now.astimezone(site_tz()).date() + timedelta(days=2)
    rollups_rebuild(start_day=start, end_day=end, chunk_days=31)
    facts_rebuild(start_day=start, end_day=end, chunk_days=31)
    lifecycle_facts_rebuild()
    credit_facts_rebuild()  # cost/revenue day rows, from the credit facts just rebuilt
    nurtured_rebuild()  # enrolled new leads per day and group, from the facts just rebuilt
    holdout_rebuild()  # program enrollments per day, group and first opportunity
    landing_rollup_rebuild()  # landing-page day and span rows, from the landing facts
    stage_facts_rebuild()  # stage entries and populations per day
    ctx.log(f"reports: rollups rebuilt for {start} – {end}")
