"""Personal-data API: ``GET contacts/{id}/personal-data/`` and ``POST contacts/{id}/erase/``.

Admin only: an export is every piece of personal data held about one person, and an
erasure cannot be undone.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from crm import privacy
from crm.models import Contact
from crm.roles import ADMIN_ONLY

from . import serializers as s


class ContactPersonalDataView(APIView):
    access = ADMIN_ONLY

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        description="Everything held about the contact, across apps (crm.privacy).",
    )
    def get(self, request, pk: int):
        contact = get_object_or_404(Contact.objects.select_related("company", "owner"), pk=pk)
        return Response(privacy.contact_data_export(contact=contact))


class ContactEraseView(APIView):
    access = ADMIN_ONLY

    @extend_schema(
        request=None,
        responses={200: s.ContactSerializer},
        description=(
            "Anonymise the contact and what names it; aggregate reports keep their totals. "
            "Idempotent: erasing an erased contact changes nothing."
        ),
    )
    def post(self, request, pk: int):
        contact = get_object_or_404(Contact, pk=pk)
        if contact.erased_at is None:
            contact = privacy.contact_erase(contact=contact, by=request.user)
        contact = Contact.objects.select_related("company", "owner").get(pk=contact.pk)
        return Response(s.ContactSerializer(contact).data)


urlpatterns = [
    path(
        "contacts/<int:pk>/personal-data/",
        ContactPersonalDataView.as_view(),
        name="contact-personal-data",
    ),
    path("contacts/<int:pk>/erase/", ContactEraseView.as_view(), name="contact-erase"),
]
