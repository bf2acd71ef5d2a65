"""The messages Django's file e-mail backend wrote (the default backend: var/mail/).

The Outbox page lists them; erasure removes those addressed to the erased person. A file
holds the messages of one backend connection, each followed by a line of 79 dashes.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)
SEPARATOR = b"\n" + b"-" * 79 + b"\n"
SAFE_NAME = re.compile(r"^[\w.-]+\.log$")


def mail_dir() -> Path:
    return Path(getattr(settings, "EMAIL_FILE_PATH", "") or settings.BASE_DIR / "var" / "mail")


def mail_files(limit: int | None = None) -> list[Path]:
    """The message files, newest first."""
    folder = mail_dir()
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and SAFE_NAME.match(p.name)]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]


def _parse(chunk: bytes) -> EmailMessage:
    return email.message_from_bytes(chunk.lstrip(), policy=email.policy.default)


def messages(path: Path) -> Iterator[tuple[int, EmailMessage]]:
    for index, chunk in enumerate(path.read_bytes().split(SEPARATOR)):
        if chunk.strip():
            yield index, _parse(chunk)


def _recipients(message: EmailMessage) -> set[str]:
    fields = [str(message.get(name, "")) for name in ("To", "Cc", "Bcc")]
    return {address.lower() for _name, address in getaddresses(fields) if address}


def messages_drop_to(address: str) -> int:
    """Remove every stored message addressed to ``address`` (erasure); return how many.

    Each changed file is rewritten through a temporary file and a rename, so a reader
    never sees half of it; a file left empty is deleted.
    """
    address = address.strip().lower()
    dropped = 0
    for path in mail_files():
        try:
            chunks = [c for c in path.read_bytes().split(SEPARATOR) if c.strip()]
        except OSError:
            continue
        kept = [c for c in chunks if address not in _recipients(_parse(c))]
        if len(kept) == len(chunks):
            continue
        dropped += len(chunks) - len(kept)
        if not kept:
            path.unlink(missing_ok=True)
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(b"".join(c + SEPARATOR for c in kept))
        os.replace(tmp, path)
    if dropped:
        log.info("erasure removed %d stored message(s) from %s", dropped, mail_dir())
    return dropped
