"""CRM pages under /crm/ (namespace ``crm``)."""

app_name = "crm"
urlpatterns: list = []
