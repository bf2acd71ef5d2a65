"""Mail backends for the fault tests (real file output, only slower)."""

import time

from django.core.mail.backends.filebased import EmailBackend as FileBackend


class SlowFileBackend(FileBackend):
    """The file backend, 10 ms per message: a batch lasts long enough to be killed in."""

    def send_messages(self, email_messages):
        sent = 0
        for message in email_messages:
            sent += super().send_messages([message])
            time.sleep(0.01)
        return sent
