"""Report pages."""

from django.shortcuts import render

from crm.roles import EVERYONE, allow


@allow(EVERYONE)
def dashboard(request):
    return render(request, "reports/dashboard.html")
