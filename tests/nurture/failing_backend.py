"""A mail backend whose server is down (tests the retry path without mocks)."""

from django.core.mail.backends.base import BaseEmailBackend


class EmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise ConnectionError("SMTP down")


class CrashingBackend(BaseEmailBackend):
    """Accepts one message, then the worker "dies" (a BaseException, like SIGTERM handling)."""

    def send_messages(self, email_messages):
        from django.core import mail

        if len(mail.outbox) >= 1:
            raise KeyboardInterrupt("worker killed")
        mail.outbox.extend(email_messages)
        return len(email_messages)


class ObservingBackend(BaseEmailBackend):
    """Calls ``observe(message)`` at the moment of each hand-over, then accepts it."""

    observe = staticmethod(lambda message: None)

    def send_messages(self, email_messages):
        from django.core import mail

        for message in email_messages:
            self.observe(message)
        mail.outbox.extend(email_messages)
        return len(email_messages)
