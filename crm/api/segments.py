"""Segment API: ``segments`` CRUD, ``segments/{id}/members/`` and ``segments/preview/``.

Definition errors answer 400 with the path of the bad part as the key, e.g.
``{"definition": {"all[2].op": ["\\"contains\\" is not valid for a number field (score)."]}}``.
"""

from django.db.models import Count
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from crm.filters import ContactFilter
from crm.models import Contact, Segment
from crm.roles import MARKETING_WRITES
from crm.segments import (
    DefinitionError,
    SegmentInUse,
    compile_definition,
    contact_ids_for_emails,
    segment_delete,
    segment_members,
    segment_members_add,
    segment_members_remove,
    segment_save,
)

SAMPLE_SIZE = 10


class SegmentSerializer(serializers.ModelSerializer):
    member_count = serializers.IntegerField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Segment
        fields = [
            "id",
            "name",
            "description",
            "kind",
            "definition",
            "version",
            "owner",
            "member_count",
            "refreshed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["version", "refreshed_at", "created_at", "updated_at"]


class SegmentInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=Segment.Kind.choices, default=Segment.Kind.DYNAMIC)
    definition = serializers.JSONField(required=False, default=dict)


class PreviewSerializer(serializers.Serializer):
    definition = serializers.JSONField()


class MemberChangeSerializer(serializers.Serializer):
    contact_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, default=list, max_length=10000
    )
    emails = serializers.ListField(
        child=serializers.CharField(max_length=254), required=False, default=list, max_length=10000
    )


class ContactSummarySerializer(serializers.ModelSerializer):
    score = serializers.IntegerField(source="scorecard.score", read_only=True)
    company = serializers.CharField(source="company.name", read_only=True, default=None)

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "first_name",
            "last_name",
            "job_title",
            "company",
            "country",
            "stage",
            "score",
            "email_status",
        ]


def _definition_error(exc: DefinitionError) -> ValidationError:
    return ValidationError({"definition": exc.as_dict()})


class SegmentViewSet(viewsets.ModelViewSet):
    """Segments: marketing and admin write; sales read."""

    access = MARKETING_WRITES
    serializer_class = SegmentSerializer

    def get_queryset(self):
        return (
            Segment.objects.select_related("owner")
            .annotate(member_count=Count("memberships"))
            .order_by("name", "id")
        )

    def _save(self, request, segment, payload=None):
        data = SegmentInputSerializer(data=request.data if payload is None else payload)
        data.is_valid(raise_exception=True)
        try:
            segment = segment_save(segment=segment, by=request.user, **data.validated_data)
        except DefinitionError as exc:
            errors = exc.as_dict()
            definition_errors = {k: v for k, v in errors.items() if k not in ("name", "kind")}
            body = {k: v for k, v in errors.items() if k in ("name", "kind")}
            if definition_errors:
                body["definition"] = definition_errors
            raise ValidationError(body) from exc
        return self.get_queryset().get(pk=segment.pk)

    def create(self, request, *args, **kwargs):
        segment = self._save(request, None)
        return Response(self.get_serializer(segment).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        segment = self.get_object()
        payload = None
        if kwargs.get("partial"):
            current = {
                "name": segment.name,
                "description": segment.description,
                "kind": segment.kind,
                "definition": segment.definition,
            }
            payload = {**current, **request.data}
        return Response(self.get_serializer(self._save(request, segment, payload)).data)

    def destroy(self, request, *args, **kwargs):
        try:
            segment_delete(segment=self.get_object())
        except SegmentInUse as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["get", "post"], url_path="members")
    def members(self, request, pk=None):
        """GET: the stored members (paginated), with the contact list's filters and
        ``sort=`` (``crm.filters.ContactFilter``, as on the segment's page; a bad value is
        a 400). POST (static only): add contact ids/emails."""
        segment = self.get_object()
        if request.method == "POST":
            return self._change_members(request, segment, segment_members_add)
        contacts = segment_members(segment).select_related("company", "scorecard")
        flt = ContactFilter(
            request.query_params,
            queryset=contacts.order_by("-created_at", "-id"),
            request=request,
        )
        if not flt.is_valid():
            raise ValidationError(flt.errors)
        page = self.paginate_queryset(flt.qs)
        return self.get_paginated_response(ContactSummarySerializer(page, many=True).data)

    @action(detail=True, methods=["post"], url_path="members/remove")
    def members_remove(self, request, pk=None):
        """Remove contact ids/emails from a static segment."""
        return self._change_members(request, self.get_object(), segment_members_remove)

    def _change_members(self, request, segment, service):
        if segment.kind != Segment.Kind.STATIC:
            raise ValidationError({"detail": "Members are added by hand only to static segments."})
        data = MemberChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids, unknown = contact_ids_for_emails(data.validated_data["emails"])
        changed = service(
            segment=segment,
            contact_ids=[*ids, *data.validated_data["contact_ids"]],
            by=request.user,
        )
        return Response({"changed": changed, "unknown_emails": unknown})

    @action(detail=False, methods=["post"], url_path="preview")
    def preview(self, request):
        """A definition in, the count and a sample of matching contacts out (nothing stored)."""
        data = PreviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            q = compile_definition(data.validated_data["definition"])
        except DefinitionError as exc:
            raise _definition_error(exc) from exc
        contacts = Contact.objects.filter(q)
        sample = contacts.select_related("company", "scorecard").order_by("-created_at", "-id")
        sample = sample[:SAMPLE_SIZE]
        return Response(
            {"count": contacts.count(), "sample": ContactSummarySerializer(sample, many=True).data}
        )


def register(router) -> None:
    """Register segment viewsets on the /api/v1/ router."""
    router.register("segments", SegmentViewSet, basename="segment")
