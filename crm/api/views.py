"""CRM API: companies, contacts (+ upsert, history), campaigns (+ costs), activities.

Viewsets are thin: they parse, check the role rule (``access``), call a service and
serialise. List endpoints select their related rows (no N+1) and the big lists page
without COUNT(*) (see :class:`NoCountPagination`).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, mixins, pagination, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from crm import ingest, lifecycle, services
from crm.models import Activity, Campaign, CampaignCost, Company, Contact, LifecycleTransition
from crm.queries_contacts import page_slice
from crm.roles import ADMIN_WRITES, MARKETING_WRITES, SALES_AND_MARKETING_WRITE

from . import serializers as s
from .filters import ActivityFilter, CampaignFilter, CompanyFilter, ContactFilter


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class NoCountPagination(pagination.LimitOffsetPagination):
    """Offset pages with ``next``/``previous`` but no total: COUNT(*) on a filtered
    million-row table costs more than the page, and clients only follow ``next``."""

    default_limit = 50
    max_limit = 500

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        rows = list(queryset[self.offset : self.offset + self.limit + 1])
        self.has_next = len(rows) > self.limit
        self.count = None
        return rows[: self.limit]

    def get_next_link(self):
        if not self.has_next:
            return None
        return super().get_next_link() if self.count is not None else self._link(+1)

    def get_previous_link(self):
        return None if self.offset <= 0 else self._link(-1)

    def _link(self, direction: int):
        from rest_framework.utils.urls import remove_query_param, replace_query_param

        url = self.request.build_absolute_uri()
        offset = max(0, self.offset + direction * self.limit)
        url = replace_query_param(url, self.limit_query_param, self.limit)
        if offset == 0:
            return remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.offset_query_param, offset)

    def get_paginated_response(self, data):
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "properties": {
                "next": {"type": "string", "nullable": True},
                "previous": {"type": "string", "nullable": True},
                "results": schema,
            },
        }


def _batch(data, limit: int) -> list:
    """A JSON list (or one object) of at most ``limit`` items, else 400/413."""
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise exceptions.ValidationError({"detail": "Send a JSON object or a list of objects."})
    if len(data) > limit:
        raise PayloadTooLarge(
            f"A batch holds at most {limit} items; this one has {len(data)}. Split it."
        )
    return data


class NoDeleteMixin:
    """``DELETE`` of the record answers 405, saying what to do instead.

    Contacts, companies and campaigns are what the history hangs off: deleting a contact
    cascades to its deals, stage history and score ledger, and deleting a campaign to its
    costs (past cost per MQL would change). The web UI offers no delete for them either.
    (Only ``destroy``: nested routes such as a campaign's cost entries keep their DELETE.)
    """

    delete_instead = ""

    @extend_schema(exclude=True)
    def destroy(self, request, *args, **kwargs):
        raise exceptions.MethodNotAllowed("DELETE", detail=self.delete_instead)


class CompanyViewSet(NoDeleteMixin, viewsets.ModelViewSet):
    access = MARKETING_WRITES
    delete_instead = (
        "Companies are not deleted through the API: their contacts and deals refer to them."
    )
    serializer_class = s.CompanySerializer
    filterset_class = CompanyFilter
    queryset = Company.objects.select_related("owner").order_by("name", "id")

    def perform_create(self, serializer):
        try:
            serializer.instance = services.company_create(
                by=self.request.user, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from exc

    def perform_update(self, serializer):
        try:
            services.company_update(
                company=serializer.instance, by=self.request.user, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from exc


class ContactPagination(NoCountPagination):
    """Deep offsets join only the page's rows (crm.queries_contacts.page_slice)."""

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        rows = list(page_slice(queryset, self.offset, self.limit + 1))
        self.has_next = len(rows) > self.limit
        self.count = None
        return rows[: self.limit]


class ContactViewSet(NoDeleteMixin, viewsets.ModelViewSet):
    """Contacts: marketing and sales write, everyone with a role reads."""

    access = SALES_AND_MARKETING_WRITE
    delete_instead = (
        "Contacts are not deleted through the API: merge a duplicate into the record it "
        "duplicates, or erase a person's data (admin) with POST /api/v1/contacts/{id}/erase/."
    )
    serializer_class = s.ContactSerializer
    filterset_class = ContactFilter
    # Ordering is ContactFilter's ``sort=`` only (index-backed, id as the last key): a
    # generic ``?ordering=`` would override it with an unindexed, tie-less sort.
    filter_backends = [DjangoFilterBackend]
    pagination_class = ContactPagination
    queryset = Contact.objects.select_related("company", "owner", "scorecard").order_by(
        "-created_at", "-id"
    )

    def perform_create(self, serializer):
        serializer.instance = services.contact_create(
            by_user=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        services.contact_update(
            contact=serializer.instance, by=self.request.user, **serializer.validated_data
        )

    @extend_schema(
        request=s.UpsertItemSerializer(many=True),
        responses={200: s.UpsertResultSerializer},
        description="Create or update up to 1,000 contacts keyed by email. Any invalid item "
        "rejects the batch (400 with per-index errors); a stage move the lifecycle refuses "
        "is reported in `errors` while the rest of that contact is saved.",
    )
    @action(detail=False, methods=["post"])
    def upsert(self, request):
        items = _batch(request.data, settings.ACTIVITY_BATCH_LIMIT)
        rows, errors = [], {}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors[str(index)] = {"non_field_errors": ["Each item must be an object."]}
                continue
            shape = s.UpsertItemSerializer(data=item)
            if not shape.is_valid():
                errors[str(index)] = shape.errors
                continue
            clean, item_errors = services.contact_row_clean(shape.validated_data)
            if item_errors:
                errors[str(index)] = item_errors
            rows.append(clean)
        if errors:
            return Response(
                {"detail": "The batch was refused; nothing was stored.", "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        result = services.contacts_upsert(rows=rows, by=request.user, source="api")
        return Response(result.as_dict())

    @extend_schema(
        methods=["GET"], responses={200: s.TransitionSerializer(many=True)}, request=None
    )
    @extend_schema(
        methods=["POST"],
        request=s.HistoryImportSerializer,
        responses={201: s.TransitionSerializer, 409: OpenApiResponse(description="Not allowed")},
        description="Import a past stage change at its real time (crm.lifecycle.stage_import); "
        "admin only. Changes are appended oldest first: one older than the contact's latest "
        "change is refused (409).",
    )
    # Importing history rewrites what past periods' reports count (and can record a past
    # sales decision): an admin's data migration; everyone reads it.
    @action(
        detail=True,
        methods=["get", "post"],
        pagination_class=None,
        filterset_class=None,
        access=ADMIN_WRITES,
    )
    def history(self, request, pk=None):
        contact = self.get_object()
        if request.method == "GET":
            transitions = LifecycleTransition.objects.filter(contact=contact).select_related(
                "by_user"
            )
            return Response(s.TransitionSerializer(transitions, many=True).data)
        data = s.HistoryImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        transition = lifecycle.stage_import(
            contact=contact, by_user=request.user, **data.validated_data
        )
        return Response(s.TransitionSerializer(transition).data, status=status.HTTP_201_CREATED)

    def get_queryset(self):
        queryset = super().get_queryset()
        return (
            queryset
            if self.action == "list"
            else Contact.objects.select_related("company", "owner", "scorecard")
        )

    def filter_queryset(self, queryset):
        # Filters apply to the list only; ``history`` looks its contact up by id.
        return super().filter_queryset(queryset) if self.action == "list" else queryset


class CampaignViewSet(NoDeleteMixin, viewsets.ModelViewSet):
    access = MARKETING_WRITES
    delete_instead = (
        "Campaigns are not deleted: their costs and activities are report history. "
        "Set the status to archived instead."
    )
    serializer_class = s.CampaignSerializer
    filterset_class = CampaignFilter
    queryset = Campaign.objects.select_related("owner").order_by("-start_date", "name", "id")

    def perform_create(self, serializer):
        try:
            serializer.instance = services.campaign_create(
                by=self.request.user, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from exc

    def perform_update(self, serializer):
        try:
            services.campaign_update(
                campaign=serializer.instance, by=self.request.user, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from exc

    @extend_schema(methods=["GET"], responses={200: s.CostSerializer(many=True)}, request=None)
    @extend_schema(methods=["POST"], request=s.CostSerializer, responses={201: s.CostSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=None, filterset_class=None)
    def costs(self, request, pk=None):
        campaign = self.get_object()
        if request.method == "GET":
            costs = CampaignCost.objects.filter(campaign=campaign).prefetch_related("shared_with")
            return Response(s.CostSerializer(costs, many=True).data)
        data = s.CostSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        shared_with = fields.pop("shared_with", [])
        try:
            cost = services.cost_create(
                campaign=campaign, by=request.user, shared_with=shared_with, **fields
            )
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from exc
        return Response(s.CostSerializer(cost).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["PATCH"], request=s.CostSerializer, responses={200: s.CostSerializer})
    @extend_schema(methods=["DELETE"], request=None, responses={204: None})
    @action(
        detail=True,
        methods=["patch", "delete"],
        url_path=r"costs/(?P<cost_id>\d+)",
        pagination_class=None,
        filterset_class=None,
    )
    def cost(self, request, pk=None, cost_id=None):
        campaign = self.get_object()
        cost = get_object_or_404(CampaignCost, pk=cost_id, campaign=campaign)
        if request.method == "DELETE":
            services.cost_delete(cost=cost, by=request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = s.CostSerializer(cost, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        shared_with = fields.pop("shared_with", None)
        try:
            services.cost_update(cost=cost, by=request.user, shared_with=shared_with, **fields)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from exc
        return Response(s.CostSerializer(cost).data)

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "list":
            queryset = queryset.annotate(
                cost_total=Sum("costs__amount"), cost_entries=Count("costs")
            )
        return queryset


class ActivityViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Activities: everyone reads; marketing/admin record through crm.ingest."""

    access = MARKETING_WRITES
    serializer_class = s.ActivitySerializer
    filterset_class = ActivityFilter
    filter_backends = [DjangoFilterBackend]  # newest first, by id on ties: no other order
    pagination_class = NoCountPagination
    queryset = Activity.objects.order_by("-occurred_at", "-id")

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="ActivityOneOrBatch",
            serializers=[s.ActivityInSerializer, s.ActivityInSerializer(many=True)],
            resource_type_field_name=None,
            many=False,
        ),
        responses={
            201: s.IngestResultSerializer,
            200: OpenApiResponse(s.IngestResultSerializer, description="All were duplicates"),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Per-index errors; nothing stored"
            ),
            413: OpenApiResponse(OpenApiTypes.OBJECT, description="More than 1,000 items"),
        },
        description="Record one activity or a list of up to 1,000. `external_id` makes a "
        "retry harmless. An invalid item rejects the whole batch with every error listed.",
    )
    def create(self, request):
        items = _batch(request.data, settings.ACTIVITY_BATCH_LIMIT)
        result = ingest.activities_record(items=items, source="api", by_user=request.user)
        code = (
            status.HTTP_200_OK
            if result.created == 0 and result.duplicates
            else status.HTTP_201_CREATED
        )
        return Response(result.as_dict(), status=code)


urlpatterns: list = []


def register(router) -> None:
    """Register the CRM viewsets on the /api/v1/ router."""
    router.register("companies", CompanyViewSet, basename="company")
    router.register("contacts", ContactViewSet, basename="contact")
    router.register("campaigns", CampaignViewSet, basename="campaign")
    router.register("activities", ActivityViewSet, basename="activity")
