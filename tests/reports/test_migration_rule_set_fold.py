"""reports 0024/0025 (review findings): duplicate rule-set items that a concurrent first
sync made are folded, their reviews kept, and the constraint then applies — on PostgreSQL
too, where the fold's foreign-key checks must not share a transaction with the index."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("reports", "0023_autovacuum_thresholds")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_duplicates_are_folded_with_their_reviews_and_then_constrained():
    apps = _migrate(BEFORE)
    item_model, review_model = (
        apps.get_model("reports", "ReviewItem"),
        apps.get_model("reports", "Review"),
    )
    now = timezone.now()
    common = {
        "type": "scoring",
        "object_id": None,
        "name": "Scoring rules",
        "started_at": now,
        "first_review_days": 30,
        "cadence_days": 90,
    }
    keep = item_model.objects.create(**common)
    extra = item_model.objects.create(**common)
    review_model.objects.create(
        item=extra, reviewed_at=now, period_start=now, period_end=now, decision="keep"
    )
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    apps = _migrate(leaves)
    item_model, review_model = (
        apps.get_model("reports", "ReviewItem"),
        apps.get_model("reports", "Review"),
    )
    assert list(item_model.objects.values_list("pk", flat=True)) == [keep.pk]
    assert review_model.objects.get().item_id == keep.pk
    assert item_model.objects.get().last_reviewed_at == now
