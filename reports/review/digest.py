"""The weekly digest of overdue reviews, one email per recipient."""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db.models import Q
from django.template.loader import render_to_string

from crm.mail_tasks import MAIL_ERRORS
from crm.roles import MARKETING_WRITES, Role

from .register import RegisterRow, overdue_rows

log = logging.getLogger(__name__)


@dataclass
class DigestResult:
    sent: int = 0
    failed: list[int] = field(default_factory=list)  # recipients whose mail failed
    error: BaseException | None = None  # the last mail error


def review_digest_send(*, user_ids: Iterable[int] | None = None) -> DigestResult:
    """Email each recipient the list of their overdue items (``digest_recipients``) — only
    the recipients of ``user_ids`` when given (a retry).

    Each message goes on its own over one connection, so a mail server refusing one
    recipient does not stop the others, and the caller can retry just the failed ones
    (reports.tasks.review_digest). A server that cannot be reached at all raises.
    """
    recipients = digest_recipients(overdue_rows())
    if user_ids is not None:
        wanted = set(user_ids)
        recipients = {u: rows for u, rows in recipients.items() if u.pk in wanted}
    result = DigestResult()
    if not recipients:
        return result
    with get_connection() as connection:
        for user, rows in recipients.items():
            try:
                connection.send_messages([_digest_message(user, rows)])
            except MAIL_ERRORS as exc:
                log.warning("review digest to %s failed: %s", user.email, exc)
                result.failed.append(user.pk)
                result.error = exc
            else:
                result.sent += 1
    return result


def _digest_message(user, rows: list[RegisterRow]) -> EmailMessage:
    return EmailMessage(
        subject=f"{len(rows)} review(s) overdue",
        body=render_to_string(
            "reports/review/digest.txt",
            {"user": user, "rows": rows, "site_url": settings.SITE_URL},
        ),
        to=[user.email],
    )


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
