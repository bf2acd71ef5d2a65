"""Signed, non-guessable tokens for the public tracking and unsubscribe URLs.

A token carries the send's message id (and a link index for clicks); it is signed with
``django.core.signing`` under a salt per purpose, so an open token cannot be replayed as
an unsubscribe token, and expires after ``TRACKING_TOKEN_MAX_AGE_DAYS`` (≥ 30 days).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse

OPEN, CLICK, UNSUBSCRIBE = "nurture.open", "nurture.click", "nurture.unsubscribe"


class BadToken(Exception):
    pass


def make(purpose: str, payload: dict) -> str:
    return signing.dumps(payload, salt=purpose, compress=True)


def read(purpose: str, token: str) -> dict:
    max_age = timedelta(days=max(30, settings.TRACKING_TOKEN_MAX_AGE_DAYS))
    try:
        payload = signing.loads(token, salt=purpose, max_age=max_age)
    except (signing.BadSignature, ValueError, TypeError) as exc:  # SignatureExpired included
        raise BadToken(str(exc)) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("m"), str):
        raise BadToken("malformed payload")
    return payload


def open_url(message_id: str) -> str:
    return settings.SITE_URL + reverse("nurture_public:open", args=[make(OPEN, {"m": message_id})])


def click_url(message_id: str, index: int) -> str:
    token = make(CLICK, {"m": message_id, "l": index})
    return settings.SITE_URL + reverse("nurture_public:click", args=[token])


def unsubscribe_url(message_id: str) -> str:
    token = make(UNSUBSCRIBE, {"m": message_id})
    return settings.SITE_URL + reverse("nurture_public:unsubscribe", args=[token])
