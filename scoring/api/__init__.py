"""scoring REST API."""


def register(router) -> None:
    """Register scoring viewsets on the /api/v1/ router."""
