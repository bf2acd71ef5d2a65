"""Segment API (segments CRUD, members, preview)."""


def register(router) -> None:
    """Register segment viewsets on the /api/v1/ router."""
