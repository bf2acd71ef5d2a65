"""The outgoing email object: Message-ID, RFC 8058 headers, and a cheaper MIME build.

Every Django mail backend that writes the message out (SMTP, file, console, locmem)
calls ``message()`` once per email to build the ``email.mime`` tree. For a plain
text + HTML email the standard build spends most of its time re-parsing the
``Content-Type`` parameters it has just written (``set_charset`` → ``set_param``) and
validating the same constant headers again for every email. ``_Message.message()``
builds the very same tree directly — same classes, same header list in the same
order, same payload strings, same charset objects — validating every header value
that varies per email with Django's own ``forbid_multi_line_headers`` (header
injection stays refused) and the constant ones once per process. Anything outside
that shape (attachments, Cc/Reply-To, long lines that need quoted-printable, another
charset, non-text alternatives) goes through Django's own ``message()``.
``tests/nurture/test_mail.py`` pins the equality with Django's build.
"""

from __future__ import annotations

import copy
import uuid
from email.message import Message
from email.utils import formatdate, parseaddr
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import (
    RFC5322_EMAIL_LINE_LENGTH_LIMIT,
    SafeMIMEMultipart,
    SafeMIMEText,
    forbid_multi_line_headers,
    utf8_charset,
)
from django.utils.crypto import salted_hmac

# Headers Django's message() may take from extra_headers instead of the message's fields.
_OWN_HEADERS = {"from", "to", "cc", "reply-to"}


def recipient_digest(address: str) -> str:
    """A stable stand-in for an address (in a send's ``to_digest``, in a provider event's
    id): keyed with the site's secret, so a list of addresses does not reverse it."""
    return salted_hmac("leadcycle.recipient", address.strip().lower()).hexdigest()[:24]


def message_id(host: str | None = None) -> str:
    """Random (uuid4) and unique; no ``make_msgid()`` (it resolves the host name)."""
    host = host or urlsplit(settings.SITE_URL).hostname or "leadcycle.local"
    return f"{uuid.uuid4().hex}@{host}"


def unsubscribe_mailto() -> str:
    return (
        getattr(settings, "NURTURE_UNSUBSCRIBE_MAILTO", "")
        or parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    )


@lru_cache(maxsize=64)
def _constant_header(name: str, value: str) -> tuple[str, str]:
    """A header value that is the same for every email (From, List-Unsubscribe-Post)."""
    return forbid_multi_line_headers(name, value, "utf-8")


def _short_lines(text: str) -> bool:
    # SafeMIMEText switches to quoted-printable when a line exceeds the RFC 5322 limit;
    # a string with fewer characters than the limit cannot (<= 4 bytes per character).
    if len(text) <= RFC5322_EMAIL_LINE_LENGTH_LIMIT // 4:
        return True
    return all(
        len(line.encode(errors="surrogateescape")) <= RFC5322_EMAIL_LINE_LENGTH_LIMIT
        for line in text.splitlines()
    )


def _text_part(text: str, subtype: str) -> SafeMIMEText:
    """``SafeMIMEText(text, subtype, "utf-8")`` for a text without over-long lines."""
    part = SafeMIMEText.__new__(SafeMIMEText)
    Message.__init__(part)
    part.encoding = "utf-8"
    raw = text.encode("utf-8")
    # What Message.set_payload stores, and the encode_7or8bit verdict.
    part._payload = raw.decode("ascii", "surrogateescape")
    part._charset = utf8_charset
    part._headers = [
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("MIME-Version", "1.0"),
        ("Content-Transfer-Encoding", "7bit" if raw.isascii() else "8bit"),
    ]
    return part


class _Message(EmailMultiAlternatives):
    """A message whose deep copy copies only its containers and whose MIME build is lean.

    Everything in it besides the containers is an immutable string (or a tuple of
    them), so copying the containers is a real deep copy (the locmem test backend
    deep-copies each message into the outbox), at a fraction of the cost of
    ``copy.deepcopy`` walking every attribute and element.
    """

    def __deepcopy__(self, memo):
        clone = copy.copy(self)
        # Address lists hold strings; alternatives are (content, mimetype) tuples of
        # strings: copying the lists copies everything mutable in them.
        for name in ("to", "cc", "bcc", "reply_to", "alternatives"):
            setattr(clone, name, list(getattr(self, name)))
        if self.attachments:  # may hold MIMEBase objects: copy them for real
            clone.attachments = copy.deepcopy(self.attachments, memo)
        else:
            clone.attachments = []
        clone.extra_headers = dict(self.extra_headers)
        metadata = getattr(self, "metadata", None)
        if metadata is not None:
            flat = all(isinstance(v, str) for v in metadata.values())
            clone.metadata = dict(metadata) if flat else copy.deepcopy(metadata, memo)
        return clone

    def _lean(self) -> bool:
        return (
            not self.attachments
            and not self.cc
            and not self.reply_to
            and (self.encoding or settings.DEFAULT_CHARSET) == "utf-8"
            and all(a.mimetype == "text/html" for a in self.alternatives)
            and _short_lines(self.body)
            and all(_short_lines(a.content) for a in self.alternatives)
            and all(isinstance(v, str) for v in self.extra_headers.values())
            # The sender's own headers only: a Message-ID, no From/To/Cc/Reply-To override.
            and {k.lower() for k in self.extra_headers}.isdisjoint(_OWN_HEADERS)
            and "message-id" in {k.lower() for k in self.extra_headers}
        )

    def message(self):
        if not self._lean():
            return super().message()
        body = _text_part(self.body, self.content_subtype)
        if self.alternatives:
            msg = SafeMIMEMultipart.__new__(SafeMIMEMultipart)
            Message.__init__(msg)
            msg.encoding = "utf-8"
            msg._headers = [("Content-Type", "multipart/alternative"), ("MIME-Version", "1.0")]
            msg._payload = [body] if self.body else []
            msg._payload.extend(_text_part(a.content, "html") for a in self.alternatives)
        else:
            msg = body
        # The headers in the order Django's message() sets them.
        headers = msg._headers
        headers.append(forbid_multi_line_headers("Subject", self.subject, "utf-8"))
        headers.append(_constant_header("From", str(self.from_email)))
        if self.to:
            to = ", ".join(str(v) for v in self.to)
            headers.append(forbid_multi_line_headers("To", to, "utf-8"))
        if not any(key.lower() == "date" for key in self.extra_headers):
            date = formatdate(localtime=settings.EMAIL_USE_LOCALTIME)
            headers.append(forbid_multi_line_headers("Date", date, "utf-8"))
        for name, value in self.extra_headers.items():
            if name == "List-Unsubscribe-Post":
                headers.append(_constant_header(name, value))
            else:
                headers.append(forbid_multi_line_headers(name, value, "utf-8"))
        return msg


def build_email(
    *,
    to: str,
    rendered,
    message_id: str,
    unsubscribe_url: str,
    from_email: str | None = None,
    mailto: str | None = None,
) -> EmailMultiAlternatives:
    """A message with its Message-ID and RFC 8058 one-click unsubscribe headers.

    ``from_email`` and ``mailto`` default to the settings; the sender passes them in,
    computed once per batch (parsing the From address costs more than the rest).
    """
    mailto = mailto if mailto is not None else unsubscribe_mailto()
    message = _Message(
        subject=rendered.subject,
        body=rendered.text,
        from_email=from_email or settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={
            "Message-ID": f"<{message_id}>",
            "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{mailto}?subject=unsubscribe>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    if rendered.html:
        message.attach_alternative(rendered.html, "text/html")
    # django-anymail passes metadata to the provider; its webhooks echo it back.
    message.metadata = {"leadcycle_message_id": message_id}
    return message
