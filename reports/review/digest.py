"""The weekly digest of overdue reviews, one email per owner."""

from collections import defaultdict

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.template.loader import render_to_string

from crm.roles import Role

from .register import overdue_rows


def review_digest_send() -> int:
    """Email each owner the list of their overdue items; unowned items go to marketing leads.

    Returns the number of emails handed to the backend.
    """
    by_user = defaultdict(list)
    rows = overdue_rows()
    fallback = list(
        get_user_model()
        .objects.filter(groups__name=Role.MARKETING, is_active=True)
        .exclude(email="")
    )
    for row in rows:
        recipients = [row.item.owner] if row.item.owner_id and row.item.owner.email else fallback
        for user in recipients:
            by_user[user].append(row)
    messages = [
        EmailMessage(
            subject=f"{len(items)} review(s) overdue",
            body=render_to_string(
                "reports/review/digest.txt",
                {"user": user, "rows": items, "site_url": settings.SITE_URL},
            ),
            to=[user.email],
        )
        for user, items in by_user.items()
    ]
    if messages:
        with get_connection() as connection:
            connection.send_messages(messages)
    return len(messages)
