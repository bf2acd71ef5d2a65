"""Mail-provider tracking webhooks: django-anymail's views, authenticated as it configures.

Postmark and Amazon SES use HTTP basic auth (``ANYMAIL["WEBHOOK_SECRET"]`` =
``"user:password"``, put in the webhook URL); Mailgun also checks its HMAC signature
with ``ANYMAIL["MAILGUN_WEBHOOK_SIGNING_KEY"]``. A failed check answers 400 (anymail's
``AnymailWebhookValidationFailure``). Anymail's ``tracking`` signal is its documented
integration point: the receiver below only hands the normalised event to a service.
"""

from __future__ import annotations

from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkTrackingWebhookView

from crm.roles import PUBLIC


class Postmark(PostmarkTrackingWebhookView):
    access = PUBLIC


class Mailgun(MailgunTrackingWebhookView):
    access = PUBLIC


class AmazonSES(AmazonSESTrackingWebhookView):
    access = PUBLIC


def on_tracking(sender, event, esp_name, **kwargs) -> None:
    """anymail.signals.tracking receiver (connected in NurtureConfig.ready)."""
    from .services.tracking import esp_event_record

    esp_event_record(esp_name=esp_name, event=event)
