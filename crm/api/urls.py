"""/api/v1/: one router for every app's viewsets (each app registers in its api module)."""

from django.urls import include, path
from rest_framework.routers import APIRootView, DefaultRouter

from crm.roles import EVERYONE
from nurture.api import register as register_nurture
from reports.api import urlpatterns as report_urls
from scoring.api import register as register_scoring
from scoring.api import urlpatterns as scoring_urls

from . import notifications, privacy, sales, segments, views


class ApiRootView(APIRootView):
    access = EVERYONE  # the index of endpoints, for signed-in users of any role


router = DefaultRouter()
router.APIRootView = ApiRootView
views.register(router)
segments.register(router)
sales.register(router)
notifications.register(router)
register_scoring(router)
register_nurture(router)

urlpatterns = [
    *views.urlpatterns,
    *privacy.urlpatterns,
    *sales.urlpatterns,
    *scoring_urls,
    path("reports/", include(report_urls)),
    path("", include(router.urls)),
]
