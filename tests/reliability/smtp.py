"""A tiny SMTP server on loopback that refuses mail, for the mail-server fault tests.

Speaks just enough RFC 5321 for ``smtplib``: ``refuse`` answers every ``RCPT TO`` with
550 — or, given ``refused`` addresses, only theirs, and accepts the others' mail
(``delivered`` lists each accepted message's recipients); ``disconnect`` drops the
connection at ``MAIL FROM``. Each attempt is counted.
"""

from __future__ import annotations

import socketserver
import threading


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        server: RefusingSMTPServer = self.server  # type: ignore[assignment]
        self._reply("220 refusing.test ESMTP")
        recipients: list[str] = []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode("ascii", "replace").strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                self._reply("250 refusing.test")
            elif verb.startswith("MAIL FROM"):
                if server.mode == "disconnect":
                    server.attempts += 1
                    return  # the connection drops mid-transaction
                recipients = []
                self._reply("250 OK")
            elif verb.startswith("RCPT TO"):
                server.attempts += 1
                address = verb.split(":", 1)[1].strip(" <>").lower()
                if server.refused is None or address in server.refused:
                    self._reply("550 5.1.1 Mailbox unavailable")
                else:
                    recipients.append(address)
                    self._reply("250 OK")
            elif verb.startswith("DATA"):
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                server.delivered.append(recipients)
                recipients = []
                self._reply("250 OK")
            elif verb.startswith(("RSET", "NOOP")):
                self._reply("250 OK")
            elif verb.startswith("QUIT"):
                self._reply("221 Bye")
                return
            else:
                self._reply("502 Command not implemented")

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()


class RefusingSMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str = "refuse", refused: set[str] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.refused = {a.lower() for a in refused} if refused is not None else None
        self.delivered: list[list[str]] = []
        self.attempts = 0
        self.port = self.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
