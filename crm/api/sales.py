"""Sales API: MQL queue (accept/reject) and deals."""

urlpatterns: list = []


def register(router) -> None:
    """Register sales viewsets on the /api/v1/ router."""
