"""Mail-provider tracking webhooks: django-anymail's views, authenticated as it configures.

Postmark and Amazon SES use HTTP basic auth (``ANYMAIL["WEBHOOK_SECRET"]`` =
``"user:password"``, put in the webhook URL); Mailgun also checks its HMAC signature
with ``ANYMAIL["MAILGUN_WEBHOOK_SIGNING_KEY"]``. A failed check answers 400 (anymail's
``AnymailWebhookValidationFailure``). Anymail's ``tracking`` signal is its documented
integration point: the receiver below only hands the normalised event to a service.
"""

from __future__ import annotations

from anymail.exceptions import AnymailAPIError, AnymailConfigurationError
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.http import HttpResponseBadRequest, HttpResponseNotFound

from crm.roles import PUBLIC


class _Malformed(Exception):
    """The body is not what the provider sends (anymail's parser choked on it)."""


# What anymail's parsers and signature checks raise on a body of the wrong shape: a list
# where an object belongs, a missing or wrong-typed field, a non-string time.
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError, UnicodeDecodeError)


class _Guarded:
    """An inbound payload posted here or an unparsable body is a 400, not a 500.

    Only the checks and the parsing are guarded: an error while recording a well-formed
    event stays a 500, which providers retry later.
    """

    # Postmark and SES events carry no signature: basic auth is their only proof of origin,
    # so without ANYMAIL["WEBHOOK_SECRET"] the endpoint refuses everything (anymail itself
    # would only warn and accept forged events).
    requires_secret = False

    def post(self, request, *args, **kwargs):
        if self.requires_secret and not self.basic_auth:
            return HttpResponseNotFound("This webhook is not configured.")
        try:
            return super().post(request, *args, **kwargs)
        except ImportError:
            raise  # a missing provider package is our misconfiguration: a 500 and a log
        except (AnymailConfigurationError, AnymailAPIError, _Malformed) as exc:
            return HttpResponseBadRequest(f"Not a tracking event: {exc}", content_type="text/plain")

    def run_validators(self, request):
        try:
            super().run_validators(request)
        except _SHAPE_ERRORS as exc:
            raise _Malformed(f"{type(exc).__name__}: {exc}") from exc

    def parse_events(self, request):
        try:
            return super().parse_events(request)
        except _SHAPE_ERRORS as exc:
            raise _Malformed(f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def as_view(cls, **initkwargs):
        """A provider whose keys are not configured answers 404, not a 500.

        Anymail reads its keys when the view is instantiated (Mailgun's signing key), which
        happens per request inside the view function ``as_view`` returns.
        """
        view = super().as_view(**initkwargs)

        def guarded(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except AnymailConfigurationError:
                return HttpResponseNotFound("This webhook is not configured.")

        guarded.__dict__.update(view.__dict__)  # view_class, csrf_exempt, access …
        guarded.__name__ = view.__name__
        return guarded


class Postmark(_Guarded, PostmarkTrackingWebhookView):
    access = PUBLIC
    requires_secret = True


class Mailgun(_Guarded, MailgunTrackingWebhookView):
    access = PUBLIC


class AmazonSES(_Guarded, AmazonSESTrackingWebhookView):
    access = PUBLIC
    requires_secret = True


def on_tracking(sender, event, esp_name, **kwargs) -> None:
    """anymail.signals.tracking receiver (connected in NurtureConfig.ready)."""
    from .services.tracking import esp_event_record

    esp_event_record(esp_name=esp_name, event=event)
