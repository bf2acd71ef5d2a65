"""Django admin for the CRM core (open to the admin role: staff users only)."""

from django.contrib import admin

from . import models

admin.site.site_header = "Leadcycle administration"


@admin.register(models.Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "domain", "industry", "size_band", "country", "owner"]
    list_filter = ["industry", "size_band", "country"]
    search_fields = ["name", "domain"]
    list_select_related = ["owner"]


@admin.register(models.Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = [
        "email",
        "first_name",
        "last_name",
        "company",
        "stage",
        "score",
        "email_status",
        "owner",
        "created_at",
    ]
    list_filter = ["stage", "email_status", "source", "consent_basis"]
    search_fields = ["email", "first_name", "last_name", "company__name"]
    list_select_related = ["company", "owner"]
    raw_id_fields = ["company", "owner", "acquired_by"]
    readonly_fields = ["stage", "stage_changed_at", "recycle_round", "score", "created_suppressed"]
