"""The only public URLs: tracking (/t/…), unsubscribe (/u/…) and provider webhooks."""

from django.urls import path

from . import webhooks
from .views import public

app_name = "nurture_public"
urlpatterns = [
    path("t/o/<str:token>.gif", public.open_pixel, name="open"),
    path("t/c/<str:token>", public.click, name="click"),
    path("u/<str:token>", public.unsubscribe, name="unsubscribe"),
    path("webhooks/postmark/tracking/", webhooks.Postmark.as_view(), name="webhook-postmark"),
    path("webhooks/mailgun/tracking/", webhooks.Mailgun.as_view(), name="webhook-mailgun"),
    path("webhooks/amazon_ses/tracking/", webhooks.AmazonSES.as_view(), name="webhook-ses"),
]
