"""Demo data for scoring, called by `manage.py seed_demo` (settings.DEMO_SEEDERS)."""


def seed(ctx) -> None:
    """Fill scoring's tables for the demo; `ctx` carries the seed, size and shared objects."""
