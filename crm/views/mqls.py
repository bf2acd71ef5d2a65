"""The MQL queue: sales works it (accept, reject with a reason, claim); marketing reads it."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from crm import extensions, sales
from crm.lifecycle import StageChangeError
from crm.models import Contact, LifecycleTransition, RejectionReason, Stage
from crm.roles import SALES_WRITES, Role, allow, has_role
from crm.sales_queries import (
    QUEUE_SORTS,
    QUEUE_TABS,
    mark_overdue,
    mql_queue,
    response_target,
    with_recent_activities,
)

PAGE_SIZE = 50


class AcceptForm(forms.Form):
    amount = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=14,
        decimal_places=2,
        help_text="Optional: opens a deal with this amount.",
    )
    deal_name = forms.CharField(required=False, max_length=200)


class RejectForm(forms.Form):
    reason = forms.ModelChoiceField(
        queryset=RejectionReason.objects.filter(active=True),
        to_field_name="code",
        empty_label="Choose a reason…",
        error_messages={"required": "Choose a reason to reject the lead."},
    )
    note = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


def _can_act(user) -> bool:
    return has_role(user, Role.SALES, Role.ADMIN)


def _reasons_grouped() -> list[tuple[str, list[RejectionReason]]]:
    """Active reasons grouped by outcome for the reject select (one query)."""
    groups: dict[str, list[RejectionReason]] = {}
    for r in RejectionReason.objects.filter(active=True):
        groups.setdefault(r.get_outcome_display(), []).append(r)
    return list(groups.items())


@allow(SALES_WRITES)
@require_GET
def queue(request):
    tab = request.GET.get("tab") or ("mine" if _can_act(request.user) else "team")
    tab = tab if tab in QUEUE_TABS else "team"
    sort = request.GET.get("sort") or "score"
    sort = sort if sort in QUEUE_SORTS else "score"
    qs = with_recent_activities(mql_queue(tab=tab, user=request.user, sort=sort))
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    contacts = list(page.object_list)
    mark_overdue(contacts)
    summaries = extensions.contact_summaries(c.pk for c in contacts)
    for c in contacts:
        c.summary_lines = summaries.get(c.pk, [])
    return render(
        request,
        "crm/mqls/queue.html",
        {
            "tabs": QUEUE_TABS.items(),
            "tab": tab,
            "sort": sort,
            "page": page,
            "contacts": contacts,
            "can_act": _can_act(request.user),
            "reason_groups": _reasons_grouped() if tab != "reengaged" else [],
            "target_hours": response_target().total_seconds() / 3600,
            "here": request.get_full_path(),
        },
    )


@allow(SALES_WRITES)
@require_GET
def detail(request, pk: int):
    contact = with_recent_activities(mql_queue(tab="team")).filter(pk=pk).first()
    if contact is None:  # decided already, or re-engaged: no SLA clock running
        contact = get_object_or_404(
            with_recent_activities(Contact.objects.select_related("company", "owner", "scorecard")),
            pk=pk,
        )
        contact.queued_at = None
    mark_overdue([contact])
    history = (
        LifecycleTransition.objects.filter(contact=contact)
        .select_related("by_user")
        .order_by("-at", "-id")[:20]
    )
    return render(
        request,
        "crm/mqls/detail.html",
        {
            "c": contact,
            "summary_lines": extensions.contact_summaries([contact.pk]).get(contact.pk, []),
            "history": history,
            "can_act": _can_act(request.user) and contact.stage == Stage.MQL,
            "reason_groups": _reasons_grouped(),
            "accept_form": AcceptForm(),
            "reject_form": RejectForm(),
            "target_hours": response_target().total_seconds() / 3600,
            "here": request.get_full_path(),
        },
    )


def _back(request):
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(reverse("crm:mql-queue"))


def _name(contact_id: int) -> str:
    c = Contact.objects.filter(pk=contact_id).only("first_name", "last_name", "email").first()
    return str(c) if c else "the lead"


def _form_errors(form) -> str:
    return " ".join(str(e) for errs in form.errors.values() for e in errs)


@allow(SALES_WRITES)
@require_POST
def accept(request, pk: int):
    get_object_or_404(Contact, pk=pk)
    form = AcceptForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not accepted: {_form_errors(form)}")
        return _back(request)
    try:
        decision = sales.mql_accept(
            contact_id=pk,
            by=request.user,
            amount=form.cleaned_data["amount"],
            deal_name=form.cleaned_data["deal_name"],
        )
    except StageChangeError as err:
        messages.error(request, str(err))
    except ValidationError as err:
        messages.error(request, f"Not accepted: {' '.join(err.messages)}")
    else:
        extra = f" and opened a deal of {decision.deal.amount}" if decision.deal else ""
        messages.success(request, f"You accepted {_name(pk)}{extra}.")
    return _back(request)


@allow(SALES_WRITES)
@require_POST
def reject(request, pk: int):
    get_object_or_404(Contact, pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not rejected: {_form_errors(form)}")
        return _back(request)
    reason = form.cleaned_data["reason"]
    try:
        sales.mql_reject(
            contact_id=pk, by=request.user, reason_code=reason.code, note=form.cleaned_data["note"]
        )
    except StageChangeError as err:
        messages.error(request, str(err))
    except ValidationError as err:
        messages.error(request, f"Not rejected: {' '.join(err.messages)}")
    else:
        outcome = "recycled into nurture" if reason.outcome == Stage.RECYCLED else "disqualified"
        messages.success(request, f"You rejected {_name(pk)} ({reason.label}): {outcome}.")
    return _back(request)


@allow(SALES_WRITES)
@require_POST
def claim(request, pk: int):
    get_object_or_404(Contact, pk=pk)
    try:
        sales.mql_claim(contact_id=pk, by=request.user)
    except (StageChangeError, ValidationError) as err:
        messages.error(request, " ".join(getattr(err, "messages", [str(err)])))
    else:
        messages.success(request, f"{_name(pk)} is yours now.")
    return _back(request)
