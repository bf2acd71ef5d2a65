"""The weekly digest of overdue reviews, one email per recipient."""

import logging
from collections import defaultdict

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db.models import Q
from django.template.loader import render_to_string

from crm.roles import MARKETING_WRITES, Role

from .register import RegisterRow, overdue_rows

log = logging.getLogger(__name__)


def review_digest_send() -> int:
    """Email each recipient the list of their overdue items (``digest_recipients``).

    Returns the number of emails handed to the backend.
    """
    messages = [
        EmailMessage(
            subject=f"{len(items)} review(s) overdue",
            body=render_to_string(
                "reports/review/digest.txt",
                {"user": user, "rows": items, "site_url": settings.SITE_URL},
            ),
            to=[user.email],
        )
        for user, items in digest_recipients(overdue_rows()).items()
    ]
    if messages:
        with get_connection() as connection:
            connection.send_messages(messages)
    return len(messages)


def digest_recipients(rows: list[RegisterRow]) -> dict:
    """Who is told about which overdue rows: ``{user: [rows]}``.

    An item goes to its owner while the owner can act on it — active, with an email
    address, and allowed to record reviews (marketing or admin: the register's write
    roles). Any other item — unowned, or its owner deactivated or moved out of marketing —
    goes to every active marketing user, or it would reach nobody (a departed owner's
    mailbox) week after week.
    """
    owners = _reviewers({row.item.owner_id for row in rows} - {None})
    fallback = list(
        get_user_model()
        .objects.filter(groups__name=Role.MARKETING, is_active=True)
        .exclude(email="")
        .order_by("pk")
    )
    by_user = defaultdict(list)
    unsent = 0
    for row in rows:
        owner = owners.get(row.item.owner_id)
        recipients = [owner] if owner else fallback
        unsent += not recipients
        for user in recipients:
            by_user[user].append(row)
    if unsent:
        log.warning("review digest: %s overdue items have no one to go to", unsent)
    return by_user


def _reviewers(user_ids: set[int]) -> dict:
    """Those of ``user_ids`` who can still act on an item they own, by id."""
    if not user_ids:
        return {}
    roles = MARKETING_WRITES.write
    return {
        user.pk: user
        for user in get_user_model()
        .objects.filter(pk__in=user_ids, is_active=True)
        .exclude(email="")
        .filter(Q(groups__name__in=roles) | Q(is_superuser=True))
        .distinct()
    }
