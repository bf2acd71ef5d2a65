"""Register pages under /reports/review/ (names prefixed ``review``)."""

from django.urls import path

from . import views

urlpatterns = [
    path("review/", views.register, name="review"),
    path("review/<int:pk>/", views.item_detail, name="review-item"),
    path("review/<int:pk>/review/", views.review_now, name="review-now"),
    path("review/<int:pk>/cadence/", views.cadence_edit, name="review-cadence"),
    path("review/<int:pk>/baseline/", views.baseline_edit, name="review-baseline"),
    path(
        "review/content/<slug:content_type>/",
        views.review_content_group,
        name="review-content-group",
    ),
    path("review/export.<str:fmt>", views.export, name="review-export"),
    path("trends/", views.long_term, name="long-term-trend"),
]
