"""Django admin for the CRM core (open to the admin role: staff users only)."""

from django.contrib import admin
from django.db import transaction

from . import campaign_members, models
from .roles import Role, has_role


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
class ContactScoreAdmin(admin.ModelAdmin):
    """Read-only: the scoring engine writes scores, the triggers stage and owner."""

    list_display = ["contact", "score", "stage", "owner"]
    list_filter = ["stage"]
    search_fields = ["contact__email"]
    list_select_related = ["contact", "owner"]
    ordering = ["-score", "contact"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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


@admin.register(models.Activity)
class ActivityAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "kind", "contact", "campaign", "external_id", "is_machine"]
    list_filter = ["kind", "is_machine"]
    # Exact-match lookups only: a LIKE over millions of activities would time out.
    search_fields = ["=external_id", "=contact__email", "=message_id"]
    list_select_related = ["contact", "campaign"]
    raw_id_fields = ["contact", "campaign"]
    show_full_result_count = False

    # An edit or delete here bypasses crm.ingest: the touched contacts' campaign members
    # are rebuilt from their activities in the same transaction (crm.campaign_members).
    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            before = models.Activity.objects.filter(pk=obj.pk).values_list("contact_id")
            contact_ids = {row[0] for row in before} if change else set()
            super().save_model(request, obj, form, change)
            campaign_members.members_rebuild(contact_ids=contact_ids | {obj.contact_id})

    def delete_model(self, request, obj):
        with transaction.atomic():
            super().delete_model(request, obj)
            campaign_members.members_rebuild(contact_ids=[obj.contact_id])

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            contact_ids = set(queryset.values_list("contact_id", flat=True))
            super().delete_queryset(request, queryset)
            campaign_members.members_rebuild(contact_ids=contact_ids)


@admin.register(models.LifecycleTransition)
class LifecycleTransitionAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.Reopening)
class ReopeningAdmin(admin.ModelAdmin):
    list_display = ["contact", "recycle_round", "at"]
    search_fields = ["=contact__email"]
    list_select_related = ["contact"]
    raw_id_fields = ["contact", "activity"]


@admin.register(models.Deal)
class DealAdmin(admin.ModelAdmin):
    list_display = ["__str__", "contact", "company", "amount", "status", "owner", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "contact__email", "company__name"]
    list_select_related = ["contact", "company", "owner"]
    raw_id_fields = ["contact", "company"]


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
class SegmentVersionAdmin(admin.ModelAdmin):
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
class SegmentChangeAdmin(admin.ModelAdmin):
    list_display = ["segment", "contact", "kind", "at"]
    list_filter = ["kind", "segment"]
    search_fields = ["=contact__email"]
    list_select_related = ["segment", "contact"]
    raw_id_fields = ["contact"]
