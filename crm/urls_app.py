"""CRM pages under /crm/ (namespace ``crm``)."""

from django.urls import path

from .urls_sales import urlpatterns as sales_urlpatterns
from .views import campaigns, companies, contacts, imports, notifications, privacy
from .views import segments as segment_views

app_name = "crm"
urlpatterns: list = [
    # CRM core (contacts, companies, campaigns and costs, imports)
    path("contacts/", contacts.contact_list, name="contact-list"),
    path("contacts/new/", contacts.contact_create, name="contact-create"),
    path("contacts/bulk/", contacts.contact_bulk, name="contact-bulk"),
    path("contacts/<int:pk>/", contacts.contact_detail, name="contact-detail"),
    path("contacts/<int:pk>/edit/", contacts.contact_edit, name="contact-edit"),
    path("contacts/<int:pk>/merge/", contacts.contact_merge, name="contact-merge"),
    path("contacts/<int:pk>/personal-data/", privacy.contact_data_export, name="contact-data"),
    path("contacts/<int:pk>/erase/", privacy.contact_data_erase, name="contact-erase"),
    path("companies/", companies.company_list, name="company-list"),
    path("companies/new/", companies.company_form, name="company-create"),
    path("companies/<int:pk>/", companies.company_detail, name="company-detail"),
    path("companies/<int:pk>/edit/", companies.company_form, name="company-edit"),
    path("campaigns/", campaigns.campaign_list, name="campaign-list"),
    path("campaigns/new/", campaigns.campaign_form, name="campaign-create"),
    path("campaigns/<int:pk>/", campaigns.campaign_detail, name="campaign-detail"),
    path("campaigns/<int:pk>/edit/", campaigns.campaign_form, name="campaign-edit"),
    path("campaigns/<int:pk>/costs/new/", campaigns.cost_form, name="cost-create"),
    path("campaigns/<int:pk>/costs/<int:cost_pk>/", campaigns.cost_form, name="cost-edit"),
    path(
        "campaigns/<int:pk>/costs/<int:cost_pk>/delete/", campaigns.cost_delete, name="cost-delete"
    ),
    path("imports/", imports.import_upload, name="import-upload"),
    path("imports/preview/", imports.import_preview, name="import-preview"),
    # Segments (crm/views/segments.py)
    path("segments/", segment_views.segment_list, name="segment-list"),
    path("segments/new/", segment_views.segment_create, name="segment-create"),
    path("segments/builder/", segment_views.segment_builder, name="segment-builder"),
    path("segments/preview/", segment_views.segment_preview, name="segment-preview"),
    path("segments/<int:pk>/", segment_views.segment_detail, name="segment-detail"),
    path("segments/<int:pk>/edit/", segment_views.segment_edit, name="segment-edit"),
    path(
        "segments/<int:pk>/members/", segment_views.segment_members_change, name="segment-members"
    ),
    path("segments/<int:pk>/refresh/", segment_views.segment_refresh_now, name="segment-refresh"),
    path("segments/<int:pk>/delete/", segment_views.segment_remove, name="segment-delete"),
    path("segments/<int:pk>/why/<int:contact_pk>/", segment_views.segment_why, name="segment-why"),
    # The signed-in user's in-app notices (crm/views/notifications.py)
    path("notifications/", notifications.notification_list, name="notification-list"),
    path(
        "notifications/<int:pk>/open/",
        notifications.notification_open,
        name="notification-open",
    ),
    path(
        "notifications/read-all/",
        notifications.notification_read_all,
        name="notification-read-all",
    ),
    # Sales hand-off: MQL queue and deals (crm/urls_sales.py)
    *sales_urlpatterns,
]
