"""Sales pages under /crm/ (included by crm/urls_app.py inside the ``crm`` namespace)."""

from django.urls import path

from .views import deals, mqls

urlpatterns = [
    path("mqls/", mqls.queue, name="mql-queue"),
    path("mqls/<int:pk>/", mqls.detail, name="mql-detail"),
    path("mqls/<int:pk>/accept/", mqls.accept, name="mql-accept"),
    path("mqls/<int:pk>/reject/", mqls.reject, name="mql-reject"),
    path("mqls/<int:pk>/claim/", mqls.claim, name="mql-claim"),
    path("deals/", deals.deal_list, name="deal-list"),
    path("deals/new/", deals.deal_create, name="deal-create"),
    path("deals/<int:pk>/", deals.deal_detail, name="deal-detail"),
    path("deals/<int:pk>/win/", deals.deal_win, name="deal-win"),
    path("deals/<int:pk>/lose/", deals.deal_lose, name="deal-lose"),
    path("deals/contacts/<int:contact_pk>/churn/", deals.contact_churn, name="contact-churn"),
]
