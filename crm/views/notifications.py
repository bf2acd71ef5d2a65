"""The signed-in user's in-app notices: the list, opening one (marks it read), mark all read.

Every role has notices (a new MQL for its owner, a decision on your lead by another rep,
nurture's "notify the owner", a parked activity batch for admins), so every role may use
these pages; each user only ever sees, opens or marks their own.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from crm.models import Notification
from crm.notifications import local_path, notifications_mark_read
from crm.roles import EVERYONE, allow

PAGE_SIZE = 50


@allow(EVERYONE)
@require_GET
def notification_list(request):
    qs = Notification.objects.for_user(request.user).order_by("-created_at", "-id")
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    for notice in page.object_list:
        notice.link = local_path(notice.url)  # shown only where opening it would lead
    return render(request, "crm/notifications/list.html", {"page": page, "query": ""})


@allow(EVERYONE)
@require_POST
def notification_open(request, pk: int):
    """Mark the notice read and follow its link — a path on this site only, never
    elsewhere (the list page otherwise)."""
    notice = get_object_or_404(Notification.objects.for_user(request.user), pk=pk)
    notifications_mark_read(user=request.user, ids=[notice.pk])
    return redirect(local_path(notice.url) or "crm:notification-list")


@allow(EVERYONE)
@require_POST
def notification_read_all(request):
    marked = notifications_mark_read(user=request.user)
    if marked:
        messages.success(request, f"Marked {marked} notice{'s' if marked != 1 else ''} read.")
    return redirect("crm:notification-list")
