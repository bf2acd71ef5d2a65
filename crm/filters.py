"""django-filter FilterSets shared by the HTML lists, the exports and the API."""

from __future__ import annotations

from datetime import date, datetime, time

import django_filters as filters
from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.lookups import In
from django.forms.models import ModelChoiceIterator
from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe
from drf_spectacular.utils import extend_schema_field

from .models import (
    Activity,
    ActivityKind,
    Campaign,
    CampaignMember,
    Company,
    Contact,
    EmailStatus,
    Source,
    Stage,
)
from .roles import Role

CONTACT_ORDERINGS = {
    "created": ["-created_at", "-id"],
    "-created": ["created_at", "id"],
    "score": ["-scorecard__score", "id"],
    # Every "-" sort is the exact reverse of its sort: the same index, read backwards.
    "-score": ["scorecard__score", "-id"],
    "name": ["last_name", "first_name", "id"],
    "-name": ["-last_name", "-first_name", "-id"],
    "stage": ["scorecard__stage", "-scorecard__score", "id"],
}
# Sorts read in order from an index of crm.ContactScore (the contact's score row, with
# copies of its stage and owner). Under them the stage and owner filters test the copies,
# so that one index of that table serves the filter and the order together — a filter on
# the contact's own columns would make PostgreSQL walk the score order and probe contacts
# until a page is full (seconds for an owner with few contacts of the stage).
SCORECARD_SORTS = {"score", "-score", "stage"}
SCORECARD_FIELDS = {
    "stage": "scorecard__stage",
    "owner": "scorecard__owner",
    "unassigned": "scorecard__owner",
}


def _attrs_html(attrs: dict) -> str:
    """django/forms/widgets/attrs.html, in Python."""
    return "".join(
        f" {name}" if value is True else f' {name}="{conditional_escape(str(value))}"'
        for name, value in attrs.items()
        if value is not False
    )


class InlineOptionsMixin:
    """A select rendered in Python with the markup of Django's ``select.html`` and
    ``select_option.html`` templates (``get_context`` — selection, optgroups — is Django's).

    The templates include ``select_option.html`` once per option; on the contact list the
    filter selects cost more CPU than the 50 rows of the table. Tested to render the same
    bytes as the template path (tests/crm/test_contact_list_render.py).
    """

    def render(self, name, value, attrs=None, renderer=None):
        widget = self.get_context(name, value, attrs)["widget"]
        parts = [
            f'<select name="{conditional_escape(widget["name"])}"{_attrs_html(widget["attrs"])}>'
        ]
        for group_name, options, _index in widget["optgroups"]:
            if group_name:
                parts.append(f'\n  <optgroup label="{conditional_escape(group_name)}">')
            parts.extend(
                f'\n  <option value="{conditional_escape(str(option["value"]))}"'
                f"{_attrs_html(option['attrs'])}>{conditional_escape(option['label'])}"
                "</option>\n"
                for option in options
            )
            if group_name:
                parts.append("\n  </optgroup>")
        parts.append("\n</select>")
        return mark_safe("".join(parts))  # every value above is escaped


class InlineSelect(InlineOptionsMixin, forms.Select):
    pass


class InlineSelectMultiple(InlineOptionsMixin, forms.SelectMultiple):
    pass


class InlineNullBooleanSelect(InlineOptionsMixin, forms.NullBooleanSelect):
    pass


class FetchedModelChoiceIterator(ModelChoiceIterator):
    """Choices read with one plain query.

    Django's iterator uses ``QuerySet.iterator()``, which on PostgreSQL opens a server-side
    cursor (DECLARE, FETCH, CLOSE: three round trips) for a dozen users or campaigns.
    """

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in self.queryset:
            yield self.choice(obj)


class FetchedModelChoiceField(forms.ModelChoiceField):
    iterator = FetchedModelChoiceIterator


class FetchedModelChoiceFilter(filters.ModelChoiceFilter):
    field_class = FetchedModelChoiceField


def day_start(day: date) -> datetime:
    """The first instant whose date in the current time zone is ``day`` — what
    ``created_at__date`` compares against, as an instant an index can range over."""
    # A midnight skipped by a DST jump resolves (fold=0) to the jump itself: still the day's
    # first instant (tested with such zones).
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


class IdFilter(filters.NumberFilter):
    """A row id: an integer within the database's range (a huge number is a 400, not a 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


def staff_users(request=None):
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=[Role.SALES, Role.MARKETING, Role.ADMIN])
        .distinct()
        .order_by("username")
    )


class InIdArray(In):
    """``lhs IN (SELECT id ...)``, written ``lhs = ANY(ARRAY(SELECT id ...))`` on PostgreSQL.

    Same rows (NULL and an empty set behave alike). Inside an OR, PostgreSQL keeps ``IN
    (subquery)`` as a hashed SubPlan tested against every row, so the whole OR becomes a
    sequential scan; the ARRAY form is run once (an InitPlan) and ``= ANY($array)`` is an
    index condition, so the branch joins the others in a BitmapOr. Used as a filter
    expression: ``Q(InIdArray(F("company_id"), Company.objects.filter(...).values("id")))``.
    """

    def as_postgresql(self, compiler, connection):
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        rhs_sql, rhs_params = self.process_rhs(compiler, connection)  # "(SELECT ...)"
        return f"{lhs_sql} = ANY(ARRAY{rhs_sql})", (*lhs_params, *rhs_params)


class ContactFilter(filters.FilterSet):
    q = filters.CharFilter(method="search", label="Search")
    # distinct=False: a filter on the contact's own column cannot repeat a row, and
    # SELECT DISTINCT over the page's columns made PostgreSQL sort every matching contact
    # instead of reading the (stage, score) index in order.
    stage = filters.MultipleChoiceFilter(
        choices=Stage.choices, widget=InlineSelectMultiple, distinct=False
    )
    owner = FetchedModelChoiceFilter(queryset=staff_users, widget=InlineSelect)
    unassigned = filters.BooleanFilter(
        field_name="owner",
        lookup_expr="isnull",
        label="Unassigned",
        widget=InlineNullBooleanSelect,
    )
    source = filters.ChoiceFilter(choices=Source.choices, widget=InlineSelect)
    score_min = filters.NumberFilter(
        field_name="scorecard__score", lookup_expr="gte", label="Score ≥"
    )
    score_max = filters.NumberFilter(
        field_name="scorecard__score", lookup_expr="lte", label="Score ≤"
    )
    company = IdFilter(field_name="company_id", label="Company id")
    # Dates are days of the site time zone; compared as instants so the created_at index
    # serves them (``created_at::date`` in SQL would read every row of the sort order).
    created_after = filters.DateFilter(
        field_name="created_at",
        method="created_from",
        label="Created from",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    created_before = filters.DateFilter(
        field_name="created_at",
        method="created_until",
        label="Created before",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    email_status = filters.ChoiceFilter(choices=EmailStatus.choices, widget=InlineSelect)
    campaign = FetchedModelChoiceFilter(
        queryset=Campaign.objects.order_by("name"),
        method="in_campaign",
        label="Campaign",
        widget=InlineSelect,
    )
    sort = filters.ChoiceFilter(
        choices=[(k, k) for k in CONTACT_ORDERINGS],
        method="order",
        empty_label="newest",
        widget=InlineSelect,
    )

    class Meta:
        model = Contact
        fields: list[str] = []

    def filter_queryset(self, queryset):
        if self.form.cleaned_data.get("sort") in SCORECARD_SORTS:
            for name, field_name in SCORECARD_FIELDS.items():
                self.filters[name].field_name = field_name
        return super().filter_queryset(queryset)

    def search(self, queryset, name, value):
        """Prefix search: index-friendly on big tables, and what people type anyway.

        On PostgreSQL every branch of the OR is an index scan (a BitmapOr): email by its
        ``varchar_pattern_ops`` index, names and company names by the ``UPPER(...)
        text_pattern_ops`` indexes of migration 0009 (what ``istartswith`` compiles to), the
        company branch by ``company_id = ANY(ARRAY(...))`` (see ``InIdArray``). A term that
        matches nothing then reads a few index pages instead of every contact.
        """
        value = value.strip()
        if not value:
            return queryset
        if "@" in value:
            return queryset.filter(email__startswith=Contact.normalise_email(value))
        companies = Company.objects.filter(name__istartswith=value)
        condition = (
            Q(email__startswith=value.lower())
            | Q(last_name__istartswith=value)
            | Q(first_name__istartswith=value)
            # The company as an id list, not a join: an OR across a join reads every contact.
            | Q(InIdArray(F("company_id"), companies.order_by().values("id")))
        )
        parts = value.split()
        if len(parts) == 2:
            condition |= Q(first_name__istartswith=parts[0], last_name__istartswith=parts[1])
        return queryset.filter(condition)

    def created_from(self, queryset, name, value):
        """Created on ``value`` or later (the old ``created_at__date__gte``)."""
        return queryset.filter(created_at__gte=day_start(value))

    def created_until(self, queryset, name, value):
        """Created before ``value`` began (the old ``created_at__date__lt``)."""
        return queryset.filter(created_at__lt=day_start(value))

    # The API schema: its type cannot be read from a method filter.
    @extend_schema_field(
        {"type": "integer", "description": "Campaign id: acquired by it, or any activity in it"}
    )
    def in_campaign(self, queryset, name, value):
        """Acquired by the campaign, or any activity in it.

        Both are rows of ``CampaignMember`` (kept equal to the activities and acquisitions
        by crm.campaign_members), so the filter is one semi-join the planner can run either
        way: per contact of the sort order a probe of its (campaign, contact) key for a big
        campaign, or the few members first for a small one. (The OR of the acquisition and
        an EXISTS over the campaign's activities hashed millions of rows per request.)
        """
        members = CampaignMember.objects.filter(campaign=value, contact=OuterRef("pk"))
        return queryset.filter(Exists(members))

    def order(self, queryset, name, value):
        ordering = CONTACT_ORDERINGS.get(value, CONTACT_ORDERINGS["created"])
        if value in SCORECARD_SORTS:
            # An inner join (every contact has its row): a left join, Django's default for
            # the reverse one-to-one, could not be read in the score index's order.
            queryset = queryset.filter(scorecard__isnull=False)
        return queryset.order_by(*ordering)


class CompanyFilter(filters.FilterSet):
    q = filters.CharFilter(method="search", label="Search")
    industry = filters.CharFilter(lookup_expr="iexact")
    size_band = filters.ChoiceFilter(choices=Company.SizeBand.choices)
    country = filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Company
        fields: list[str] = []

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(name__istartswith=value) | Q(domain__istartswith=value.lower()))


class CampaignFilter(filters.FilterSet):
    q = filters.CharFilter(field_name="name", lookup_expr="icontains", label="Search")
    status = filters.ChoiceFilter(choices=Campaign.Status.choices)
    channel = filters.ChoiceFilter(choices=Campaign._meta.get_field("channel").choices)
    type = filters.ChoiceFilter(choices=Campaign.Type.choices)

    class Meta:
        model = Campaign
        fields: list[str] = []


class ActivityFilter(filters.FilterSet):
    contact = IdFilter(field_name="contact_id")
    kind = filters.MultipleChoiceFilter(choices=ActivityKind.choices)
    campaign = IdFilter(field_name="campaign_id")
    occurred_after = filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    external_id = filters.CharFilter()

    class Meta:
        model = Activity
        fields: list[str] = []
