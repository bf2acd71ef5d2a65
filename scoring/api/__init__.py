"""scoring REST API: ``register(router)`` for viewsets, ``urlpatterns`` for plain paths
(included by crm/api/urls.py)."""

from django.urls import path

from . import views


def register(router) -> None:
    """Register scoring viewsets on the /api/v1/ router."""
    router.register("scoring/rules", views.RuleViewSet, basename="scoring-rule")


urlpatterns = [
    path("scoring/settings/", views.SettingsView.as_view(), name="scoring-settings"),
    path("scoring/rescore/", views.RescoreView.as_view(), name="scoring-rescore"),
    path("scoring/rescore/<int:pk>/", views.RescoreRunView.as_view(), name="scoring-rescore-run"),
    path("scoring/backtest/", views.BacktestView.as_view(), name="scoring-backtest"),
    path("contacts/<int:pk>/score/", views.ContactScoreView.as_view(), name="contact-score"),
]
