"""nurture REST API: programs (with steps and enrollments) and email templates."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from crm.models import Segment
from crm.roles import MARKETING_WRITES

from ..models import EmailTemplate, Program, Step
from ..services.enrollment import contacts_enroll, program_enroll_segment
from ..services.programs import (
    ProgramArchived,
    program_change_note,
    program_edited,
    program_set_status,
    step_create,
)
from . import serializers as s


class ProgramViewSet(viewsets.ModelViewSet):
    """Nurture programs; ``steps`` and ``enrollments`` are nested actions."""

    access = MARKETING_WRITES
    serializer_class = s.ProgramSerializer
    queryset = Program.objects.prefetch_related(
        Prefetch("steps", queryset=Step.objects.order_by("position", "id"))
    ).order_by("name")
    filterset_fields = ["status", "campaign"]

    def perform_create(self, serializer):
        with transaction.atomic():
            program = serializer.save(created_by=self.request.user)
            program_change_note(program=program, by=self.request.user, summary="Program created")

    def perform_update(self, serializer):
        # A status change goes through the service (archiving ends the live enrollments).
        status_to = serializer.validated_data.pop("status", None)
        before = serializer.instance
        changed = [
            name
            for name, value in serializer.validated_data.items()
            if getattr(before, name) != value
        ]
        with transaction.atomic():
            program = serializer.save()
            program_edited(program=program, fields=changed, by=self.request.user)
            if status_to is not None and status_to != program.status:
                try:
                    program_set_status(program=program, status=status_to, by=self.request.user)
                except ProgramArchived as exc:
                    raise ValidationError({"status": [str(exc)]}) from exc

    @extend_schema(request=s.StepSerializer, responses=s.StepSerializer(many=True))
    @action(detail=True, methods=["get", "post"])
    def steps(self, request, pk=None):
        program = self.get_object()
        if request.method == "POST":
            serializer = s.StepSerializer(data=request.data, context={"program": program})
            serializer.is_valid(raise_exception=True)
            data = {k: v for k, v in serializer.validated_data.items() if k != "position"}
            step = step_create(step=Step(program=program, **data), by=request.user)
            return Response(s.StepSerializer(step).data, status=status.HTTP_201_CREATED)
        steps = program.steps.order_by("position", "id")
        return Response(s.StepSerializer(steps, many=True).data)

    @extend_schema(request=s.EnrollInputSerializer, responses=s.EnrollmentSerializer(many=True))
    @action(detail=True, methods=["get", "post"])
    def enrollments(self, request, pk=None):
        program = self.get_object()
        if request.method == "POST":
            serializer = s.EnrollInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            entered = 0
            segment_id = serializer.validated_data.get("segment")
            if segment_id:
                get_object_or_404(Segment, pk=segment_id)
                entered += program_enroll_segment(
                    program=program, segment_id=segment_id, source="api"
                )
            ids = serializer.validated_data.get("contacts")
            if ids:
                with transaction.atomic():
                    entered += contacts_enroll(program=program, contact_ids=ids, source="api")
            return Response({"entered": entered}, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(program.enrollments.order_by("-entered_at", "-id"))
        return self.get_paginated_response(s.EnrollmentSerializer(page, many=True).data)


class EmailTemplateViewSet(viewsets.ModelViewSet):
    access = MARKETING_WRITES
    serializer_class = s.EmailTemplateSerializer
    queryset = EmailTemplate.objects.order_by("name")


def register(router) -> None:
    """Register nurture viewsets on the /api/v1/ router."""
    router.register("programs", ProgramViewSet, basename="program")
    router.register("email-templates", EmailTemplateViewSet, basename="email-template")
