"""Campaign list and page with its cost entries (add, edit, delete, shared splits)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from .. import services
from ..filters import CampaignFilter
from ..forms import CampaignForm, CostForm
from ..models import Campaign, CampaignCost
from ..roles import MARKETING_WRITES, allow
from .contacts import Page, page_number


@allow(MARKETING_WRITES)
def campaign_list(request):
    queryset = Campaign.objects.select_related("owner").annotate(
        cost_total=Sum("costs__amount"), cost_entries=Count("costs")
    )
    flt = CampaignFilter(request.GET, queryset=queryset)
    page = Page(flt.qs if flt.is_valid() else Campaign.objects.none(), page_number(request))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "crm/campaigns/list.html",
        {"filter": flt, "page": page, "query": query.urlencode()},
    )


@allow(MARKETING_WRITES)
def campaign_detail(request, pk: int):
    campaign = get_object_or_404(Campaign.objects.select_related("owner"), pk=pk)
    costs = list(CampaignCost.objects.filter(campaign=campaign).prefetch_related("shared_with"))
    shared_in = list(CampaignCost.objects.filter(shared_with=campaign).select_related("campaign"))
    return render(
        request,
        "crm/campaigns/detail.html",
        {
            "campaign": campaign,
            "costs": costs,
            "shared_in": shared_in,
            "cost_total": sum(c.amount for c in costs),
            "cost_form": CostForm(campaign=campaign),
        },
    )


@require_http_methods(["GET", "POST"])
@allow(MARKETING_WRITES)
def campaign_form(request, pk: int | None = None):
    campaign = get_object_or_404(Campaign, pk=pk) if pk else None
    form = CampaignForm(request.POST or None, instance=campaign)
    if request.method == "POST" and form.is_valid():
        try:
            if campaign:
                services.campaign_update(campaign=campaign, by=request.user, **form.cleaned_data)
            else:
                campaign = services.campaign_create(by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Campaign {campaign} saved.")
            return redirect(campaign)
    return render(request, "crm/campaigns/form.html", {"form": form, "campaign": campaign})


def _cost_fields(form) -> tuple[dict, list]:
    data = dict(form.cleaned_data)
    return data, list(data.pop("shared_with", []))


def _apply_errors(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for name, errors in exc.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, exc)


@require_http_methods(["GET", "POST"])
@allow(MARKETING_WRITES)
def cost_form(request, pk: int, cost_pk: int | None = None):
    campaign = get_object_or_404(Campaign, pk=pk)
    cost = get_object_or_404(CampaignCost, pk=cost_pk, campaign=campaign) if cost_pk else None
    form = CostForm(request.POST or None, instance=cost, campaign=campaign)
    if request.method == "POST" and form.is_valid():
        fields, shared_with = _cost_fields(form)
        try:
            if cost:
                services.cost_update(cost=cost, by=request.user, shared_with=shared_with, **fields)
            else:
                services.cost_create(
                    campaign=campaign, by=request.user, shared_with=shared_with, **fields
                )
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            messages.success(request, "Cost saved.")
            return redirect(campaign)
    return render(
        request, "crm/campaigns/cost_form.html", {"form": form, "campaign": campaign, "cost": cost}
    )


@require_POST
@allow(MARKETING_WRITES)
def cost_delete(request, pk: int, cost_pk: int):
    cost = get_object_or_404(CampaignCost, pk=cost_pk, campaign_id=pk)
    services.cost_delete(cost=cost, by=request.user)
    messages.success(request, "Cost entry deleted.")
    return redirect("crm:campaign-detail", pk=pk)
