"""Project middleware: deny-by-default role checks, security headers, the API body limit,
database-down 503."""

import logging

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

from .roles import view_access

log = logging.getLogger(__name__)


class RoleAccessMiddleware:
    """Refuse every view that does not declare who may use it.

    Anonymous users go to the log-in page; signed-in users without a role the view allows
    get 403. DRF views authenticate tokens themselves, so they are left to
    ``crm.api.permissions.RolePermission``, which applies the same rule; the Django admin
    site checks for itself that the user is staff of the admin role (crm.admin_site).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if _is_drf_view(view_func):
            return None
        match = request.resolver_match
        if match and "admin" in match.namespaces:
            return None
        rule = view_access(view_func)
        if rule is not None and rule.public:
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        from .roles import user_roles

        if rule is None or not rule.allows(user_roles(request.user), request.method):
            raise PermissionDenied
        return None


def _is_drf_view(view_func) -> bool:
    cls = getattr(view_func, "cls", None)
    if cls is None:
        return False
    from rest_framework.views import APIView

    return isinstance(cls, type) and issubclass(cls, APIView)


class SecurityHeadersMiddleware:
    """Content-Security-Policy and Permissions-Policy on every response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"
        )
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


class ApiBodyLimitMiddleware:
    """413 for an API request whose body is over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, before
    anything reads it.

    DRF's parsers read the request stream themselves, bypassing the check Django makes
    when ``request.body`` is read, so without this every API endpoint would parse (and
    hold in memory) a body of any size. Django's WSGI request reads at most
    Content-Length bytes, so that header is what counts.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit and request.path_info.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return JsonResponse(
                    {
                        "detail": f"The body is {length} bytes; the limit is {limit}. "
                        "Send smaller batches."
                    },
                    status=413,
                )
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """Answer 503 with ``Retry-After`` while the database is unreachable.

    A restart or fail-over of PostgreSQL surfaces as ``OperationalError``/``InterfaceError``
    from the view; a 500 would tell an API client its request was wrong. The transaction
    was rolled back, so a retry (with the same ``external_id``\\s) is safe. Django closes the
    broken connection at the end of the request and the next request reconnects.
    """

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    # PostgreSQL's "retry the transaction" classes: deadlock detected, serialization failure.
    CONFLICT_SQLSTATES = {"40P01", "40001"}

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        if getattr(exception.__cause__, "sqlstate", None) in self.CONFLICT_SQLSTATES:
            # The database is fine: this request lost a lock conflict and was rolled back.
            log.warning("transaction conflict, rolled back: %s", exception)
            detail = (
                "The request conflicted with a concurrent one and was rolled back; retry "
                "shortly (retrying with the same external_id is safe)."
            )
        else:
            log.warning("database unavailable: %s", exception)
            detail = (
                "The database is temporarily unavailable; retry shortly "
                "(retrying with the same external_id is safe)."
            )
        response = JsonResponse({"detail": detail}, status=503)
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        return response
