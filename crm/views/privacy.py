"""Personal-data requests on the contact page: download everything (JSON), erase (admin only)."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from .. import privacy
from ..models import Contact
from ..roles import ADMIN_ONLY, allow


@require_GET
@allow(ADMIN_ONLY)
def contact_data_export(request, pk: int):
    contact = get_object_or_404(Contact.objects.select_related("company", "owner"), pk=pk)
    data = privacy.contact_data_export(contact=contact)
    response = HttpResponse(
        json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="contact-{contact.pk}-data.json"'
    return response


@require_POST
@allow(ADMIN_ONLY)
def contact_data_erase(request, pk: int):
    contact = get_object_or_404(Contact, pk=pk)
    if contact.erased_at is None:
        privacy.contact_erase(contact=contact, by=request.user)
        messages.success(request, f"Personal data of contact #{contact.pk} erased.")
    else:
        messages.info(request, "This contact's personal data was erased already.")
    return redirect("crm:contact-detail", pk=contact.pk)
