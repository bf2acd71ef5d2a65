"""scoring pages (namespace ``scoring``)."""

app_name = "scoring"
urlpatterns: list = []
