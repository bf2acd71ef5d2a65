"""/api/v1/reports/review/: the register rows (GET; ``?format=csv|xlsx`` downloads it, as
every report does) and recording a review (POST)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.roles import MARKETING_WRITES

from . import services
from .export import register_download
from .models import Review, ReviewItem
from .register import register_rows


class ReviewOut(serializers.ModelSerializer):
    reviewer = serializers.StringRelatedField()

    class Meta:
        model = Review
        fields = [
            "id",
            "reviewed_at",
            "reviewer",
            "decision",
            "notes",
            "period_start",
            "period_end",
            "metrics",
        ]


class RegisterRowOut(serializers.Serializer):
    id = serializers.IntegerField(source="item.pk")
    type = serializers.CharField(source="item.type")
    name = serializers.CharField(source="item.name")
    content_type = serializers.CharField(source="item.content_type")
    owner = serializers.CharField(source="item.owner", allow_null=True)
    cadence_days = serializers.IntegerField(source="item.effective_cadence_days")
    next_due = serializers.DateTimeField()
    overdue = serializers.BooleanField()
    alert = serializers.CharField()
    baseline = serializers.JSONField(source="item.baseline")
    baseline_source = serializers.CharField(source="item.baseline_source")
    last_review = ReviewOut(allow_null=True)


class RegisterOut(serializers.Serializer):
    report = serializers.CharField()
    rows = RegisterRowOut(many=True)


class ReviewIn(serializers.Serializer):
    item = serializers.IntegerField()
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


FORMATS = ("json", "csv", "xlsx")


class ReviewRegisterView(APIView):
    access = MARKETING_WRITES
    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request, force=False):
        # ``?format=csv|xlsx`` is ours (a file download), not DRF's renderer override, which
        # would answer 404 for want of a csv renderer (as reports.api.views does).
        return (JSONRenderer(), JSONRenderer.media_type)

    @extend_schema(
        responses=RegisterOut,
        parameters=[
            OpenApiParameter("type", str, enum=ReviewItem.Type.values, required=False),
            OpenApiParameter("format", str, enum=list(FORMATS), required=False),
        ],
    )
    def get(self, request):
        item_type = request.query_params.get("type") or None
        if item_type and item_type not in ReviewItem.Type.values:
            raise serializers.ValidationError(
                {"type": f"Use one of {', '.join(ReviewItem.Type.values)}."}
            )
        fmt = request.query_params.get("format") or "json"
        if fmt not in FORMATS:
            return Response({"detail": "'format' must be json, csv or xlsx."}, status=400)
        if fmt != "json":
            return register_download(fmt, item_type=item_type)
        rows = register_rows(item_type=item_type)
        return Response(RegisterOut({"report": "review", "rows": rows}).data)

    @extend_schema(request=ReviewIn, responses={201: ReviewOut})
    def post(self, request):
        data = ReviewIn(data=request.data)
        data.is_valid(raise_exception=True)
        item = get_object_or_404(ReviewItem, pk=data.validated_data["item"])
        review = services.review_record(
            item=item,
            reviewer=request.user,
            decision=data.validated_data["decision"],
            notes=data.validated_data["notes"],
        )
        return Response(ReviewOut(review).data, status=status.HTTP_201_CREATED)
