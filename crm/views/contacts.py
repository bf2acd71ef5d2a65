"""Contact list (filters, sort, bulk actions, export), contact page, create/edit, merge."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods, require_POST

from .. import exports, extensions, lifecycle, services
from ..filters import ContactFilter
from ..forms import BulkActionForm, ContactForm
from ..models import Contact, Deal, EmailStatus, Stage
from ..queries_contacts import page_slice
from ..roles import SALES_AND_MARKETING_WRITE, Role, allow, has_role
from ..timeline import contact_timeline

PAGE_SIZE = 50
MAX_BULK = 10_000


class Page:
    """A page of a list without COUNT(*): one extra row says whether a next page exists.

    Counting a filtered million-row table costs more than the page itself; "previous /
    next" is what people use on lists that long.
    """

    def __init__(self, queryset, number: int, size: int = PAGE_SIZE, slicer=None):
        self.number = max(1, number)
        offset = (self.number - 1) * size
        if slicer is None:
            rows = list(queryset[offset : offset + size + 1])
        else:  # e.g. queries_contacts.page_slice: same rows, cheaper deep pages
            rows = list(slicer(queryset, offset, size + 1))
        self.has_next = len(rows) > size
        self.object_list = rows[:size]
        self.has_previous = self.number > 1
        self.next_page_number = self.number + 1
        self.previous_page_number = self.number - 1

    def __iter__(self):
        return iter(self.object_list)


# The columns the list shows: read as plain values, not model instances (50 rows of
# Contact + Company + User objects cost more to build than the page query itself).
ROW_FIELDS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "company_id",
    "company__name",
    "stage",
    "scorecard__score",
    "owner__username",
    "email_status",
    "created_at",
)
_PK = 2147483647  # a placeholder id: reverse() once per page, not once per row


def _url_pattern(name: str) -> str:
    return reverse(name, args=[_PK]).replace(str(_PK), "{}")


def contact_rows(values) -> list[dict]:
    """Display-ready rows (links, labels, dates) so the template only prints strings.

    Per-row ``get_absolute_url``/``get_*_display``/``|date`` in the template dominated the
    page (profiled: ~2/3 of its CPU at 50 rows); the output is the same text.
    """
    contact_url = _url_pattern("crm:contact-detail")
    company_url = _url_pattern("crm:company-detail")
    stages = dict(Stage.choices)
    statuses = dict(EmailStatus.choices)
    zone = timezone.get_current_timezone()
    rows = []
    for v in values:
        name = f"{v['first_name']} {v['last_name']}".strip()
        rows.append(
            {
                "pk": v["id"],
                "email": v["email"],
                "name": name or "—",
                "url": contact_url.format(v["id"]),
                "company": v["company__name"] if v["company_id"] else None,
                "company_url": company_url.format(v["company_id"]) if v["company_id"] else "",
                "stage": stages.get(v["stage"], v["stage"]),
                "score": v["scorecard__score"],
                "owner": v["owner__username"] or "",
                "email_status": statuses.get(v["email_status"], v["email_status"]),
                "suppressed": v["email_status"] != EmailStatus.ACTIVE,
                "created": v["created_at"].astimezone(zone).strftime("%Y-%m-%d"),
            }
        )
    return rows


def page_number(request) -> int:
    try:
        return min(int(request.GET.get("page", 1)), 10_000)
    except ValueError:
        return 1


def contact_queryset():
    return Contact.objects.select_related("company", "owner").order_by("-created_at", "-id")


def filtered_contacts(request, data=None):
    return ContactFilter(data if data is not None else request.GET, queryset=contact_queryset())


def query_without(request, *names: str) -> str:
    """The request's query string without ``names`` (for page and sort links)."""
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


@allow(SALES_AND_MARKETING_WRITE)
def contact_list(request):
    flt = filtered_contacts(request)
    fmt = request.GET.get("export")
    if fmt in ("csv", "xlsx") and flt.is_valid():
        return exports.contacts_export(flt.qs, fmt)
    valid = flt.is_valid()
    queryset = flt.qs if valid else Contact.objects.none()
    page = Page(
        queryset.values(*ROW_FIELDS), page_number(request) if valid else 1, slicer=page_slice
    )
    page.object_list = contact_rows(page.object_list)
    return render(
        request,
        "crm/contacts/list.html",
        {
            "filter": flt,
            "page": page,
            "query": query_without(request, "page"),
            "sort_query": query_without(request, "page", "sort"),
            "current_sort": request.GET.get("sort", "created"),
            "bulk_form": BulkActionForm(),
            "segments": _static_segments()
            if has_role(request.user, Role.MARKETING, Role.ADMIN)
            else [],
        },
    )


def _static_segments():
    from ..models import Segment

    return list(Segment.objects.filter(kind=Segment.Kind.STATIC).order_by("name")[:200])


def _selected_ids(request) -> list[int]:
    ids = [int(raw) for raw in request.POST.getlist("ids") if raw.isdigit() and len(raw) < 19]
    return ids[:MAX_BULK]


@require_POST
@allow(SALES_AND_MARKETING_WRITE)
def contact_bulk(request):
    form = BulkActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose an action (and an owner or segment where needed).")
        return redirect(_back(request))
    action = form.cleaned_data["action"]
    if form.cleaned_data["scope"] == "filter":
        flt = filtered_contacts(request, data=request.GET)
        if not flt.is_valid():
            return HttpResponseBadRequest("Invalid filter.")
        queryset = flt.qs
        ids = None
    else:
        ids = _selected_ids(request)
        if not ids:
            messages.error(request, "Select at least one contact.")
            return redirect(_back(request))
        queryset = contact_queryset().filter(pk__in=ids)
    if action in ("export_csv", "export_xlsx"):
        return exports.contacts_export(queryset, action.removeprefix("export_"))
    if ids is None:
        # Never silently part of the filter: over the limit, nothing changes and the user
        # is told to narrow it (the API takes any number of contacts, 10,000 per call).
        ids = list(queryset.values_list("pk", flat=True)[: MAX_BULK + 1])
        if len(ids) > MAX_BULK:
            messages.error(
                request,
                f"More than {MAX_BULK:,} contacts match this filter; nothing was changed. "
                f"Narrow the filter to at most {MAX_BULK:,} contacts.",
            )
            return redirect(_back(request))
    if action in ("assign", "unassign"):
        owner = form.cleaned_data["owner"] if action == "assign" else None
        count = services.contacts_assign_owner(contact_ids=ids, owner=owner, by=request.user)
        done = f"assigned to {owner}" if owner else "left without an owner"
        messages.success(request, f"{count} contact(s) {done}.")
    elif action == "segment":
        _add_to_segment(request, form.cleaned_data["segment"], ids)
    return redirect(_back(request))


def _add_to_segment(request, segment_id, ids) -> None:
    from .. import segments as segments_module
    from ..models import Segment

    if not has_role(request.user, Role.MARKETING, Role.ADMIN):
        messages.error(request, "Only marketing may change segments.")
        return
    add = getattr(segments_module, "segment_members_add", None)
    if add is None:
        messages.error(request, "Adding to segments is not available yet.")
        return
    segment = Segment.objects.filter(pk=segment_id or 0, kind=Segment.Kind.STATIC).first()
    if segment is None:
        messages.error(request, "Choose a static segment.")
        return
    added = add(segment=segment, contact_ids=ids, by=request.user)
    already = len(ids) - added
    note = f" ({already} already in it)" if already else ""
    messages.success(request, f"{added} contact(s) added to {segment.name}{note}.")


def _back(request) -> str:
    query = request.GET.urlencode()
    return reverse("crm:contact-list") + (f"?{query}" if query else "")


# Entries sharing one instant that a page may step over (an import can date thousands of
# activities alike); every source reads that many rows more, so a larger one is refused.
MAX_TIMELINE_SKIP = 100_000


def _timeline_cursor(params) -> tuple:
    """The "Older" link's ``before`` and ``skip``; anything malformed starts from the top
    rather than failing (an impossible date, a non-ASCII digit, a skip without a time)."""
    try:
        before = parse_datetime(params.get("before") or "")
    except ValueError:
        before = None
    raw = params.get("skip") or ""
    skip = int(raw) if raw.isascii() and raw.isdigit() else 0
    if before is None or skip > MAX_TIMELINE_SKIP:
        skip = 0
    return before, skip


@allow(SALES_AND_MARKETING_WRITE)
def contact_detail(request, pk: int):
    contact = get_object_or_404(
        Contact.objects.select_related("company", "owner", "acquired_by", "scorecard"), pk=pk
    )
    before, skip = _timeline_cursor(request.GET)
    timeline = contact_timeline(contact, before=before, skip=skip)
    zone = timezone.get_current_timezone()
    entries = []
    for e in timeline.entries:
        # What ``|date:'c'`` and ``|date:"Y-m-d H:i"`` printed, computed once per entry:
        # the date filter was the costliest part of rendering the 50-entry timeline.
        at = e.at.astimezone(zone)
        entries.append(
            {
                "kind": e.kind,
                "title": e.title,
                "detail": e.detail,
                "url": e.url,
                "iso": at.isoformat(),
                "when": at.strftime("%Y-%m-%d %H:%M"),
            }
        )
    deals = list(Deal.objects.filter(contact=contact).select_related("owner")[:50])
    return render(
        request,
        "crm/contacts/detail.html",
        {
            "contact": contact,
            "timeline": timeline,
            "timeline_entries": entries,
            "deals": deals,
            "panels": extensions.contact_panels(request, contact),
            "attributes": sorted((contact.attributes or {}).items()),
        },
    )


@require_http_methods(["GET", "POST"])
@allow(SALES_AND_MARKETING_WRITE)
def contact_create(request):
    form = ContactForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        fields = form.service_fields()
        contact = services.contact_create(by_user=request.user, **fields)
        messages.success(request, f"Contact {contact} created.")
        return redirect(contact)
    return render(request, "crm/contacts/form.html", {"form": form, "contact": None})


@require_http_methods(["GET", "POST"])
@allow(SALES_AND_MARKETING_WRITE)
def contact_edit(request, pk: int):
    contact = get_object_or_404(Contact, pk=pk)
    form = ContactForm(request.POST or None, instance=contact)
    if request.method == "POST" and form.is_valid():
        try:
            services.contact_update(contact=contact, by=request.user, **form.service_fields())
        except lifecycle.StageChangeError as exc:
            form.add_error("stage", str(exc))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Contact saved.")
            return redirect(contact)
    return render(request, "crm/contacts/form.html", {"form": form, "contact": contact})


@require_POST
@allow(SALES_AND_MARKETING_WRITE)
def contact_merge(request, pk: int):
    contact = get_object_or_404(Contact, pk=pk)
    email = Contact.normalise_email(request.POST.get("duplicate_email", ""))
    other = Contact.objects.filter(email=email).first()
    if other is None or other.pk == contact.pk:
        messages.error(request, "No other contact has that email.")
        return redirect(contact)
    kept = services.contact_merge(keep=contact, duplicate=other, by=request.user)
    messages.success(request, f"Merged; kept the older record ({kept.email}).")
    return redirect(kept)
