"""Mail-provider tracking webhooks: django-anymail's views, authenticated as it configures.

All three use HTTP basic auth (``ANYMAIL["WEBHOOK_SECRET"]`` = ``"user:password"``, put
in the webhook URL); Mailgun also checks its HMAC signature with
``ANYMAIL["MAILGUN_WEBHOOK_SIGNING_KEY"]``, its age and that its token is new. A failed
check answers 400 (anymail's ``AnymailWebhookValidationFailure``). Anymail's ``tracking``
signal is its documented integration point: the receiver below only hands the normalised
event to a service.
"""

from __future__ import annotations

import hashlib
import json
import time

from anymail.exceptions import (
    AnymailAPIError,
    AnymailConfigurationError,
    AnymailWebhookValidationFailure,
)
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.core.cache import cache
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
    # would only warn and accept forged events). Mailgun's signature does not cover the
    # body, so it needs both.
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
    """Mailgun's HMAC covers a timestamp and a random token, not the body: a captured
    signature would sign any forged event. As Mailgun's documentation advises, a signature
    older (or further ahead) than ``MAILGUN_SIGNATURE_MAX_AGE`` or a token seen before is
    refused (Mailgun signs every delivery attempt anew). The seen tokens live in the
    cache (the database cache by default, shared by every web process)."""

    access = PUBLIC
    requires_secret = True

    def validate_request(self, request):
        super().validate_request(request)  # basic auth, then the HMAC
        token, timestamp = _mailgun_signature(request)
        try:
            age = abs(time.time() - float(timestamp))
        except (TypeError, ValueError, OverflowError):
            raise AnymailWebhookValidationFailure("Mailgun signature without a time") from None
        if not age <= MAILGUN_SIGNATURE_MAX_AGE:  # also refuses NaN
            raise AnymailWebhookValidationFailure("Mailgun signature too old or in the future")
        key = "mailgun-token:" + hashlib.sha256(str(token).encode()).hexdigest()
        if not cache.add(key, 1, timeout=2 * MAILGUN_SIGNATURE_MAX_AGE):
            raise AnymailWebhookValidationFailure("Mailgun signature token used before")


# How far a Mailgun signature's timestamp may be from now, in seconds.
MAILGUN_SIGNATURE_MAX_AGE = 15 * 60


def _mailgun_signature(request) -> tuple[str, str]:
    """The token and timestamp the HMAC covered (anymail has parsed them successfully)."""
    if request.content_type == "application/json":
        block = json.loads(request.body.decode("utf-8"))["signature"]
        return block["token"], block["timestamp"]
    return request.POST["token"], request.POST["timestamp"]


class AmazonSES(_Guarded, AmazonSESTrackingWebhookView):
    access = PUBLIC
    requires_secret = True


def on_tracking(sender, event, esp_name, **kwargs) -> None:
    """anymail.signals.tracking receiver (connected in NurtureConfig.ready)."""
    from .services.tracking import esp_event_record

    esp_event_record(esp_name=esp_name, event=event)
