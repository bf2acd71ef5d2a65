"""Segment pages: list, builder (htmx), live preview, members, history, "why", static lists.

Marketing and admin build and change segments; sales may read them.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from django.contrib import messages
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from crm.exports import contacts_export
from crm.filters import ContactFilter
from crm.models import ActivityKind, Campaign, Contact, Segment, SegmentChange
from crm.queries_contacts import page_slice
from crm.roles import MARKETING_ONLY, MARKETING_WRITES, allow
from crm.segments import (
    FIELDS,
    OPS_BY_TYPE,
    DefinitionError,
    SegmentInUse,
    compile_definition,
    contact_ids_for_emails,
    segment_delete,
    segment_members,
    segment_members_add,
    segment_members_remove,
    segment_refresh,
    segment_save,
    why_in_segment,
)
from crm.segments.builder import apply_action, from_tree, parse_post, to_tree

from .contacts import ROW_FIELDS, Page, contact_queryset, contact_rows, page_number, query_without

SAMPLE_SIZE = 10
HISTORY_DAYS = 90
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
ALL_OPS = list(dict.fromkeys(op for ops in OPS_BY_TYPE.values() for op in ops))


def _builder_context(definition, errors=None) -> dict:
    return {
        "tree": to_tree(definition),
        "fields": list(FIELDS),
        "ops": ALL_OPS,
        "kinds": ActivityKind.choices,
        "segments": Segment.objects.only("pk", "name").order_by("name"),
        "campaigns": Campaign.objects.only("pk", "name").order_by("name"),
        "errors": errors or [],
    }


@allow(MARKETING_WRITES)
def segment_list(request):
    segments = (
        Segment.objects.select_related("owner")
        .annotate(member_count=Count("memberships"))
        .order_by("name", "id")
    )
    return render(request, "crm/segments/list.html", {"segments": segments})


@allow(MARKETING_ONLY)
@require_http_methods(["GET", "POST"])
def segment_create(request):
    return _form(request, None)


@allow(MARKETING_ONLY)
@require_http_methods(["GET", "POST"])
def segment_edit(request, pk: int):
    return _form(request, get_object_or_404(Segment, pk=pk))


def _form(request, segment: Segment | None):
    if request.method == "GET":
        values = {
            "name": segment.name if segment else "",
            "description": segment.description if segment else "",
            "kind": segment.kind if segment else Segment.Kind.DYNAMIC,
        }
        definition = segment.definition if segment else {"all": []}
        return render(
            request,
            "crm/segments/form.html",
            {"segment": segment, "values": values, **_builder_context(definition)},
        )
    definition = from_tree(parse_post(request.POST))
    values = {k: request.POST.get(k, "") for k in ("name", "description", "kind")}
    try:
        saved = segment_save(
            segment=segment,
            name=values["name"],
            description=values["description"],
            kind=values["kind"],
            definition=definition if values["kind"] == Segment.Kind.DYNAMIC else {},
            by=request.user,
        )
    except DefinitionError as exc:
        context = {"segment": segment, "values": values, **_builder_context(definition, exc.errors)}
        return render(request, "crm/segments/form.html", context, status=400)
    messages.success(request, f"Saved “{saved.name}” (version {saved.version}).")
    return redirect(saved)


@allow(MARKETING_ONLY)
@require_POST
def segment_builder(request):
    """htmx: apply one add/remove action to the posted builder and re-render it."""
    definition = apply_action(from_tree(parse_post(request.POST)), request.POST.get("action", ""))
    return render(request, "crm/segments/_builder.html", _builder_context(definition))


@allow(MARKETING_ONLY)
@require_POST
def segment_preview(request):
    """htmx: the live count and a sample of 10 for the definition being edited."""
    definition = from_tree(parse_post(request.POST))
    try:
        contacts = Contact.objects.filter(compile_definition(definition))
    except DefinitionError as exc:
        return render(request, "crm/segments/_preview.html", {"errors": exc.errors})
    sample = contacts.select_related("company").order_by("-created_at", "-id")[:SAMPLE_SIZE]
    return render(
        request,
        "crm/segments/_preview.html",
        {"count": contacts.count(), "sample": sample},
    )


def _members_filter(request, segment: Segment) -> ContactFilter:
    """The contact list's filters and sorts over the segment's stored members: the same
    FilterSet on the same base queryset, narrowed by one semi-join on the membership's
    (segment, contact) index."""
    return ContactFilter(request.GET, queryset=contact_queryset().in_segment(segment.pk))


@allow(MARKETING_WRITES)
def segment_detail(request, pk: int):
    segment = get_object_or_404(
        Segment.objects.select_related("owner").annotate(member_count=Count("memberships")),
        pk=pk,
    )
    flt = _members_filter(request, segment)
    valid = flt.is_valid()
    # ?format=csv: the page's export link before it took the contact list's ?export=.
    fmt = request.GET.get("export") or request.GET.get("format")
    if fmt in ("csv", "xlsx") and valid:
        return contacts_export(flt.qs, fmt, name=f"segment-{segment.pk}")
    # Previous/next without a filtered COUNT, as on the contact list; the stored total is
    # the annotation above.
    page = Page(
        (flt.qs if valid else Contact.objects.none()).values(*ROW_FIELDS),
        page_number(request) if valid else 1,
        slicer=page_slice,
    )
    page.object_list = contact_rows(page.object_list)
    return render(
        request,
        "crm/segments/detail.html",
        {
            "segment": segment,
            "filter": flt,
            "page": page,
            "query": query_without(request, "page"),
            "sort_query": query_without(request, "page", "sort"),
            "current_sort": request.GET.get("sort", "created"),
            "history": _history(segment),
            "definition_json": json.dumps(segment.definition, indent=2),
        },
    )


def _history(segment: Segment) -> dict:
    """Joins and leaves per day over the last 90 days, for the chart (via json_script)."""
    since = timezone.now() - timedelta(days=HISTORY_DAYS)
    rows = (
        SegmentChange.objects.filter(segment=segment, at__gte=since)
        .annotate(day=TruncDate("at"))
        .values("day", "kind")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    days: dict[str, dict[str, int]] = {}
    for row in rows:
        days.setdefault(row["day"].isoformat(), {"joined": 0, "left": 0})[row["kind"]] = row["n"]
    labels = sorted(days)
    return {
        "labels": labels,
        "joined": [days[d]["joined"] for d in labels],
        "left": [days[d]["left"] for d in labels],
    }


@allow(MARKETING_WRITES)
@require_POST
def segment_members_change(request, pk: int):
    """Static lists: add by pasted or uploaded emails, remove ticked contacts."""
    segment = get_object_or_404(Segment, pk=pk)
    if segment.kind != Segment.Kind.STATIC:
        messages.error(request, "Members are added by hand only to static segments.")
        return redirect(segment)
    if request.POST.get("op") == "remove":
        ids = [int(v) for v in request.POST.getlist("contact") if v.isdigit()]
        n = segment_members_remove(segment=segment, contact_ids=ids, by=request.user)
        messages.success(request, f"Removed {n} contact(s).")
        return redirect(segment)
    text = request.POST.get("emails", "")
    upload = request.FILES.get("file")
    if upload is not None:
        if upload.size > MAX_UPLOAD_BYTES:
            messages.error(request, "The file is larger than 2 MB.")
            return redirect(segment)
        text += "\n" + upload.read().decode("utf-8", errors="replace")
    emails = [
        cell.strip() for line in csv.reader(io.StringIO(text)) for cell in line if "@" in cell
    ]
    ids, unknown = contact_ids_for_emails(emails)
    ids += [int(v) for v in request.POST.getlist("contact") if v.isdigit()]
    n = segment_members_add(segment=segment, contact_ids=ids, by=request.user)
    messages.success(request, f"Added {n} contact(s).")
    if unknown:
        shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
        messages.warning(request, f"{len(unknown)} email(s) are not contacts: {shown}")
    return redirect(segment)


@allow(MARKETING_WRITES)
@require_POST
def segment_refresh_now(request, pk: int):
    segment = get_object_or_404(Segment, pk=pk)
    joined, left = segment_refresh(segment=segment)
    messages.success(request, f"Refreshed: {joined} joined, {left} left.")
    return redirect(segment)


@allow(MARKETING_WRITES)
@require_POST
def segment_remove(request, pk: int):
    segment = get_object_or_404(Segment, pk=pk)
    try:
        segment_delete(segment=segment)
    except SegmentInUse as exc:
        messages.error(request, str(exc))
        return redirect(segment)
    messages.success(request, f"Deleted “{segment.name}”.")
    return redirect("crm:segment-list")


@allow(MARKETING_WRITES)
def segment_why(request, pk: int, contact_pk: int):
    """Each top-level condition, ✓ or ✗ for this contact."""
    segment = get_object_or_404(Segment, pk=pk)
    contact = get_object_or_404(Contact, pk=contact_pk)
    if segment.kind != Segment.Kind.DYNAMIC:
        raise Http404("A static segment has no conditions.")
    parts = [
        {"condition": json.dumps(part), "ok": ok} for part, ok in why_in_segment(segment, contact)
    ]
    is_member = segment_members(segment).filter(pk=contact.pk).exists()
    return render(
        request,
        "crm/segments/why.html",
        {
            "segment": segment,
            "contact": contact,
            "parts": parts,
            "is_member": is_member,
            "mode": "any" if "any" in (segment.definition or {}) else "all",
        },
    )
