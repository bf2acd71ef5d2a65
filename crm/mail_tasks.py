"""What the Celery tasks that send mail share: which errors mean "the mail server is down,
try again later", and the retries with back-off that follow them.

A task that sends several messages must not send again, on a retry, what an earlier try
already handed over: it records what went out (scoring's pending owner emails are deleted
as each owner's mail leaves) or retries only the recipients that failed
(:meth:`MailTask.retry_recipients`).
"""

from __future__ import annotations

import logging
import smtplib

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

logger = logging.getLogger(__name__)

# A mail server down, refusing or dropping the connection. SMTP errors are OSErrors since
# Python 3.4, and so are the HTTP errors of the django-anymail providers (requests'): both
# are named for whoever reads this.
MAIL_ERRORS = (OSError, smtplib.SMTPException)


class MailTask(Task):
    """Base of the tasks that send mail (``@shared_task(base=MailTask)``).

    A mail error is retried after 1, 2, 4 … minutes (at most 30, jittered so that the tasks
    failing together do not come back together), ``max_retries`` times — about an hour and
    a half in all — and then logged as an error: the mail server's outage must not drop a
    message silently, nor keep a task retrying for ever.
    """

    autoretry_for = MAIL_ERRORS
    retry_backoff = 60
    retry_backoff_max = 30 * 60
    retry_jitter = True
    max_retries = 6

    def retry_recipients(self, *, kwargs: dict, exc: BaseException):
        """Retry with ``kwargs`` narrowed to what failed, after the same back-off as the
        automatic retries; raise this method's result (as with ``Task.retry``)."""
        countdown = get_exponential_backoff_interval(
            factor=self.retry_backoff,
            retries=self.request.retries,
            maximum=self.retry_backoff_max,
            full_jitter=self.retry_jitter,
        )
        return self.retry(kwargs=kwargs, exc=exc, countdown=countdown)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, MAIL_ERRORS):
            logger.error(
                "%s[%s] gave up after %s retries, the mail server still failing: %s "
                "(args %s, kwargs %s)",
                self.name,
                task_id,
                self.request.retries,
                exc,
                args,
                kwargs,
            )
        super().on_failure(exc, task_id, args, kwargs, einfo)
