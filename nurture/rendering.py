"""Email templates rendered in a sandbox: a separate Engine and a context of plain values.

A template can read the allowed contact fields, the owner's name and signature and the
unsubscribe link, and nothing else: the context holds only strings in dicts (no model
instances to walk into, no settings), the engine has Django's built-in tags and filters
only (no app libraries), and tags that reach outside the template are refused when a
template is saved and again when it is rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from html import escape
from typing import NamedTuple
from urllib.parse import urlsplit

from django.template import Context, Engine, TemplateSyntaxError
from django.template.base import TextNode, Variable, VariableNode
from django.utils.safestring import SafeString

FORBIDDEN_TAGS = re.compile(r"{%-?\s*(load|include|extends|debug|ssi)\b", re.IGNORECASE)
# Links rewritten for click tracking: absolute http(s) hrefs of <a> tags.
HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.IGNORECASE)


class TemplateRefused(ValueError):
    """The template uses a tag that is not allowed or does not compile."""


@lru_cache(maxsize=1)
def engine() -> Engine:
    """Built-ins only, autoescape on, no loaders: templates are strings from the database."""
    return Engine(
        dirs=[],
        app_dirs=False,
        libraries={},
        builtins=[],  # Engine always adds Django's default builtins (tags and filters)
        autoescape=True,
        debug=False,
        string_if_invalid="",
        loaders=[("django.template.loaders.locmem.Loader", {})],
    )


def template_check(source: str) -> None:
    """Raise :class:`TemplateRefused` for forbidden tags or a syntax error."""
    if FORBIDDEN_TAGS.search(source or ""):
        raise TemplateRefused(
            "{% load %}, {% include %}, {% extends %}, {% debug %} and {% ssi %} are not allowed."
        )
    try:
        engine().from_string(source or "")
    except TemplateSyntaxError as exc:
        raise TemplateRefused(f"Template error: {exc}") from exc


@lru_cache(maxsize=512)
def _compiled(source: str):
    template_check(source)
    return engine().from_string(source)


def merge_context(*, contact: dict, owner: dict, unsubscribe_url: str) -> dict:
    """The whole world a template can see, as plain strings."""
    return {
        "contact": {
            k: str(contact.get(k) or "")
            for k in ("first_name", "last_name", "email", "job_title", "country")
        }
        | {"company": str(contact.get("company") or "")},
        "company": {"name": str(contact.get("company") or "")},
        "owner": {k: str(owner.get(k) or "") for k in ("name", "first_name", "email", "signature")},
        "unsubscribe_url": unsubscribe_url,
    }


class _Field(NamedTuple):
    """A bare ``{{ a.b }}``: its lookups, and its node for values that are not strings."""

    lookups: tuple
    node: VariableNode


@lru_cache(maxsize=512)
def _plan(source: str) -> tuple | None:
    """A flat template (text and ``{{ variables }}`` only) as a tuple of its parts.

    A literal is kept as its string; a filter-less variable as a :class:`_Field`; any
    other variable as its node. A template with a tag
    (``{% if %}``, ``{% for %}`` …) has no plan and renders through its node list.
    """
    parts: list = []
    for node in _compiled(source).nodelist:
        if isinstance(node, TextNode):
            parts.append(node.s)
        elif not isinstance(node, VariableNode):
            return None
        elif _plain_lookup(node):
            parts.append(_Field(node.filter_expression.var.lookups, node))
        else:
            parts.append(node)
    return tuple(parts)


def _plain_lookup(node: VariableNode) -> bool:
    var = node.filter_expression.var
    return (
        not node.filter_expression.filters
        and isinstance(var, Variable)
        and var.lookups is not None
        and not var.translate
    )


def _context(template, context: dict, autoescape: bool) -> Context:
    # What Template.render() does, minus its two context managers that only restore
    # state on a Context we throw away: bind the template, then render the nodes.
    ctx = Context(context, autoescape=autoescape)
    ctx.template = ctx.render_context.template = template
    ctx.template_name = template.name
    return ctx


def render_string(source: str, context: dict, *, autoescape: bool = True) -> str:
    """Render ``source`` against ``context`` exactly as Django's engine does.

    Merge fields are mostly bare ``{{ contact.first_name }}`` reads of the plain strings
    :func:`merge_context` builds; those are looked up in the dicts and escaped here
    directly — what Django's variable resolution and ``render_value_in_context`` do for
    a ``str`` value — instead of through the engine's per-variable machinery (the bulk
    of a render, repeated for every email of a batch). Any other value (missing key,
    ``SafeString``, a dict, a builtin such as ``True``) and any variable with filters
    renders through its Django node; templates with tags render through the node list.
    ``tests/nurture/test_rendering.py`` checks the equality with Django's own render.
    """
    source = source or ""
    plan = _plan(source)
    if plan is None:
        template = _compiled(source)
        return template.nodelist.render(_context(template, context, autoescape))
    out = []
    ctx = None
    for part in plan:
        cls = part.__class__
        if cls is str:
            out.append(part)
            continue
        if cls is _Field:
            value = context
            for bit in part.lookups:
                if value.__class__ is not dict or bit not in value:
                    value = None
                    break
                value = value[bit]
            if value.__class__ is str:
                out.append(escape(value) if autoescape else value)  # = django.utils.html.escape
                continue
            part = part.node  # not a plain string: Django resolves it
        if ctx is None:
            ctx = _context(_compiled(source), context, autoescape)
        out.append(part.render_annotated(ctx))
    return SafeString("".join(out))


@dataclass
class Rendered:
    subject: str
    text: str
    html: str
    links: list[str] = field(default_factory=list)


def render_email(template, context: dict) -> Rendered:
    """Subject and text without HTML escaping (they are not HTML); the HTML body escaped."""
    subject = " ".join(render_string(template.subject, context, autoescape=False).split())
    text = render_string(template.text_body, context, autoescape=False)
    html = ""
    if template.html_body:
        html = render_string(template.html_body, context)
        if template.preheader:
            pre = escape(render_string(template.preheader, context, autoescape=False))
            html = f'<div class="preheader" hidden>{pre}</div>' + html
    return Rendered(subject=subject[:300], text=text, html=html)


def rewrite_links(html: str, *, click_url, skip_prefix: str) -> tuple[str, list[str]]:
    """Replace each tracked link by ``click_url(index)``; return the HTML and the links.

    The unsubscribe link (``skip_prefix``) is left alone: clicking it is not a click.
    """
    links: list[str] = []

    def swap(match: re.Match) -> str:
        url = match.group(3).replace("&amp;", "&")
        if url.startswith(skip_prefix) or urlsplit(url).scheme not in ("http", "https"):
            return match.group(0)
        if url in links:
            index = links.index(url)
        else:
            links.append(url)
            index = len(links) - 1
        return f"{match.group(1)}{match.group(2)}{escape(click_url(index))}{match.group(2)}"

    return HREF.sub(swap, html), links


def add_open_pixel(html: str, pixel_url: str) -> str:
    tag = f'<img src="{escape(pixel_url)}" width="1" height="1" alt="">'
    if "</body>" in html:
        return html.replace("</body>", tag + "</body>", 1)
    return html + tag
