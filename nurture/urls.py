"""nurture pages (namespace ``nurture``)."""

app_name = "nurture"
urlpatterns: list = []
