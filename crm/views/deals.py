"""Deal pages: list with filters, detail, create from a contact, win, lose, churn."""

from __future__ import annotations

import django_filters
from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from crm import sales
from crm.lifecycle import StageChangeError
from crm.models import Contact, Deal, RejectionReason, Stage
from crm.roles import SALES_WRITES, Role, allow, has_role
from crm.sales_queries import deal_list as deal_list_query

PAGE_SIZE = 50


def _sales_users(request=None):
    return get_user_model().objects.filter(groups__name__in=[Role.SALES, Role.ADMIN]).distinct()


class DealFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Deal.Status.choices, empty_label="Any status")
    owner = django_filters.ModelChoiceFilter(queryset=_sales_users, empty_label="Any owner")
    created_from = django_filters.DateFilter(field_name="created_at", lookup_expr="date__gte")
    created_to = django_filters.DateFilter(field_name="created_at", lookup_expr="date__lt")
    closed_from = django_filters.DateFilter(field_name="closed_at", lookup_expr="date__gte")
    closed_to = django_filters.DateFilter(field_name="closed_at", lookup_expr="date__lt")
    min_amount = django_filters.NumberFilter(field_name="amount", lookup_expr="gte")
    max_amount = django_filters.NumberFilter(field_name="amount", lookup_expr="lte")

    class Meta:
        model = Deal
        fields: list[str] = []


class DealForm(forms.Form):
    name = forms.CharField(required=False, max_length=200)
    amount = forms.DecimalField(min_value=0, max_digits=14, decimal_places=2)


class LoseForm(forms.Form):
    reason = forms.CharField(
        max_length=200, error_messages={"required": "Say why the deal was lost."}
    )
    recycle_reason = forms.ModelChoiceField(
        queryset=RejectionReason.objects.filter(
            active=True, outcome=RejectionReason.Outcome.RECYCLE
        ),
        to_field_name="code",
        required=False,
        empty_label="Keep the contact where it is",
        label="Recycle the contact into nurture because",
    )


def _can_act(user) -> bool:
    return has_role(user, Role.SALES, Role.ADMIN)


@allow(SALES_WRITES)
@require_GET
def deal_list(request):
    filterset = DealFilter(request.GET or None, queryset=deal_list_query())
    qs = filterset.qs if filterset.is_bound and filterset.is_valid() else deal_list_query()
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "crm/deals/list.html",
        {"filter": filterset, "page": page, "query": query.urlencode()},
    )


@allow(SALES_WRITES)
@require_GET
def deal_detail(request, pk: int):
    deal = get_object_or_404(deal_list_query(), pk=pk)
    can_act = _can_act(request.user)
    return render(
        request,
        "crm/deals/detail.html",
        {
            "deal": deal,
            "can_act": can_act and deal.status == Deal.Status.OPEN,
            "can_churn": can_act and deal.contact.stage == Stage.CUSTOMER,
            "lose_form": LoseForm(),
        },
    )


@allow(SALES_WRITES)
def deal_create(request):
    contact = get_object_or_404(
        Contact.objects.select_related("company"), pk=_int(request.GET.get("contact"))
    )
    if request.method == "POST":
        form = DealForm(request.POST)
        if form.is_valid():
            try:
                deal = sales.deal_create(
                    contact=contact,
                    amount=form.cleaned_data["amount"],
                    name=form.cleaned_data["name"],
                    by=request.user,
                )
            except StageChangeError as err:
                form.add_error(None, str(err))
            except ValidationError as err:
                form.add_error(None, " ".join(err.messages))
            else:
                messages.success(request, f"Deal opened; {contact} is an opportunity now.")
                return redirect(deal.get_absolute_url())
    else:
        form = DealForm()
    return render(request, "crm/deals/form.html", {"form": form, "contact": contact})


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@allow(SALES_WRITES)
@require_POST
def deal_win(request, pk: int):
    deal = get_object_or_404(Deal, pk=pk)
    try:
        sales.deal_win(deal=deal, by=request.user)
    except (sales.DealClosed, StageChangeError) as err:
        messages.error(request, str(err))
    else:
        messages.success(request, "Deal won; the contact is a customer now.")
    return redirect(deal.get_absolute_url())


@allow(SALES_WRITES)
@require_POST
def deal_lose(request, pk: int):
    deal = get_object_or_404(Deal, pk=pk)
    form = LoseForm(request.POST)
    if not form.is_valid():
        errors = " ".join(str(e) for errs in form.errors.values() for e in errs)
        messages.error(request, f"Not marked lost: {errors}")
        return redirect(deal.get_absolute_url())
    recycle = form.cleaned_data["recycle_reason"]
    try:
        sales.deal_lose(
            deal=deal,
            by=request.user,
            reason=form.cleaned_data["reason"],
            recycle_reason_code=recycle.code if recycle else None,
        )
    except (sales.DealClosed, StageChangeError) as err:
        messages.error(request, str(err))
    except ValidationError as err:
        messages.error(request, f"Not marked lost: {' '.join(err.messages)}")
    else:
        tail = f"; the contact is recycled ({recycle.label})" if recycle else ""
        messages.success(request, f"Deal lost{tail}.")
    return redirect(deal.get_absolute_url())


@allow(SALES_WRITES)
@require_POST
def contact_churn(request, contact_pk: int):
    contact = get_object_or_404(Contact, pk=contact_pk)
    try:
        sales.customer_churn(contact=contact, by=request.user, note=request.POST.get("note", ""))
    except StageChangeError as err:
        messages.error(request, str(err))
    else:
        messages.success(request, f"{contact} is marked churned.")
    deal_pk = _int(request.POST.get("deal"))
    if deal_pk and Deal.objects.filter(pk=deal_pk).exists():
        return redirect("crm:deal-detail", pk=deal_pk)
    return redirect("crm:contact-detail", pk=contact.pk)
