"""Demo data for nurture, called by `manage.py seed_demo` (settings.DEMO_SEEDERS)."""


def seed(ctx) -> None:
    """Fill nurture's tables for the demo; `ctx` carries the seed, size and shared objects."""
