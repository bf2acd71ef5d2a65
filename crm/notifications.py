"""In-app notices: reading them (own notices only), marking them read, and where opening
one may lead.

The notices are written where things happen (scoring.handoff, crm.sales, nurture sending,
crm.activity_queue); this module is what the notifications page, the top-bar count and the
API share.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme

from .models import Notification

# The top bar shows "99+" beyond this; the count stops reading rows there, too.
UNREAD_SHOWN_MAX = 99


def notifications_mark_read(*, user, ids: Iterable[int] | None = None) -> int:
    """Mark the user's unread notices read — all of them, or those of ``ids`` — in one
    UPDATE; another user's ids are ignored. Returns how many changed (a notice read before
    keeps its first read time)."""
    qs = Notification.objects.for_user(user).unread()
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs.update(read_at=timezone.now())


def local_path(url: str) -> str | None:
    """``url`` when it is a path on this site, else None.

    Notices store paths today ("/crm/contacts/7/"), but the column is free text and the
    open view redirects to it: anything with a scheme or a host ("https://…", "//host",
    "/\\host" that browsers read as "//host", "javascript:…") would be an open redirect.
    """
    if not url or not url.startswith("/") or url.startswith(("//", "/\\")):
        return None
    if not url_has_allowed_host_and_scheme(url, allowed_hosts=None):
        return None
    return url


class UnreadNotices:
    """The signed-in user's unread count for the top bar, read on first use (one COUNT on
    the ``notification_unread`` index, stopped after ``UNREAD_SHOWN_MAX + 1`` rows)."""

    def __init__(self, user):
        self.user = user

    @cached_property
    def count(self) -> int:
        unread = Notification.objects.for_user(self.user).unread().order_by()
        return unread[: UNREAD_SHOWN_MAX + 1].count()

    @property
    def label(self) -> str:
        return f"{UNREAD_SHOWN_MAX}+" if self.count > UNREAD_SHOWN_MAX else str(self.count)
