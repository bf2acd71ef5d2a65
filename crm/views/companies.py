"""Company list and page (its contacts and deals), create and edit."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from .. import services
from ..filters import CompanyFilter
from ..forms import CompanyForm
from ..models import Company, Contact, Deal
from ..roles import MARKETING_WRITES, allow
from .contacts import Page, page_number


@allow(MARKETING_WRITES)
def company_list(request):
    flt = CompanyFilter(request.GET, queryset=Company.objects.select_related("owner"))
    page = Page(flt.qs if flt.is_valid() else Company.objects.none(), page_number(request))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "crm/companies/list.html",
        {"filter": flt, "page": page, "query": query.urlencode()},
    )


@allow(MARKETING_WRITES)
def company_detail(request, pk: int):
    company = get_object_or_404(Company.objects.select_related("owner"), pk=pk)
    contacts = Page(
        Contact.objects.filter(company=company)
        .select_related("owner", "scorecard")
        .order_by("-created_at", "-id"),
        page_number(request),
    )
    deals = list(Deal.objects.filter(company=company).select_related("contact", "owner")[:100])
    return render(
        request,
        "crm/companies/detail.html",
        {"company": company, "contacts": contacts, "deals": deals},
    )


@require_http_methods(["GET", "POST"])
@allow(MARKETING_WRITES)
def company_form(request, pk: int | None = None):
    company = get_object_or_404(Company, pk=pk) if pk else None
    form = CompanyForm(request.POST or None, instance=company)
    if request.method == "POST" and form.is_valid():
        try:
            if company:
                services.company_update(company=company, by=request.user, **form.cleaned_data)
            else:
                company = services.company_create(by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Company {company} saved.")
            return redirect(company)
    return render(request, "crm/companies/form.html", {"form": form, "company": company})
