"""Demo data for reports, called by `manage.py seed_demo` (settings.DEMO_SEEDERS)."""


def seed(ctx) -> None:
    """Fill reports's tables for the demo; `ctx` carries the seed, size and shared objects."""
