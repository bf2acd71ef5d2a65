"""GET /api/v1/reports/<name>/: every report as JSON, CSV or XLSX."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.roles import EVERYONE

from ..export import report_export
from ..query import ATTRIBUTION_MODELS, GROUP_BY, ReportParamError
from ..registry import REPORTS, RESERVED, report_body, report_query

PARAMS = [
    OpenApiParameter("start", OpenApiTypes.DATE, description="First day (site time zone)"),
    OpenApiParameter("end", OpenApiTypes.DATE, description="Day after the last (exclusive)"),
    OpenApiParameter("campaign", OpenApiTypes.INT),
    OpenApiParameter("channel", OpenApiTypes.STR),
    OpenApiParameter("source", OpenApiTypes.STR),
    OpenApiParameter("segment", OpenApiTypes.INT),
    OpenApiParameter("owner", OpenApiTypes.INT),
    OpenApiParameter("attribution", OpenApiTypes.STR, enum=list(ATTRIBUTION_MODELS)),
    OpenApiParameter("compare", OpenApiTypes.STR, enum=["previous"]),
    OpenApiParameter(
        "group_by",
        OpenApiTypes.STR,
        enum=list(GROUP_BY),
        description="Funnel only: a funnel row set per campaign, source or segment (body "
        "'groups'; the 20 largest by new leads, the rest as '(other)')",
    ),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv", "xlsx"]),
]


class ReportAPIView(APIView):
    """A report's rows and totals; metric keys are METRICS.md names in snake_case."""

    access = EVERYONE
    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request, force=False):
        # ``?format=csv|xlsx`` is ours (a file download), not DRF's renderer override.
        return (JSONRenderer(), JSONRenderer.media_type)

    @extend_schema(
        parameters=PARAMS,
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
        description=(
            "Reports: dashboard, funnel, email, cost-per-mql, leads, revenue, customers. "
            "Body {report, start, end, filters, rows, totals} (+ funnel stages and "
            "nurtured_vs_non_nurtured). Rates are fractions, null on a zero denominator; "
            "money is rounded to cents. The period is [start, end) in the site time zone. "
            "format=xlsx downloads every table of the report page, a sheet each; format=csv "
            "the same tables one after another, each with a title row and its header row."
        ),
    )
    def get(self, request, name: str):
        if name in RESERVED or name not in REPORTS:
            return Response(
                {"detail": f"Unknown report '{name}'; use one of {', '.join(REPORTS)}."},
                status=404 if name in RESERVED else 400,
            )
        params = request.query_params
        fmt = params.get("format") or "json"
        if fmt not in ("json", "csv", "xlsx"):
            return Response({"detail": "'format' must be json, csv or xlsx."}, status=400)
        try:
            q = report_query(name, params)
        except ReportParamError as exc:
            return Response({"detail": str(exc)}, status=400)
        body = report_body(name, q)
        if fmt != "json":
            tables = REPORTS[name].page_tables(q)
            return report_export(fmt, tables, body, f"{name}-{q.start}-{q.end}")
        return Response(body)
