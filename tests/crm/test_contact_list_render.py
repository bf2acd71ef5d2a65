"""The contact list's cheap rendering paths print exactly what the template path printed."""

from datetime import UTC, datetime

import pytest
from django import forms
from django.urls import reverse

from crm import services
from crm.filters import InlineNullBooleanSelect, InlineSelect, InlineSelectMultiple
from crm.models import Contact, EmailStatus
from tests.factories import CompanyFactory

XSS = "<script>alert(1)</script>"
CHOICES = [
    ("", "---------"),
    ("mql", "MQL"),
    ("a&b", XSS),
    (3, 'say "hi"'),
    ("Group <g>", [("x", "X"), ("y", "Y & Z")]),
]


@pytest.mark.parametrize(
    ("inline", "django_widget", "value"),
    [
        (InlineSelect, forms.Select, None),
        (InlineSelect, forms.Select, "mql"),
        (InlineSelect, forms.Select, "a&b"),
        (InlineSelect, forms.Select, 3),
        (InlineSelect, forms.Select, "y"),
        (InlineSelectMultiple, forms.SelectMultiple, None),
        (InlineSelectMultiple, forms.SelectMultiple, ["mql", "x"]),
        (InlineSelectMultiple, forms.SelectMultiple, [XSS]),
    ],
)
def test_inline_selects_render_the_same_bytes_as_djangos_templates(inline, django_widget, value):
    attrs = {"id": "id_f", "data-x": '"quoted"', "required": True, "disabled": False}
    expected = django_widget(choices=CHOICES).render("f<", value, attrs=attrs)
    assert inline(choices=CHOICES).render("f<", value, attrs=attrs) == expected


@pytest.mark.parametrize("value", [None, True, False, "true", "unknown"])
def test_the_inline_yes_no_select_renders_like_djangos(value):
    expected = forms.NullBooleanSelect().render("u", value, attrs={"id": "id_u"})
    assert InlineNullBooleanSelect().render("u", value, attrs={"id": "id_u"}) == expected


@pytest.mark.django_db
def test_list_rows_show_links_labels_and_local_dates(marketing_client, sales_user, settings):
    settings.TIME_ZONE = "America/New_York"
    acme = CompanyFactory(name="Acme & Co")
    services.contact_create(
        email="named@example.com", first_name="Ada", last_name="Lovelace", company=acme
    )
    nameless = services.contact_create(email="nameless@example.com", owner=sales_user)
    # 02:00 UTC is still the day before in New York.
    Contact.objects.filter(pk=nameless.pk).update(
        created_at=datetime(2026, 3, 1, 2, 0, tzinfo=UTC),
        email_status=EmailStatus.UNSUBSCRIBED,
    )
    body = marketing_client.get(reverse("crm:contact-list")).content.decode()
    assert f'<a href="{nameless.get_absolute_url()}">—</a>' in body
    assert f'<a href="{acme.get_absolute_url()}">Acme &amp; Co</a>' in body
    assert '<span class="badge bad">Unsubscribed</span>' in body
    assert "<td>2026-02-28</td>" in body
    assert f"<td>{sales_user.username}</td>" in body
    assert '<span class="badge">Lead</span>' in body
