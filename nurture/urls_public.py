"""The only public URLs: tracking (/t/…), unsubscribe (/u/…) and provider webhooks."""

urlpatterns: list = []
