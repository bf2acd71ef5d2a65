"""The sender's lean MIME build equals Django's own ``EmailMessage.message()``."""

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import BadHeaderError

from nurture.mail import _Message, build_email
from nurture.rendering import Rendered


def _tree(msg):
    """Everything a MIME object holds, the Date value aside (it is the clock)."""
    headers = [(k, "<date>" if k == "Date" else v) for k, v in msg._headers]
    payload = msg._payload
    if isinstance(payload, list):
        payload = [_tree(p) for p in payload]
    state = {k: v for k, v in vars(msg).items() if k not in ("_headers", "_payload")}
    return type(msg), headers, payload, state


def _django_build(message):
    return EmailMultiAlternatives.message(message)


def _bytes(msg):
    if msg.is_multipart():
        msg.set_boundary("BOUNDARY")
    return msg.as_bytes()


CASES = {
    "ascii": dict(subject="Hello Ann", text="Hi Ann https://x.example", html="<p>Hi Ann</p>"),
    "accents and emoji": dict(
        subject="Héllo Zoë 🎉", text="Grüße, Zoë — bis bald", html="<p>Grüße 🎉</p>"
    ),
    "long ascii subject folds": dict(
        subject="A very long subject line " * 6, text="body", html="<b>x</b>"
    ),
    "long non-ascii subject": dict(subject="Ünïcödé " * 20, text="body", html="<b>x</b>"),
    "text only": dict(subject="Plain", text="Just text\nover two lines", html=""),
    "html only": dict(subject="Only HTML", text="", html="<p>only html</p>"),
    "over-long line goes quoted-printable": dict(
        subject="Long", text="word " * 400, html="<p>" + "é" * 600 + "</p>"
    ),
    "many short lines": dict(subject="Lines", text="line\n" * 500, html="<br>\n" * 500),
    "line just over the limit": dict(subject="Edge", text="x" * 999, html="é" * 499 + "x"),
    "cr and crlf line ends": dict(subject="CR", text="a\r\nb\rc", html="<p>\r\n</p>"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("to", ["ann@example.com", "zoë@exämple.com", "Ann <ann@example.com>"])
def test_the_lean_mime_build_equals_djangos(case, to):
    message = build_email(
        to=to,
        rendered=Rendered(subject=case["subject"], text=case["text"], html=case["html"]),
        message_id="0123abcd@leadcycle.example",
        unsubscribe_url="https://leadcycle.example/u/token:abc",
    )
    ours, django = message.message(), _django_build(message)
    assert _tree(ours) == _tree(django)
    date = dict(django._headers)["Date"]
    ours.replace_header("Date", date)
    assert _bytes(ours) == _bytes(django)


def test_other_shapes_take_djangos_own_build():
    message = _Message(
        subject="s",
        body="b",
        to=["a@example.com"],
        cc=["c@example.com"],
        reply_to=["r@example.com"],
        headers={"X-Thing": "1"},  # no Message-ID: Django makes one
    )
    message.attach("notes.txt", "hello", "text/plain")
    message.attach_alternative("<p>b</p>", "text/html")
    msg = message.message()
    assert msg["Cc"] == "c@example.com"
    assert msg["Reply-To"] == "r@example.com"
    assert msg["Message-ID"]
    assert msg.get_content_type() == "multipart/mixed"


@pytest.mark.parametrize(
    "field", ["subject", "to", "message_id", "unsubscribe_url"], ids=lambda f: f
)
def test_header_injection_is_still_refused(field):
    values = dict(
        subject="Hello",
        to="ann@example.com",
        message_id="m@leadcycle.example",
        unsubscribe_url="https://leadcycle.example/u/t",
    )
    values[field] += "\r\nBcc: victim@example.com"
    message = build_email(
        to=values["to"],
        rendered=Rendered(subject=values["subject"], text="t", html="<p>h</p>"),
        message_id=values["message_id"],
        unsubscribe_url=values["unsubscribe_url"],
    )
    with pytest.raises((BadHeaderError, ValueError)):
        _django_build(message)
    with pytest.raises((BadHeaderError, ValueError)):
        message.message()


def test_a_deep_copy_shares_nothing_mutable():
    import copy

    message = build_email(
        to="ann@example.com",
        rendered=Rendered(subject="s", text="t", html="<p>h</p>"),
        message_id="m@leadcycle.example",
        unsubscribe_url="https://leadcycle.example/u/t",
    )
    clone = copy.deepcopy(message)
    for name in ("to", "cc", "bcc", "reply_to", "alternatives", "attachments", "extra_headers"):
        assert getattr(clone, name) == getattr(message, name)
        assert getattr(clone, name) is not getattr(message, name)
    assert clone.metadata == message.metadata
    assert clone.metadata is not message.metadata
    clone.to.append("x@example.com")
    clone.extra_headers["X"] = "1"
    assert message.to == ["ann@example.com"]
    assert "X" not in message.extra_headers
    assert clone.message().as_bytes() != b""
