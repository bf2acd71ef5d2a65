"""The only public pages: open pixel, click redirect, unsubscribe (signed tokens only)."""

from __future__ import annotations

import base64

from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from crm.roles import public

from .. import tokens
from ..services import tracking

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _read(purpose: str, token: str) -> dict:
    try:
        return tokens.read(purpose, token)
    except tokens.BadToken:
        raise Http404("This link is not valid or has expired.") from None


@public
@never_cache
@require_http_methods(["GET", "HEAD"])
def open_pixel(request, token: str):
    payload = _read(tokens.OPEN, token)
    if request.method == "GET":
        tracking.open_record(
            message_id=payload["m"], user_agent=request.headers.get("User-Agent", "")
        )
    return HttpResponse(PIXEL, content_type="image/gif")


@public
@never_cache
@require_http_methods(["GET", "HEAD"])
def click(request, token: str):
    payload = _read(tokens.CLICK, token)
    index = payload.get("l")
    url = tracking.click_record(
        message_id=payload["m"],
        index=index if isinstance(index, int) else -1,
        user_agent=request.headers.get("User-Agent", ""),
    )
    if url is None:
        raise Http404("This link is not valid.")
    # Only a URL stored with the send can come back here: no open redirect.
    return HttpResponseRedirect(url)


@public
@csrf_exempt  # RFC 8058 one-click POST comes from the mail client: no cookie, no CSRF token
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    payload = _read(tokens.UNSUBSCRIBE, token)
    send = tracking.unsubscribe_send(payload["m"])
    if send is None:
        raise Http404("This link is not valid.")
    if request.method == "GET":
        return render(request, "nurture/unsubscribe.html", {"send": send, "token": token})
    program_only = request.POST.get("scope") == "program"
    tracking.contact_unsubscribe(message_id=payload["m"], program_only=program_only)
    return render(
        request, "nurture/unsubscribed.html", {"send": send, "program_only": program_only}
    )
