"""Replaying overlapping batches concurrently (16 clients, shuffled, three times) must
store each ``external_id`` once and never fail a request.

Found by bench/load_test.py: ``crm.ingest.activities_record`` used to retry a racing
duplicate (IntegrityError on ``crm_activity_external_id_key``) only three times, so under
heavy overlap a batch could lose the race three times in a row and the API answered 500.
It now inserts with ``ON CONFLICT (external_id) DO NOTHING`` in external_id order (no
deadlock between overlapping batches) and counts the skipped rows as duplicates.
"""

import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import Activity
from tests.factories import ContactFactory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.django_db(transaction=True)
def test_concurrent_shuffled_replays_store_each_external_id_once_without_errors():
    contacts = [c.pk for c in ContactFactory.create_batch(50)]
    rng = random.Random(7)
    now = timezone.now()
    events = [
        {
            "kind": "page_visit",
            "contact": rng.choice(contacts),
            "occurred_at": now - timedelta(seconds=i + 1),
            "external_id": f"race-{i}",
        }
        for i in range(3000)
    ]
    batches = []
    for _ in range(3):
        order = events[:]
        rng.shuffle(order)
        batches += [order[i : i + 100] for i in range(0, len(order), 100)]
    errors: list[Exception] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop()
                try:
                    activities_record(items=batch, source="api")
                except Exception as exc:  # noqa: BLE001 — every failure is the finding
                    with lock:
                        errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    assert Activity.objects.filter(external_id__startswith="race-").count() == 3000
    assert not errors, f"{len(errors)} failed batches, e.g. {errors[0]!r}"


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_committed_while_a_batch_is_in_flight_counts_as_a_duplicate(settings):
    """The second batch does not see the first one's row when it checks, then its insert
    waits for the first commit and skips that row; handlers only get the new activity."""
    settings.ACTIVITIES_RECORDED_HANDLERS = ["tests.reliability.test_concurrent_ingest.record"]
    _RECORDED.clear()
    contact = ContactFactory().pk
    now = timezone.now()

    def item(ext):
        return {"kind": "page_visit", "contact": contact, "occurred_at": now, "external_id": ext}

    inserted = threading.Event()
    results = []

    def first() -> None:
        try:
            with transaction.atomic():
                activities_record(items=[item("x")])
                inserted.set()
                time.sleep(0.5)  # the second batch checks and then waits on our row
        finally:
            connection.close()

    def second() -> None:
        try:
            inserted.wait(10)
            results.append(activities_record(items=[item("x"), item("y")]))
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    seen = [[a.external_id for a in batch] for batch in _RECORDED]
    (result,) = results
    assert (result.created, result.duplicates) == (1, 1)
    assert [a.external_id for a in result.activities] == ["y"]
    assert result.activities[0].pk == Activity.objects.get(external_id="y").pk
    assert sorted(seen) == [["x"], ["y"]]
    assert Activity.objects.filter(external_id__in=["x", "y"]).count() == 2


_RECORDED: list = []


def record(event) -> None:
    _RECORDED.append(list(event.activities))


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_that_score_and_hand_off_the_same_contacts_never_deadlock():
    """Found by bench_activity_ingestion_served: scoring and crm.lifecycle locked contacts
    FOR UPDATE, which conflicts with the FOR KEY SHARE each inserted activity's foreign-key
    check takes on its contact at commit; two batches over the same contacts deadlocked
    (503 to the client), and so did batches whose segment-membership inserts waited on each
    other while each held contacts the other needed. crm.ingest now locks a batch's
    contacts up front in id order (FOR NO KEY UPDATE), before anything else."""
    from crm.segments import segment_save
    from scoring.models import ScoringSettings
    from tests.scoring.factories import EngagementRuleFactory

    ScoringSettings.objects.create(pk=1, mql_threshold=25)
    EngagementRuleFactory(points=10)  # every visit scores; a third one hands the lead off
    for name, condition in [
        ("MQLs", {"field": "stage", "op": "equals", "value": "mql"}),
        ("Visitors", {"did": "page_visit", "within_last_days": 1}),
    ]:  # memberships are contact-keyed rows the batches also write
        segment_save(segment=None, name=name, kind="dynamic", definition={"all": [condition]})
    contacts = [c.pk for c in ContactFactory.create_batch(60)]
    rng = random.Random(11)
    now = timezone.now()
    batches = [
        [
            {
                "kind": "page_visit",
                "contact": rng.choice(contacts),
                "occurred_at": now - timedelta(seconds=rng.randrange(1, 3600)),
                "external_id": f"lock-{b}-{i}",
            }
            for i in range(80)
        ]
        for b in range(24)
    ]
    errors: list[Exception] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop()
                try:
                    activities_record(items=batch, source="api")
                except Exception as exc:  # noqa: BLE001 — every failure is the finding
                    with lock:
                        errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    assert not errors, f"{len(errors)} failed batches, e.g. {errors[0]!r}"
    assert Activity.objects.filter(external_id__startswith="lock-").count() == 24 * 80
