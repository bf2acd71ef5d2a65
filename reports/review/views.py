"""Register pages: the register, one item with its trend, review now, exports."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from crm.roles import EVERYONE, MARKETING_WRITES, allow

from . import services, trends
from .export import register_download
from .forms import BaselineForm, CadenceForm, ReviewForm
from .models import ContentAsset, ReviewItem
from .register import register_rows, scoring_alert


@allow(MARKETING_WRITES)
def register(request):
    if request.method == "POST":
        created = services.register_sync()
        messages.success(request, f"Register refreshed: {created} new item(s).")
        return redirect("review")
    if not ReviewItem.objects.exists():
        services.register_sync()
    rows = register_rows()
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row.item.get_type_display(), []).append(row)
    return render(
        request,
        "reports/review/register.html",
        {
            "groups": groups,
            "overdue": sum(r.overdue for r in rows),
            "alert": scoring_alert(),
            "content_types": ContentAsset.Type.choices,
            "review_form": ReviewForm(),
        },
    )


@allow(MARKETING_WRITES)
def item_detail(request, pk: int):
    item = get_object_or_404(ReviewItem.objects.select_related("owner"), pk=pk)
    row = next((r for r in register_rows(item_type=item.type) if r.item.pk == item.pk), None)
    return render(
        request,
        "reports/review/item.html",
        {
            "item": item,
            "row": row,
            "reviews": item.reviews.select_related("reviewer").order_by("-reviewed_at"),
            "short": trends.short_term(item),
            "long": trends.long_term(item),
            "review_form": ReviewForm(),
            "cadence_form": CadenceForm(instance=item),
            "baseline_form": BaselineForm(item=item),
        },
    )


@allow(MARKETING_WRITES)
@require_POST
def review_now(request, pk: int):
    item = get_object_or_404(ReviewItem, pk=pk)
    form = ReviewForm(request.POST)
    if form.is_valid():
        services.review_record(
            item=item,
            reviewer=request.user,
            decision=form.cleaned_data["decision"],
            notes=form.cleaned_data["notes"],
        )
        messages.success(request, f"Review of “{item.name}” recorded.")
    else:
        messages.error(request, "Choose a decision (keep, change or retire).")
    return redirect("review-item", pk=item.pk)


@allow(MARKETING_WRITES)
@require_POST
def review_content_group(request, content_type: str):
    form = ReviewForm(request.POST)
    if not form.is_valid() or content_type not in ContentAsset.Type.values:
        messages.error(request, "Choose a decision and a content type.")
        return redirect("review")
    reviews = services.review_record_group(
        content_type=content_type,
        reviewer=request.user,
        decision=form.cleaned_data["decision"],
        notes=form.cleaned_data["notes"],
    )
    messages.success(
        request,
        f"Reviewed {len(reviews)} {ContentAsset.Type(content_type).label} item(s) together.",
    )
    return redirect("review")


@allow(MARKETING_WRITES)
@require_POST
def cadence_edit(request, pk: int):
    item = get_object_or_404(ReviewItem, pk=pk)
    form = CadenceForm(request.POST, instance=item)
    if form.is_valid():
        form.save()
        messages.success(request, "Cadence saved.")
    else:
        messages.error(request, "; ".join(e for errs in form.errors.values() for e in errs))
    return redirect("review-item", pk=item.pk)


@allow(MARKETING_WRITES)
@require_POST
def baseline_edit(request, pk: int):
    item = get_object_or_404(ReviewItem, pk=pk)
    form = BaselineForm(request.POST, item=item)
    if form.is_valid() and form.figures():
        services.baseline_set_manual(
            item=item, figures=form.figures(), note=form.cleaned_data["note"]
        )
        messages.success(request, "Baseline saved.")
    else:
        messages.error(request, "Enter at least one figure (numbers; rates as fractions).")
    return redirect("review-item", pk=item.pk)


@allow(EVERYONE)
def long_term(request):
    """The dashboard metrics per quarter over eight quarters (loaded into the dashboard)."""
    return render(
        request, "reports/review/_long_term.html", {"trend": trends.dashboard_long_term()}
    )


@allow(MARKETING_WRITES)
def export(request, fmt: str):
    return register_download(fmt)
