"""Root URL configuration: every app's pages, the API and the public tracking URLs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from crm.roles import EVERYONE
from crm.views import auth, health

# The API schema and docs are for signed-in users of any role. The docs page is the "split"
# view: it serves its boot script as a file of its own (?script), not inline, which the
# site's CSP (script-src 'self') would refuse.
SpectacularAPIView.access = EVERYONE
SpectacularSwaggerSplitView.access = EVERYONE

urlpatterns = [
    path("", include("reports.urls")),
    path("crm/", include("crm.urls_app")),
    path("nurture/", include("nurture.urls")),
    path("scoring/", include("scoring.urls")),
    path("", include("nurture.urls_public")),
    path("accounts/login/", auth.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth.LogoutView.as_view(), name="logout"),
    path("accounts/password/", auth.PasswordChangeView.as_view(), name="password_change"),
    path("healthz", health.healthz, name="healthz"),
    path("api/v1/", include("crm.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler403 = "crm.views.errors.permission_denied"
handler404 = "crm.views.errors.page_not_found"
