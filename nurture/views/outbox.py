"""The Outbox: the emails the file backend wrote to var/mail/, shown safely, and failed sends.

Messages are parsed as data and never trusted: the list shows headers escaped by the
template; an HTML body is served only by :func:`outbox_body`, inside a sandboxed frame with
a strict Content-Security-Policy (no scripts, no forms, images only).
"""

from __future__ import annotations

from html import escape

from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_sameorigin

from crm.roles import MARKETING_ONLY, allow

from ..mailfiles import SAFE_NAME, mail_dir, mail_files, messages
from ..models import EmailSend
from .templates import FRAME_CSP

MAX_FILES = 50


@allow(MARKETING_ONLY)
def outbox(request):
    rows = []
    for path in mail_files(MAX_FILES):
        for index, msg in messages(path):
            rows.append(
                {
                    "file": path.name,
                    "index": index,
                    "to": str(msg.get("To", "")),
                    "subject": str(msg.get("Subject", "")),
                    "date": str(msg.get("Date", "")),
                    "unsubscribe": str(msg.get("List-Unsubscribe", "")),
                }
            )
            if len(rows) >= 200:
                break
    failed = (
        EmailSend.objects.filter(status__in=[EmailSend.Status.FAILED, EmailSend.Status.RETRYING])
        .select_related("contact", "program")
        .order_by("-created_at")[:50]
    )
    return render(
        request,
        "nurture/outbox.html",
        {
            "rows": rows,
            "failed": failed,
            "folder": str(mail_dir()),
            "backend": settings.EMAIL_BACKEND,
        },
    )


@allow(MARKETING_ONLY)
@xframe_options_sameorigin
def outbox_body(request, name: str, index: int):
    if not SAFE_NAME.match(name):
        raise Http404
    path = mail_dir() / name
    if not path.is_file():
        raise Http404
    for i, msg in messages(path):
        if i == index:
            part = msg.get_body(preferencelist=("html", "plain"))
            content = part.get_content() if part else ""
            if part is not None and part.get_content_type() != "text/html":
                content = f"<pre>{escape(content)}</pre>"
            response = HttpResponse(content, content_type="text/html; charset=utf-8")
            response["Content-Security-Policy"] = FRAME_CSP
            return response
    raise Http404
