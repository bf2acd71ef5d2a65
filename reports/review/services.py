"""Writes on the register: keeping it in step with what exists, baselines and reviews."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from . import snapshots
from .models import ContentAsset, Review, ReviewItem

BASELINE_DAYS = 30


def _new_item(
    *, type: str, object_id, name: str, owner_id, started_at, content_type=""
) -> ReviewItem:
    first, every = ReviewItem.DEFAULT_CADENCE[type]
    return ReviewItem(
        type=type,
        object_id=object_id,
        name=name[:200],
        owner_id=owner_id,
        started_at=started_at,
        first_review_days=first,
        cadence_days=every,
        content_type=content_type,
    )


def register_sync(*, now: datetime | None = None) -> int:
    """Create register items for programs, triggers, assets and the two rule sets.

    Idempotent and set-based: one read of existing keys per type, one bulk insert. Names of
    existing items follow their objects; items whose object is gone are deactivated.
    Returns how many items were created.
    """
    now = now or timezone.now()
    wanted = list(snapshots.reviewable_objects(now=now))
    existing = {(i.type, i.object_id): i for i in ReviewItem.objects.all()}
    # An item retired by its review stays retired; only one deactivated because its object
    # was gone (or archived) comes back with it.
    retired = _retired_ids([i.pk for i in existing.values() if not i.active])
    new, renamed = [], []
    seen = set()
    for obj in wanted:
        key = (obj["type"], obj["object_id"])
        seen.add(key)
        item = existing.get(key)
        if item is None:
            new.append(_new_item(**obj))
        elif item.name != obj["name"][:200] or (not item.active and item.pk not in retired):
            item.name = obj["name"][:200]
            item.active = item.active or item.pk not in retired
            renamed.append(item)
    gone = [i.pk for key, i in existing.items() if key not in seen and i.active]
    with transaction.atomic():
        ReviewItem.objects.bulk_create(new, ignore_conflicts=True)
        ReviewItem.objects.bulk_update(renamed, ["name", "active"])
        ReviewItem.objects.filter(pk__in=gone).update(active=False)
    for item in ReviewItem.objects.filter(baseline_source="", active=True):
        baseline_compute(item=item)
    return len(new)


def _retired_ids(item_ids: list[int]) -> set[int]:
    """Which of these items' latest review retired them (one query)."""
    if not item_ids:
        return set()
    reviews = Review.objects.filter(item_id=OuterRef("pk"))
    latest = reviews.order_by("-reviewed_at", "-pk").values("decision")
    return set(
        ReviewItem.objects.filter(pk__in=item_ids)
        .annotate(last=Subquery(latest[:1]))
        .filter(last=Review.Decision.RETIRE)
        .values_list("pk", flat=True)
    )


def baseline_compute(*, item: ReviewItem) -> ReviewItem:
    """Baseline = the item's key metrics over the 30 days before it went live."""
    end = item.started_at
    item.baseline = snapshots.snapshot(item, start=end - timedelta(days=BASELINE_DAYS), end=end)
    item.baseline_source = "auto"
    item.save(update_fields=["baseline", "baseline_source"])
    return item


def baseline_set_manual(
    *, item: ReviewItem, figures: dict[str, float], note: str = ""
) -> ReviewItem:
    """Record results from before automation (e.g. an old newsletter's open and click rates)."""
    allowed = set(snapshots.METRIC_KEYS[item.type])
    unknown = set(figures) - allowed
    if unknown:
        raise ValueError(
            f"Unknown baseline metric(s) for {item.get_type_display()}: "
            f"{', '.join(sorted(unknown))}."
        )
    item.baseline = {k: float(v) for k, v in figures.items()}
    item.baseline_source = "manual"
    item.baseline_note = note[:300]
    item.save(update_fields=["baseline", "baseline_source", "baseline_note"])
    return item


def review_record(
    *, item: ReviewItem, reviewer, decision: str, notes: str = "", at: datetime | None = None
) -> Review:
    """Snapshot the item's metrics since its last review, record the decision, reschedule.

    The period is [last review (or start), now). A "retire" decision deactivates the item.
    """
    if decision not in Review.Decision.values:
        raise ValueError(f"Unknown decision {decision!r}; use keep, change or retire.")
    at = at or timezone.now()
    with transaction.atomic():
        locked = ReviewItem.objects.select_for_update().get(pk=item.pk)
        start = locked.last_reviewed_at or locked.started_at
        review = Review.objects.create(
            item=locked,
            reviewed_at=at,
            reviewer=reviewer,
            period_start=start,
            period_end=at,
            metrics=snapshots.snapshot(locked, start=start, end=at),
            notes=notes,
            decision=decision,
        )
        locked.last_reviewed_at = at
        locked.active = decision != Review.Decision.RETIRE
        locked.save(update_fields=["last_reviewed_at", "active"])
    return review


def review_record_group(
    *, content_type: str, reviewer, decision: str, notes: str = ""
) -> list[Review]:
    """Review every content asset of one type together (METRICS.md: content grouped by type)."""
    if content_type not in ContentAsset.Type.values:
        raise ValueError(f"Unknown content type {content_type!r}.")
    items = ReviewItem.objects.filter(
        type=ReviewItem.Type.CONTENT, content_type=content_type, active=True
    )
    at = timezone.now()
    return [
        review_record(item=i, reviewer=reviewer, decision=decision, notes=notes, at=at)
        for i in items
    ]
