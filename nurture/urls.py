"""nurture pages (namespace ``nurture``)."""

from django.urls import path

from .views import outbox, programs, templates

app_name = "nurture"
urlpatterns = [
    path("programs/", programs.program_list, name="program-list"),
    path("programs/new/", programs.program_create, name="program-create"),
    path("programs/<int:pk>/", programs.program_detail, name="program-detail"),
    path("programs/<int:pk>/edit/", programs.program_edit, name="program-edit"),
    path("programs/<int:pk>/status/", programs.program_status, name="program-status"),
    path("programs/<int:pk>/enroll/", programs.program_enroll, name="program-enroll"),
    path("programs/<int:pk>/steps/", programs.step_add, name="step-add"),
    path("programs/<int:pk>/steps/<int:step_id>/", programs.step_edit, name="step-edit"),
    path("programs/<int:pk>/steps/<int:step_id>/move/", programs.step_move, name="step-move"),
    path("programs/<int:pk>/steps/<int:step_id>/delete/", programs.step_delete, name="step-delete"),
    path("programs/<int:pk>/triggers/", programs.trigger_add, name="trigger-add"),
    path(
        "programs/<int:pk>/triggers/<int:trigger_id>/delete/",
        programs.trigger_delete,
        name="trigger-delete",
    ),
    path(
        "programs/<int:pk>/enrollments/<int:enrollment_id>/exit/",
        programs.enrollment_exit,
        name="enrollment-exit",
    ),
    path("templates/", templates.template_list, name="template-list"),
    path("templates/new/", templates.template_edit, name="template-create"),
    path("templates/<int:pk>/", templates.template_edit, name="template-edit"),
    path("templates/<int:pk>/preview/", templates.template_preview, name="template-preview"),
    path("templates/<int:pk>/test-send/", templates.template_test_send, name="template-test"),
    path("outbox/", outbox.outbox, name="outbox"),
    path("outbox/<str:name>/<int:index>/", outbox.outbox_body, name="outbox-body"),
]
