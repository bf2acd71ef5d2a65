"""JSON errors with field-level messages for every API failure."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from crm.ingest import BatchTooLarge, IngestError
from crm.lifecycle import StageChangeError


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object changed; reload it and try again."
    default_code = "conflict"


def exception_handler(exc, context):
    """Map domain errors to HTTP and give every error a JSON body.

    - :class:`IngestError` → 400 with per-index field errors;
    - :class:`BatchTooLarge` → 413;
    - :class:`StageChangeError` → 409 with the contact's current stage;
    - Django's :class:`ValidationError` → 400 with its message dict.
    """
    if isinstance(exc, IngestError):
        return Response(
            {
                "detail": "The batch was refused; nothing was stored.",
                "errors": {str(k): v for k, v in exc.errors.items()},
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, BatchTooLarge):
        return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, StageChangeError):
        return Response(
            {"detail": str(exc), "current_stage": exc.current_stage},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, ValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    return drf_exception_handler(exc, context)
