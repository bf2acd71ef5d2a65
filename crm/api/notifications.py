"""The caller's in-app notices: list them (``?unread=1``), mark some or all read.

Every role has notices, so every role may use these endpoints (``EVERYONE``); the queryset
is the caller's own notices, so another user's never shows up and cannot be marked.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from crm.models import Notification
from crm.notifications import notifications_mark_read
from crm.roles import EVERYONE

MAX_IDS = 1000


class NotificationSerializer(serializers.ModelSerializer):
    unread = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "text", "url", "created_at", "read_at", "unread"]

    def get_unread(self, notice) -> bool:
        return notice.read_at is None


class MarkReadInputSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=MAX_IDS,
        help_text="Notices to mark read (yours; others are ignored).",
    )
    all = serializers.BooleanField(required=False, help_text="Mark every unread notice read.")

    def validate(self, data):
        if bool(data.get("all")) == ("ids" in data):
            raise serializers.ValidationError("Give either ids or all: true.")
        return data


class MarkReadResultSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="How many unread notices are read now.")


class NotificationFilter(django_filters.FilterSet):
    # The rest_framework flavour reads 1/0 and true/false (the plain one takes "1" for
    # "unknown" and would not filter at all).
    unread = django_filters.rest_framework.BooleanFilter(
        field_name="read_at", lookup_expr="isnull", label="1: unread only; 0: read only"
    )

    class Meta:
        model = Notification
        fields: list[str] = []


class NotificationViewSet(viewsets.GenericViewSet, mixins.ListModelMixin):
    """Your in-app notices, newest first."""

    access = EVERYONE
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]

    def get_queryset(self):
        return Notification.objects.for_user(self.request.user).order_by("-created_at", "-id")

    @extend_schema(request=MarkReadInputSerializer, responses={200: MarkReadResultSerializer})
    @action(detail=False, methods=["post"], url_path="read", filter_backends=[])
    def read(self, request):
        """Mark notices read: ``{"ids": [1, 2]}`` or ``{"all": true}``."""
        s = MarkReadInputSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        ids = None if s.validated_data.get("all") else s.validated_data["ids"]
        marked = notifications_mark_read(user=request.user, ids=ids)
        return Response(MarkReadResultSerializer({"marked": marked}).data)


def register(router) -> None:
    """Register the notices viewset on the /api/v1/ router."""
    router.register("notifications", NotificationViewSet, basename="notification")
