"""Signed, non-guessable tokens for the public tracking and unsubscribe URLs.

A token carries the send's message id (and a link index for clicks), signed with
``django.core.signing.TimestampSigner`` under a salt per purpose, so an open token cannot
be replayed as an unsubscribe token; it expires after ``TRACKING_TOKEN_MAX_AGE_DAYS``
(at least 30 days). Message ids are random (uuid4), never sequential.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from base64 import urlsafe_b64encode
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.urls import reverse

OPEN, CLICK, UNSUBSCRIBE = "nurture.open", "nurture.click", "nurture.unsubscribe"
# What a message id may look like inside a token (ours: hex@host).
MESSAGE_ID = re.compile(r"^[\w.@+-]{1,200}$")


class BadToken(Exception):
    pass


class _Signer:
    """Byte-for-byte what ``TimestampSigner(key=secret, salt=purpose).sign()`` produces.

    Django derives the HMAC key (``sha256(salt + "signer" + secret)``) on every call; the
    sender signs several tokens per email, so the keyed HMAC is built once and copied.
    ``tests/nurture/test_tracking.py`` pins the equality with Django's signer.
    """

    def __init__(self, purpose: str, secret: str):
        key = hashlib.sha256(f"{purpose}signer{secret}".encode()).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._stamp = (0, "")

    def timestamp(self) -> str:
        now = int(time.time())
        if self._stamp[0] != now:
            self._stamp = (now, signing.b62_encode(now))
        return self._stamp[1]

    def sign(self, value: str) -> str:
        value = f"{value}:{self.timestamp()}"
        mac = self._mac.copy()
        mac.update(value.encode())
        return f"{value}:{urlsafe_b64encode(mac.digest()).rstrip(b'=').decode()}"


@lru_cache(maxsize=8)
def _signer(purpose: str, secret: str) -> _Signer:
    return _Signer(purpose, secret)


def make(purpose: str, payload: dict) -> str:
    value = payload["m"] if "l" not in payload else f"{payload['m']}~{int(payload['l'])}"
    return _signer(purpose, settings.SECRET_KEY).sign(value)


def read(purpose: str, token: str) -> dict:
    max_age = timedelta(days=max(30, settings.TRACKING_TOKEN_MAX_AGE_DAYS))
    try:
        value = signing.TimestampSigner(salt=purpose).unsign(token, max_age=max_age)
    except (signing.BadSignature, ValueError, TypeError) as exc:  # SignatureExpired included
        raise BadToken(str(exc)) from exc
    message_id, _, index = value.partition("~")
    if not MESSAGE_ID.match(message_id) or (index and not index.isdigit()):
        raise BadToken("malformed payload")
    return {"m": message_id, **({"l": int(index)} if index else {})}


@lru_cache(maxsize=8)
def _prefix(name: str, site_url: str) -> str:
    """The URL up to the token, resolved once (reverse() per email is costly)."""
    return site_url + reverse(name, args=["TOKEN"]).split("TOKEN")[0]


def _url(name: str, token: str, suffix: str = "") -> str:
    return _prefix(name, settings.SITE_URL) + token + suffix


class Urls:
    """The tracking and unsubscribe URLs of many emails, signers and prefixes resolved once
    (the sender builds one per batch; the URLs are the functions' below, byte for byte)."""

    def __init__(self):
        secret, site = settings.SECRET_KEY, settings.SITE_URL
        self._open, self._click, self._unsubscribe = (
            _signer(purpose, secret) for purpose in (OPEN, CLICK, UNSUBSCRIBE)
        )
        self._open_prefix = _prefix("nurture_public:open", site)
        self._click_prefix = _prefix("nurture_public:click", site)
        self.unsubscribe_prefix = _prefix("nurture_public:unsubscribe", site)

    def open(self, message_id: str) -> str:
        return f"{self._open_prefix}{self._open.sign(message_id)}.gif"

    def click(self, message_id: str, index: int) -> str:
        return self._click_prefix + self._click.sign(f"{message_id}~{int(index)}")

    def unsubscribe(self, message_id: str) -> str:
        return self.unsubscribe_prefix + self._unsubscribe.sign(message_id)


def open_url(message_id: str) -> str:
    return _url("nurture_public:open", make(OPEN, {"m": message_id}), ".gif")


def click_url(message_id: str, index: int) -> str:
    return _url("nurture_public:click", make(CLICK, {"m": message_id, "l": index}))


def unsubscribe_url(message_id: str) -> str:
    return _url("nurture_public:unsubscribe", make(UNSUBSCRIBE, {"m": message_id}))
