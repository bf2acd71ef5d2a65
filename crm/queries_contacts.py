"""Reads behind the contact list (HTML page and API): one page of a filtered, sorted list."""

from __future__ import annotations

from django.db.models import QuerySet, Subquery

from .models import Contact


def page_slice(queryset: QuerySet, offset: int, limit: int) -> QuerySet:
    """Rows ``offset .. offset + limit`` of ``queryset``, in its order, in one query.

    The page's ids are chosen first from the contact table alone (the sort's index, no
    joins), and only those rows are joined to their company and owner ("deferred join"):
    ``SELECT … WHERE id IN (SELECT id … ORDER BY … LIMIT … OFFSET …) ORDER BY …``. A plain
    ``OFFSET`` joins every skipped row first — 5,000 company look-ups for page 100.
    """
    if queryset.query.distinct or queryset.query.annotations:
        return queryset[offset : offset + limit]  # ids alone would not say the same
    ordering = queryset.query.order_by or Contact._meta.ordering
    ids = queryset.order_by(*ordering).values("pk")[offset : offset + limit]
    outer = queryset.model._base_manager.filter(pk__in=Subquery(ids)).order_by(*ordering)
    outer.query.select_related = queryset.query.select_related
    if queryset._fields is not None:  # a .values() queryset stays one
        outer = outer.values(*queryset._fields)
    return outer
