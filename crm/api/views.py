"""CRM API viewsets (companies, contacts, activities, campaigns, deals, segments, MQLs)."""

urlpatterns: list = []


def register(router) -> None:
    """Register the CRM viewsets on the /api/v1/ router."""
