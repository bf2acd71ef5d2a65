"""Report pages; the dashboard is the home page (namespace ``reports``, plus ``home``)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="home"),
]
