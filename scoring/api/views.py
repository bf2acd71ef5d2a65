"""Scoring API: rules, settings, rescore runs, back-test, a contact's score breakdown."""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.models import Contact
from crm.roles import ADMIN_READS_MARKETING, ADMIN_WRITES, EVERYONE, MARKETING_ONLY
from scoring import backtest, queries, services
from scoring.models import RescoreRun, Rule, ScoringSettings
from scoring.rules import active_from_parse

from .serializers import (
    BacktestSerializer,
    RescoreRunSerializer,
    RuleSerializer,
    RuleVersionSerializer,
    ScoreBreakdownSerializer,
    SettingsSerializer,
)


def _payload(request) -> dict:
    """Raw JSON values: the service validates them with the same messages as the UI."""
    data = dict(request.data.items()) if hasattr(request.data, "items") else {}
    if "active_from" in data:
        try:
            data["active_from"] = active_from_parse(data["active_from"])
        except ValueError as exc:
            raise ValidationError({"active_from": [str(exc)]}) from None
    return {k: v for k, v in data.items() if k in services.RULE_FIELDS}


class RuleViewSet(viewsets.ModelViewSet):
    """Scoring rules: everyone reads, only admins write (each save is a new version)."""

    access = ADMIN_WRITES
    serializer_class = RuleSerializer
    queryset = Rule.objects.all().order_by("kind", "name", "id")
    filterset_fields = ["kind", "enabled"]
    search_fields = ["name"]

    def create(self, request, *args, **kwargs):
        rule = services.rule_save(data=_payload(request), by=request.user)
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        rule = services.rule_save(rule=self.get_object(), data=_payload(request), by=request.user)
        return Response(RuleSerializer(rule).data)

    def destroy(self, request, *args, **kwargs):
        # Rules are switched off, never deleted: their ledger entries keep naming them.
        rule = services.rule_save(rule=self.get_object(), data={"enabled": False}, by=request.user)
        return Response(RuleSerializer(rule).data)

    @action(detail=True, methods=["get"])
    def versions(self, request, pk=None):
        rule = self.get_object()
        return Response(RuleVersionSerializer(rule.versions.all()[:100], many=True).data)


class SettingsView(APIView):
    access = ADMIN_WRITES
    serializer_class = SettingsSerializer

    def get(self, request):
        return Response(SettingsSerializer(ScoringSettings.load()).data)

    def put(self, request):
        keys = ("mql_threshold", "min_fit", "recycle_policy")
        data = {k: request.data.get(k) for k in keys if k in request.data}
        conf = services.settings_update(data=data, by=request.user)
        return Response(SettingsSerializer(conf).data)

    patch = put


class RescoreView(APIView):
    """GET the latest runs; POST starts a rescore and returns its run (with ``id``)."""

    access = ADMIN_READS_MARKETING
    serializer_class = RescoreRunSerializer

    @extend_schema(operation_id="scoring_rescore_list", responses=RescoreRunSerializer(many=True))
    def get(self, request):
        return Response(RescoreRunSerializer(RescoreRun.objects.all()[:20], many=True).data)

    def post(self, request):
        run = services.rescore_start(by=request.user)
        return Response(RescoreRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RescoreRunView(APIView):
    access = ADMIN_READS_MARKETING
    serializer_class = RescoreRunSerializer

    def get(self, request, pk):
        return Response(RescoreRunSerializer(get_object_or_404(RescoreRun, pk=pk)).data)


class BacktestView(APIView):
    """POST ``{"days": 90, "rules": [...draft rules...]}``: changes nothing."""

    access = MARKETING_ONLY
    serializer_class = BacktestSerializer

    def post(self, request):
        s = BacktestSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        draft = backtest.draft_rules_from(s.validated_data["rules"])
        return Response(backtest.backtest_run(draft=draft, days=s.validated_data["days"]))


class ContactScoreView(APIView):
    access = EVERYONE
    serializer_class = ScoreBreakdownSerializer

    def get(self, request, pk):
        contact = get_object_or_404(Contact, pk=pk)
        return Response({"contact": contact.pk, **queries.score_breakdown(contact_id=contact.pk)})
