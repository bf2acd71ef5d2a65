"""Report JSON API: /api/v1/reports/<name>/ (the contract is in README "## Reports")."""

from django.urls import path

from .views import ReportAPIView

urlpatterns: list = [
    path("<str:name>/", ReportAPIView.as_view(), name="report-api"),
]
