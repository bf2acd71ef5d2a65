"""scoring pages (namespace ``scoring``)."""

from django.urls import path

from . import views

app_name = "scoring"
urlpatterns = [
    path("", views.rule_list, name="rules"),
    path("rules/new/", views.rule_edit, name="rule-new"),
    path("rules/<int:pk>/", views.rule_edit, name="rule-edit"),
    path("rules/<int:pk>/toggle/", views.rule_toggle, name="rule-toggle"),
    path("rules/<int:pk>/history/", views.rule_history, name="rule-history"),
    path("backtest/", views.rule_edit, name="backtest"),
    path("settings/", views.settings_edit, name="settings"),
    path("assignment/", views.assignment, name="assignment"),
    path("assignment/<int:pk>/delete/", views.assignment_delete, name="assignment-delete"),
    path("rescore/", views.rescore_start, name="rescore"),
    path("rescore/<int:pk>/", views.rescore_detail, name="rescore-detail"),
    path("health/", views.health, name="health"),
]
