"""A tiny SMTP server on loopback that refuses mail, for the mail-server fault tests.

Speaks just enough RFC 5321 for ``smtplib``: ``refuse`` answers every ``RCPT TO`` with
550; ``disconnect`` drops the connection at ``MAIL FROM``. Each attempt is counted.
"""

from __future__ import annotations

import socketserver
import threading


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        server: RefusingSMTPServer = self.server  # type: ignore[assignment]
        self._reply("220 refusing.test ESMTP")
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
                self._reply("250 OK")
            elif verb.startswith("RCPT TO"):
                server.attempts += 1
                self._reply("550 5.1.1 Mailbox unavailable")
            elif verb.startswith("RSET") or verb.startswith("NOOP"):
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

    def __init__(self, mode: str = "refuse"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.attempts = 0
        self.port = self.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
