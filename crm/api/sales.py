"""Sales API: the MQL queue (list, accept, reject) and deals (CRUD, win, lose).

Thin viewsets: parse with an input serializer, call a :mod:`crm.sales` service, answer
with an output serializer. Only sales and admin write (``SALES_WRITES``); marketing reads.
A decision on a contact that is no longer an MQL is a 409 with its current stage, so a
retried request is harmless and says what happened.
"""

from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from crm import sales
from crm.models import Activity, Contact, Deal, RejectionReason
from crm.roles import SALES_WRITES
from crm.sales_queries import (
    QUEUE_SORTS,
    mark_overdue,
    mql_queue,
    queue_age_filter,
    with_recent_activities,
)

from .errors import Conflict
from .filters import StableOrderingFilter
from .serializers import MAX_YEAR, MIN_YEAR, AwareDateTimeField, _owner_field

urlpatterns: list = []


# --- Serializers ---------------------------------------------------------------------------


MAX_AMOUNT = 10**12


class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """A date-time filter that refuses years outside [MIN_YEAR, MAX_YEAR] with a 400."""

    def filter(self, qs, value):
        if value is not None and not MIN_YEAR <= value.year <= MAX_YEAR:
            raise serializers.ValidationError(
                {self.field_name: f"Give a time between {MIN_YEAR} and {MAX_YEAR}."}
            )
        return super().filter(qs, value)


class UserRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    name = serializers.SerializerMethodField()

    def get_name(self, user) -> str:
        return user.get_full_name() or user.get_username()


class CompanyRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ActivityRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Activity
        fields = ["id", "kind", "occurred_at", "campaign"]


class MQLSerializer(serializers.ModelSerializer):
    """One row of the queue: who, score, how long it has waited, what it did last."""

    company = CompanyRefSerializer(allow_null=True)
    owner = UserRefSerializer(allow_null=True)
    mql_at = serializers.DateTimeField(source="queued_at", allow_null=True)
    age_hours = serializers.SerializerMethodField()
    overdue = serializers.BooleanField()
    recent_activities = ActivityRefSerializer(many=True)
    score = serializers.IntegerField(source="scorecard.score", read_only=True)

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "first_name",
            "last_name",
            "job_title",
            "company",
            "owner",
            "stage",
            "score",
            "mql_at",
            "age_hours",
            "overdue",
            "recent_activities",
        ]

    def get_age_hours(self, contact) -> float | None:
        return round(contact.age.total_seconds() / 3600, 1) if contact.age is not None else None


class AcceptInputSerializer(serializers.Serializer):
    amount = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, allow_null=True
    )
    deal_name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class RejectInputSerializer(serializers.Serializer):
    reason = serializers.SlugRelatedField(
        slug_field="code", queryset=RejectionReason.objects.filter(active=True)
    )
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class DecisionSerializer(serializers.Serializer):
    contact = serializers.IntegerField(source="transition.contact_id")
    from_stage = serializers.CharField(source="transition.from_stage")
    stage = serializers.CharField(source="transition.to_stage")
    reason = serializers.CharField(source="transition.reason_code")
    recycle_round = serializers.IntegerField(source="transition.recycle_round")
    at = serializers.DateTimeField(source="transition.at")
    deal = serializers.IntegerField(source="deal.pk", allow_null=True, default=None)


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    current_stage = serializers.CharField()
    decided_by = serializers.CharField(required=False)
    decided_at = serializers.DateTimeField(required=False, allow_null=True)


class DealSerializer(serializers.ModelSerializer):
    contact_stage = serializers.CharField(source="contact.stage", read_only=True)
    owner = UserRefSerializer(allow_null=True)

    class Meta:
        model = Deal
        fields = [
            "id",
            "name",
            "contact",
            "contact_stage",
            "company",
            "amount",
            "status",
            "owner",
            "created_at",
            "closed_at",
            "lost_reason",
        ]


class DealCreateSerializer(serializers.Serializer):
    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    created_at = AwareDateTimeField(required=False)

    def validate_created_at(self, value):
        if value > timezone.now():
            raise serializers.ValidationError("A deal cannot be created in the future.")
        return value


class DealUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0, required=False)
    owner = _owner_field()


class DealWinSerializer(serializers.Serializer):
    closed_at = AwareDateTimeField(required=False)

    def validate_closed_at(self, value):
        if value > timezone.now():
            raise serializers.ValidationError("A deal cannot close in the future.")
        return value


class DealLoseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200)
    recycle_reason = serializers.SlugRelatedField(
        slug_field="code",
        queryset=RejectionReason.objects.filter(
            active=True, outcome=RejectionReason.Outcome.RECYCLE
        ),
        required=False,
        allow_null=True,
        help_text="A not-ready reason code: recycles the contact into nurture.",
    )


# --- MQL queue ------------------------------------------------------------------------------


class MQLFilterSerializer(serializers.Serializer):
    owner = serializers.CharField(
        required=False, help_text="A user id, 'me', or 'none' for unassigned."
    )
    min_age_hours = serializers.FloatField(required=False, min_value=0)
    max_age_hours = serializers.FloatField(required=False, min_value=0)
    min_score = serializers.IntegerField(required=False)
    ordering = serializers.ChoiceField(choices=list(QUEUE_SORTS), required=False)

    def validate_owner(self, value: str) -> str:
        if value not in ("me", "none") and not value.isdigit():
            raise serializers.ValidationError("Give a user id, 'me' or 'none'.")
        return value


class MQLViewSet(viewsets.GenericViewSet, mixins.ListModelMixin):
    """The MQL queue: contacts in stage ``mql``, oldest-waiting or highest-score first."""

    access = SALES_WRITES
    serializer_class = MQLSerializer
    filter_backends: list = []  # parameters are validated by MQLFilterSerializer

    def get_queryset(self):
        params = MQLFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        p = params.validated_data
        qs = mql_queue(tab="team", sort=p.get("ordering", "score"))
        owner = p.get("owner")
        if owner == "me":
            qs = qs.filter(owner=self.request.user)
        elif owner == "none":
            qs = qs.filter(owner__isnull=True)
        elif owner:
            qs = qs.filter(owner_id=int(owner))
        if "min_score" in p:
            qs = qs.filter(scorecard__score__gte=p["min_score"])
        qs = queue_age_filter(
            qs, min_hours=p.get("min_age_hours"), max_hours=p.get("max_age_hours")
        )
        return with_recent_activities(qs)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        mark_overdue(page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def _decide(self, decide):
        try:
            decision = decide()
        except sales.AlreadyDecided as err:
            return Response(
                {
                    "detail": str(err),
                    "current_stage": err.current_stage,
                    "decided_by": err.decided_by,
                    "decided_at": err.decided_at,
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(DecisionSerializer(decision).data)

    @extend_schema(
        request=AcceptInputSerializer,
        responses={200: DecisionSerializer, 409: OpenApiResponse(ConflictSerializer)},
    )
    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None):
        """Accept the MQL (→ ``sql``); with ``amount`` also open a deal (→ ``opportunity``)."""
        contact = get_object_or_404(Contact, pk=pk)
        data = _valid(AcceptInputSerializer, request)
        return self._decide(
            lambda: sales.mql_accept(
                contact_id=contact.pk,
                by=request.user,
                amount=data.get("amount"),
                deal_name=data.get("deal_name", ""),
            )
        )

    @extend_schema(
        request=RejectInputSerializer,
        responses={200: DecisionSerializer, 409: OpenApiResponse(ConflictSerializer)},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        """Reject the MQL with a reason: not ready → ``recycled``, bad fit → ``disqualified``."""
        contact = get_object_or_404(Contact, pk=pk)
        data = _valid(RejectInputSerializer, request)
        return self._decide(
            lambda: sales.mql_reject(
                contact_id=contact.pk,
                by=request.user,
                reason_code=data["reason"].code,
                note=data.get("note", ""),
            )
        )


def _valid(serializer_class, request) -> dict:
    s = serializer_class(data=request.data)
    s.is_valid(raise_exception=True)
    return s.validated_data


# --- Deals -----------------------------------------------------------------------------------


class DealFilter(django_filters.FilterSet):
    created_after = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = BoundedIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    closed_after = BoundedIsoDateTimeFilter(field_name="closed_at", lookup_expr="gte")
    closed_before = BoundedIsoDateTimeFilter(field_name="closed_at", lookup_expr="lt")
    min_amount = django_filters.NumberFilter(
        field_name="amount", lookup_expr="gte", min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT
    )
    max_amount = django_filters.NumberFilter(
        field_name="amount", lookup_expr="lte", min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT
    )

    class Meta:
        model = Deal
        fields = ["status", "owner", "contact", "company"]


class DealViewSet(viewsets.ModelViewSet):
    """Deals. Creating one moves its contact to ``opportunity``; ``win`` to ``customer``."""

    access = SALES_WRITES
    serializer_class = DealSerializer
    filterset_class = DealFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend, StableOrderingFilter]
    ordering_fields = ["created_at", "closed_at", "amount"]

    def get_queryset(self):
        return Deal.objects.select_related("contact", "owner").order_by("-created_at", "-id")

    def _out(self, deal, code=status.HTTP_200_OK):
        deal = self.get_queryset().get(pk=deal.pk)
        return Response(DealSerializer(deal).data, status=code)

    @extend_schema(request=DealCreateSerializer, responses={201: DealSerializer})
    def create(self, request, *args, **kwargs):
        data = _valid(DealCreateSerializer, request)
        deal = sales.deal_create(
            contact=data["contact"],
            amount=data["amount"],
            name=data.get("name", ""),
            created_at=data.get("created_at"),
            by=request.user,
        )
        return self._out(deal, status.HTTP_201_CREATED)

    @extend_schema(request=DealUpdateSerializer, responses={200: DealSerializer})
    def update(self, request, *args, **kwargs):
        deal = self.get_object()
        s = DealUpdateSerializer(data=request.data, partial=kwargs.get("partial", False))
        s.is_valid(raise_exception=True)
        try:
            deal = sales.deal_update(deal=deal, by=request.user, **s.validated_data)
        except sales.DealClosed as err:
            raise Conflict(str(err)) from err
        return self._out(deal)

    def destroy(self, request, *args, **kwargs):
        try:
            sales.deal_delete(deal=self.get_object(), by=request.user)
        except sales.DealClosed as err:
            raise Conflict(f"{err} Won and lost deals are kept for revenue reports.") from err
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=DealWinSerializer, responses={200: DealSerializer})
    @action(detail=True, methods=["post"])
    def win(self, request, pk=None):
        """Mark the deal won; its contact becomes a customer."""
        deal = self.get_object()
        data = _valid(DealWinSerializer, request)
        try:
            deal = sales.deal_win(deal=deal, by=request.user, closed_at=data.get("closed_at"))
        except sales.DealClosed as err:
            raise Conflict(str(err)) from err
        return self._out(deal)

    @extend_schema(request=DealLoseSerializer, responses={200: DealSerializer})
    @action(detail=True, methods=["post"])
    def lose(self, request, pk=None):
        """Mark the deal lost with a reason; ``recycle_reason`` recycles the contact."""
        deal = self.get_object()
        data = _valid(DealLoseSerializer, request)
        recycle = data.get("recycle_reason")
        try:
            deal = sales.deal_lose(
                deal=deal,
                by=request.user,
                reason=data["reason"],
                recycle_reason_code=recycle.code if recycle else None,
            )
        except sales.DealClosed as err:
            raise Conflict(str(err)) from err
        return self._out(deal)


def register(router) -> None:
    """Register sales viewsets on the /api/v1/ router."""
    router.register("mqls", MQLViewSet, basename="mql")
    router.register("deals", DealViewSet, basename="deal")
