"""Failed log-in throttling, per user name and per client address.

Counts live in the shared cache (the database cache by default) so every web process on
every machine sees the same numbers.
"""

import hashlib
import unicodedata

from django.conf import settings
from django.core.cache import cache


def _key(kind: str, value: str) -> str:
    # The name as authentication sees it (Django's UsernameField applies NFKC: "ａdmin" is
    # "admin"), case-folded: every spelling that logs in to one account shares its counter.
    name = unicodedata.normalize("NFKC", value).strip().casefold()
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"login-fail:{kind}:{digest}"


def _keys(username: str, ip: str) -> list[str]:
    return [_key("user", username or ""), _key("ip", ip or "")]


def login_blocked(username: str, ip: str) -> bool:
    limit = settings.LOGIN_THROTTLE_ATTEMPTS
    return any((cache.get(k) or 0) >= limit for k in _keys(username, ip))


def login_failed(username: str, ip: str) -> None:
    for key in _keys(username, ip):
        if not cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW)


def login_succeeded(username: str) -> None:
    cache.delete(_key("user", username or ""))


def client_ip(request) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy sets it,
    # and the proxy is expected to overwrite REMOTE_ADDR (e.g. gunicorn --forwarded-allow-ips).
    return request.META.get("REMOTE_ADDR", "")
