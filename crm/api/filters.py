"""API filters mirror the UI's: the same FilterSets (crm.filters) serve both."""

from rest_framework.filters import OrderingFilter

from crm.filters import ActivityFilter, CampaignFilter, CompanyFilter, ContactFilter

__all__ = [
    "ActivityFilter",
    "CampaignFilter",
    "CompanyFilter",
    "ContactFilter",
    "StableOrderingFilter",
]


class StableOrderingFilter(OrderingFilter):
    """DRF's ``?ordering=`` with the primary key as the last key: rows with equal values
    come back in one fixed order, so no page of a list repeats or skips a row."""

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if ordering and not any(str(o).lstrip("-") in ("pk", "id") for o in ordering):
            last = str(ordering[-1])
            ordering = [*ordering, "-pk" if last.startswith("-") else "pk"]
        return ordering
