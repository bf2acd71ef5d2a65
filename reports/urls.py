"""Report pages; the dashboard is the home page (plus the global name ``home``).

Each report has its own explicit path so ``/reports/review/…`` stays free for the review
register.
"""

from django.urls import include, path

from . import views

REPORT_PAGES = ["funnel", "email", "cost-per-mql", "leads", "revenue", "customers"]

urlpatterns = [
    path("", views.dashboard, name="home"),
    path("reports/", views.index, name="reports-index"),
    path("reports/", include("reports.review.urls")),
    path("reports/drilldown/", views.drilldown, name="reports-drilldown"),
    *[
        path(f"reports/{name}/", views.report_page, {"name": name}, name=f"report-{name}")
        for name in REPORT_PAGES
    ],
]
