"""A mail backend that acts like a fast recipient and provider: while each message is being
handed over, another thread (its own database connection, as another request would) follows
the email's links and posts a provider event for it."""

import base64
import json
import re
import threading
from pathlib import Path

from django.core.mail.backends.locmem import EmailBackend
from django.db import connections

DATA = Path("/work/shared/data/esp-webhooks")
if not DATA.exists():
    DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "esp-webhooks"
SECRET = "hook:s3cret"
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(SECRET.encode()).decode()}


class VisitDuringHandOver(EmailBackend):
    results: list = []

    def send_messages(self, messages):
        n = super().send_messages(messages)
        for m in messages:
            thread = threading.Thread(target=self._visit, args=(m,))
            thread.start()
            thread.join()
        return n

    def _visit(self, message) -> None:
        from django.test import Client

        html = message.alternatives[0][0]
        click = re.search(r'href="https://crm\.example\.com(/t/c/[^"]+)"', html)[1]
        header = message.extra_headers["List-Unsubscribe"]
        unsubscribe = re.search(r"<https://crm\.example\.com(/u/[^>]+)>", header)[1]
        message_id = message.extra_headers["Message-ID"].strip("<>")
        bounce = json.loads((DATA / "postmark/bounce_event.json").read_text())
        bounce |= {"MessageID": message_id, "Email": message.to[0], "Metadata": {}}
        client = Client()
        try:
            self.results.append(("click", client.get(click).status_code))
            self.results.append(("unsubscribe page", client.get(unsubscribe).status_code))
            self.results.append(
                (
                    "bounce webhook",
                    client.post(
                        "/webhooks/postmark/tracking/",
                        json.dumps(bounce),
                        "application/json",
                        **AUTH,
                    ).status_code,
                )
            )
            self.results.append(
                (
                    "one-click unsubscribe",
                    client.post(
                        unsubscribe,
                        "List-Unsubscribe=One-Click",
                        content_type="application/x-www-form-urlencoded",
                    ).status_code,
                )
            )
        finally:
            connections.close_all()
