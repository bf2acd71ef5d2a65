"""Report JSON API: /api/v1/reports/<name>/."""

urlpatterns: list = []
