"""Report JSON API: /api/v1/reports/<name>/ (the contract is in README "## Reports")."""

from django.urls import path

from ..review.api import ReviewRegisterView
from .views import ReportAPIView

urlpatterns: list = [
    path("review/", ReviewRegisterView.as_view(), name="report-review-api"),
    path("<str:name>/", ReportAPIView.as_view(), name="report-api"),
]
