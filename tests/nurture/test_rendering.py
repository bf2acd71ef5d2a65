import pytest

from nurture import rendering
from nurture.forms import EmailTemplateForm

CTX = rendering.merge_context(
    contact={"first_name": "<b>Ann</b>", "email": "ann@example.com", "company": "Acme"},
    owner={"name": "Sam", "signature": "Sam\nSales"},
    unsubscribe_url="https://crm.example.com/u/x",
)


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.__class__ }}",
        "{{ contact.__class__.__mro__ }}",
        "{% debug %}",
        "{% load log %}{% get_admin_log 10 as log %}",
        "{% include 'base.html' %}",
        "{% extends 'base.html' %}",
        "{% ssi '/etc/passwd' %}",
        "{%load static%}",
    ],
)
def test_hostile_templates_are_refused(source):
    with pytest.raises(rendering.TemplateRefused):
        rendering.template_check(source)


def test_templates_cannot_reach_settings_or_models():
    out = rendering.render_string(
        "[{{ settings.SECRET_KEY }}][{{ contact.objects }}][{{ request }}][{{ user.password }}]",
        CTX,
    )
    assert out == "[][][][]"


def test_merge_fields_render_escaped_in_html_and_plain_in_text():
    assert (
        rendering.render_string("Hi {{ contact.first_name }}", CTX) == "Hi &lt;b&gt;Ann&lt;/b&gt;"
    )
    text = rendering.render_string("Hi {{ contact.first_name }}", CTX, autoescape=False)
    assert text == "Hi <b>Ann</b>"
    out = rendering.render_string(
        '{{ contact.last_name|default:"there" }} at {{ company.name }}', CTX
    )
    assert out == "there at Acme"


@pytest.mark.django_db
def test_the_template_form_refuses_forbidden_tags():
    form = EmailTemplateForm(
        data={"name": "x", "subject": "Hi", "text_body": "{% debug %}", "html_body": ""}
    )
    assert not form.is_valid()
    assert "text_body" in form.errors


def test_links_are_rewritten_except_unsubscribe():
    html = (
        '<a href="https://a.example/x?y=1&amp;z=2">A</a><a href="https://a.example/x?y=1&amp;z=2">again</a>'
        '<a href="https://crm.example.com/u/tok">U</a><a href="mailto:x@y">M</a>'
    )
    out, links = rendering.rewrite_links(
        html,
        click_url=lambda i: f"https://crm.example.com/t/c/{i}",
        skip_prefix="https://crm.example.com/u/",
    )
    assert links == ["https://a.example/x?y=1&z=2"]
    assert out.count("/t/c/0") == 2
    assert "https://crm.example.com/u/tok" in out


def _django_render(source, context, autoescape):
    from django.template import Context

    template = rendering.engine().from_string(source)
    return template.render(Context(context, autoescape=autoescape))


HOSTILE_VALUES = ["<b>Ann</b>", 'O\'Brien & "Co"', "", "Zoë 🎉", "{{ x }}", "a\nb\r\nc"]
SOURCES = [
    "Hi {{ contact.first_name }}",
    '{{ contact.first_name|default:"there" }} at {{ company.name }}!',
    "{{ owner.signature|linebreaksbr }}",
    "{{ contact }}|{{ company }}|{{ contact.items }}|{{ contact.keys }}",
    "{{ True }} {{ None }} {{ missing }} {{ missing.deeper }} {{ contact.first_name.upper }}",
    "{{ settings.SECRET_KEY }}{{ contact.objects }}{{ request.user }}",
    "{{ 'literal' }} {{ 42 }} {{ _('translated') }}",
    "{% if contact.first_name %}Hi {{ contact.first_name }}{% else %}Hello{% endif %}",
    "{% for k in contact %}{{ k }},{% endfor %}",
    "{# a comment #}{{ unsubscribe_url }}{% comment %}x{% endcomment %}",
    "{{ safe_value }} {{ safe_value|upper }} {{ number }} {{ listing.0 }}",
    "",
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("autoescape", [True, False])
def test_the_fast_render_equals_djangos_render(source, value, autoescape):
    from django.utils.safestring import mark_safe

    context = rendering.merge_context(
        contact={"first_name": value, "company": value, "email": "a@example.com"},
        owner={"name": value, "signature": value},
        unsubscribe_url="https://crm.example.com/u/x?a=1&b=<2>",
    ) | {"safe_value": mark_safe(value), "number": 7, "listing": [value]}
    assert rendering.render_string(source, context, autoescape=autoescape) == _django_render(
        source, context, autoescape
    )


def test_flat_templates_take_the_planned_path_and_tagged_ones_do_not():
    assert rendering._plan("Hi {{ contact.first_name }} {{ owner.name|upper }}") is not None
    assert rendering._plan("{% if x %}{{ x }}{% endif %}") is None
