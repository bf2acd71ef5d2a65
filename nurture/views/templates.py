"""Email templates: list, editor, preview with a chosen contact, test-send to yourself."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.core.mail import get_connection
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from crm.models import Contact
from crm.roles import MARKETING_WRITES, allow

from .. import rendering
from ..forms import EmailTemplateForm, PreviewForm
from ..mail import build_email
from ..models import EmailTemplate
from ..services.sending import contact_merge_fields

# The rendered email runs in a sandboxed frame: no scripts, no forms, no network but images.
FRAME_CSP = (
    "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; sandbox; "
    "frame-ancestors 'self'"
)


@allow(MARKETING_WRITES)
def template_list(request):
    templates = EmailTemplate.objects.order_by("name")
    return render(request, "nurture/template_list.html", {"templates": templates})


@allow(MARKETING_WRITES)
def template_edit(request, pk: int | None = None):
    template = get_object_or_404(EmailTemplate, pk=pk) if pk else None
    form = EmailTemplateForm(request.POST or None, instance=template)
    if request.method == "POST" and form.is_valid():
        template = form.save()
        messages.success(request, "Template saved.")
        return redirect(template)
    preview = PreviewForm(request.GET or None)
    return render(
        request,
        "nurture/template_form.html",
        {"form": form, "template": template, "preview_form": preview},
    )


def _render_for(template: EmailTemplate, contact: Contact | None, user) -> rendering.Rendered:
    fields = contact_merge_fields(contact) if contact else {"first_name": "", "email": user.email}
    owner = contact.owner if contact and contact.owner_id else user
    profile = getattr(owner, "profile", None)
    context = rendering.merge_context(
        contact=fields,
        owner={
            "name": owner.get_full_name() or owner.get_username(),
            "first_name": owner.first_name,
            "email": owner.email,
            "signature": getattr(profile, "signature", "") if profile else "",
        },
        unsubscribe_url=f"{settings.SITE_URL}/u/preview",
    )
    return rendering.render_email(template, context)


@allow(MARKETING_WRITES)
@xframe_options_sameorigin
def template_preview(request, pk: int):
    """The rendered HTML body alone, for the sandboxed preview frame."""
    template = get_object_or_404(EmailTemplate, pk=pk)
    contact = None
    if (request.GET.get("contact") or "").isdigit():
        contact = (
            Contact.objects.select_related("company", "owner")
            .filter(pk=int(request.GET["contact"]))
            .first()
        )
    try:
        rendered = _render_for(template, contact, request.user)
    except rendering.TemplateRefused as exc:
        return HttpResponse(str(exc), content_type="text/plain", status=400)
    body = rendered.html or f"<pre>{rendering.escape(rendered.text)}</pre>"
    response = HttpResponse(body, content_type="text/html")
    response["Content-Security-Policy"] = FRAME_CSP
    return response


@allow(MARKETING_WRITES)
@require_POST
def template_test_send(request, pk: int):
    template = get_object_or_404(EmailTemplate, pk=pk)
    if not request.user.email:
        messages.error(request, "Your account has no email address to send the test to.")
        return redirect(template)
    rendered = _render_for(template, None, request.user)
    rendered.subject = f"[TEST] {rendered.subject}"
    message = build_email(
        to=request.user.email,
        rendered=rendered,
        message_id=f"test-{uuid.uuid4().hex}@{request.get_host().split(':')[0]}",
        unsubscribe_url=f"{settings.SITE_URL}/u/preview",
    )
    with get_connection() as conn:
        conn.send_messages([message])
    messages.success(request, f"Test email sent to {request.user.email}.")
    return redirect(template)
