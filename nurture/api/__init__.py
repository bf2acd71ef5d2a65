"""nurture REST API."""


def register(router) -> None:
    """Register nurture viewsets on the /api/v1/ router."""
