"""Django admin for the CRM core (the site is open to the admin role only: crm.admin_site).

The admin is no side door: history the pages and the API never change — stage
transitions, re-openings, segment versions and changes, closed deals — is read-only here
too, and edits the API makes through a service go through the same service.
"""

from django import forms
from django.contrib import admin
from django.db import transaction

from . import campaign_members, ingest, models, sales
from .filters import staff_users
from .models.choices import Source
from .roles import Role, has_role


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only their services write (history, derived state): viewed here, never changed."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
    list_select_related = ["company", "owner", "scorecard"]
    raw_id_fields = ["company", "owner", "acquired_by"]
    readonly_fields = ["stage", "stage_changed_at", "recycle_round", "score", "created_suppressed"]

    @admin.display(description="score", ordering="scorecard__score")
    def score(self, obj):
        return obj.scorecard.score

    def save_model(self, request, obj, form, change):
        # acquired_by may change here, outside crm.services: campaign members follow it.
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            campaign_members.members_acquired_sync(contact_ids=[obj.pk])


@admin.register(models.ContactScore)
class ContactScoreAdmin(ReadOnlyAdmin):
    """Read-only: the scoring engine writes scores, the triggers stage and owner."""

    list_display = ["contact", "score", "stage", "owner"]
    list_filter = ["stage"]
    search_fields = ["contact__email"]
    list_select_related = ["contact", "owner"]
    ordering = ["-score", "contact"]


@admin.register(models.QueuedBatch)
class QueuedBatchAdmin(admin.ModelAdmin):
    """The activity queue's backlog; parked batches are retried from here after a fix."""

    list_display = ["pk", "size", "queued_at", "attempts", "retry_at", "parked_at"]
    list_filter = [("parked_at", admin.EmptyFieldListFilter)]
    readonly_fields = [f.name for f in models.QueuedBatch._meta.fields]
    actions = ["retry"]

    def has_retry_permission(self, request) -> bool:
        return has_role(request.user, Role.ADMIN)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # deleting a batch would silently skip its scores, segments and facts

    @admin.action(description="Retry the selected batches now", permissions=["retry"])
    def retry(self, request, queryset):
        from .activity_queue import batches_retry

        count = batches_retry(batch_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} batch(es) queued again.")


@admin.register(models.UserProfile)
class UserProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "title", "territory", "accepts_leads"]
    list_filter = ["accepts_leads"]
    search_fields = ["user__username", "user__email", "territory"]
    list_select_related = ["user"]


@admin.register(models.Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["text", "user", "created_at", "read_at"]
    list_filter = [("read_at", admin.EmptyFieldListFilter)]
    search_fields = ["text", "user__username"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"


class CampaignCostInline(admin.TabularInline):
    model = models.CampaignCost
    fk_name = "campaign"
    extra = 0
    filter_horizontal = ["shared_with"]


@admin.register(models.Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "channel",
        "type",
        "status",
        "start_date",
        "end_date",
        "budget",
        "owner",
    ]
    list_filter = ["channel", "type", "status"]
    search_fields = ["name"]
    list_select_related = ["owner"]
    inlines = [CampaignCostInline]


@admin.register(models.CampaignCost)
class CampaignCostAdmin(admin.ModelAdmin):
    list_display = [
        "campaign",
        "period_start",
        "period_end",
        "amount",
        "category",
        "shared",
        "split",
    ]
    list_filter = ["category", "shared", "split"]
    search_fields = ["campaign__name", "note"]
    list_select_related = ["campaign"]
    filter_horizontal = ["shared_with"]
    date_hierarchy = "period_start"


class ActivityAdminForm(forms.ModelForm):
    """An activity to record, checked by ingestion's own rules (``crm.ingest``)."""

    url = forms.URLField(required=False, max_length=2000, assume_scheme="https")

    class Meta:
        model = models.Activity
        fields = [
            "contact",
            "kind",
            "occurred_at",
            "campaign",
            "url",
            "is_machine",
            "external_id",
            "message_id",
            "details",
        ]

    def clean(self):
        data = super().clean()
        if not self.errors:
            for name, messages in ingest.validate_items([_ingest_item(data)]).get(0, {}).items():
                self.add_error(name if name in self.fields else None, messages)
        return data


def _ingest_item(data) -> dict:
    return {
        "contact": data["contact"].pk,
        "kind": data["kind"],
        "occurred_at": data["occurred_at"],
        "campaign": data["campaign"].pk if data.get("campaign") else None,
        "url": data.get("url") or "",
        "is_machine": bool(data.get("is_machine")),
        "external_id": data.get("external_id") or None,
        "message_id": data.get("message_id") or "",
        "details": data.get("details") or {},
    }


@admin.register(models.Activity)
class ActivityAdmin(admin.ModelAdmin):
    """Activities are facts the product has acted on — scores and their ledger, segments,
    report facts, nurture triggers, campaign members. An admin adds one through
    ``crm.ingest`` (every "activities recorded" handler runs, as for the API), and never
    edits or deletes one here: the ledger and the facts would keep what the activity was.
    Erasure and merges are the services that rewrite activities."""

    form = ActivityAdminForm
    list_display = ["occurred_at", "kind", "contact", "campaign", "external_id", "is_machine"]
    list_filter = ["kind", "is_machine"]
    # Exact-match lookups only: a LIKE over millions of activities would time out.
    search_fields = ["=external_id", "=contact__email", "=message_id"]
    list_select_related = ["contact", "campaign"]
    raw_id_fields = ["contact", "campaign"]
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        result = ingest.activities_record(
            items=[_ingest_item(form.cleaned_data)], source=Source.OTHER, by_user=request.user
        )
        (obj.pk,) = [a.pk for a in result.activities]


@admin.register(models.LifecycleTransition)
class LifecycleTransitionAdmin(ReadOnlyAdmin):
    """Read-only: history is written by crm.lifecycle alone and kept forever."""

    list_display = [
        "contact",
        "from_stage",
        "to_stage",
        "at",
        "by_user",
        "by_system",
        "reason_code",
    ]
    list_filter = ["to_stage", "from_stage", "by_system"]
    search_fields = ["=contact__email", "reason_code"]
    list_select_related = ["contact", "by_user"]
    show_full_result_count = False


@admin.register(models.Reopening)
class ReopeningAdmin(ReadOnlyAdmin):
    """Read-only: marked by crm.ingest once per recycle round (METRICS.md); reports count them."""

    list_display = ["contact", "recycle_round", "at"]
    search_fields = ["=contact__email"]
    list_select_related = ["contact"]


class DealAdminForm(forms.ModelForm):
    # The bounds crm.sales enforces, checked by the form so a bad value is a form error.
    amount = forms.DecimalField(max_digits=14, decimal_places=2, min_value=0)

    class Meta:
        model = models.Deal
        fields = ["name", "amount", "owner"]


@admin.register(models.Deal)
class DealAdmin(admin.ModelAdmin):
    """Deals as the API treats them (crm.api.sales).

    An open deal's name, amount and owner are edited, and an open deal deleted, through
    crm.sales, which re-checks under a row lock that it is still open. Won and lost deals
    are revenue history: view only. Deals are opened, won and lost on the deal pages or
    the API, never here: each moves its contact's stage.
    """

    form = DealAdminForm
    list_display = ["__str__", "contact", "company", "amount", "status", "owner", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "contact__email", "company__name"]
    list_select_related = ["contact", "company", "owner"]
    fields = [
        "name",
        "amount",
        "owner",
        "contact",
        "company",
        "status",
        "created_at",
        "closed_at",
        "lost_reason",
    ]
    readonly_fields = ["contact", "company", "status", "created_at", "closed_at", "lost_reason"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return _is_open(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        # Also asked per deal by a delete action and by the cascade of a contact's delete:
        # a selection or a contact with a closed deal is refused as a whole.
        return _is_open(obj) and super().has_delete_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":  # an active user with a role, as the API requires
            kwargs["queryset"] = staff_users()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        sales.deal_update(deal=obj, by=request.user, **changed)

    def delete_model(self, request, obj):
        sales.deal_delete(deal=obj, by=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():  # all or none, like Django's own bulk delete
            for deal in queryset:
                sales.deal_delete(deal=deal, by=request.user)


def _is_open(deal: models.Deal | None) -> bool:
    """No deal (the list, the add button) or an open one: the closed ones are history."""
    return deal is None or deal.status == models.Deal.Status.OPEN


@admin.register(models.RejectionReason)
class RejectionReasonAdmin(admin.ModelAdmin):
    list_display = ["label", "code", "outcome", "active", "position"]
    list_filter = ["outcome", "active"]
    search_fields = ["label", "code"]


@admin.register(models.Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "version", "owner", "refreshed_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    list_select_related = ["owner"]


@admin.register(models.SegmentVersion)
class SegmentVersionAdmin(ReadOnlyAdmin):
    """Read-only: every saved definition, for audit (crm.segments.segment_save)."""

    list_display = ["segment", "version", "created_by", "created_at"]
    search_fields = ["segment__name"]
    list_select_related = ["segment", "created_by"]


@admin.register(models.SegmentMembership)
class SegmentMembershipAdmin(admin.ModelAdmin):
    list_display = ["segment", "contact", "joined_at"]
    list_filter = ["segment"]
    search_fields = ["=contact__email"]
    list_select_related = ["segment", "contact"]
    raw_id_fields = ["contact"]


@admin.register(models.SegmentChange)
class SegmentChangeAdmin(ReadOnlyAdmin):
    """Read-only: the join/leave log nurture's triggers follow and reports chart."""

    list_display = ["segment", "contact", "kind", "at"]
    list_filter = ["kind", "segment"]
    search_fields = ["=contact__email"]
    list_select_related = ["segment", "contact"]
