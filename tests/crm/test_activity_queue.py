"""The activity queue (crm.activity_queue): a recorded batch's "activities recorded"
handlers run when the queue is drained — exactly once, in order, merged into bulk events —
and a faulty batch is retried, then parked, without holding up the others."""

import threading
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from crm.activity_queue import batches_retry, queue_drain, queue_status
from crm.celery import app
from crm.events import handler
from crm.ingest import activities_record
from crm.models import (
    Activity,
    Contact,
    EmailStatus,
    LifecycleTransition,
    Notification,
    QueuedBatch,
    SegmentMembership,
    Stage,
)
from crm.models.choices import ActivityKind as K
from crm.segments import segment_queryset, segment_save
from reports.models import EmailDaily
from reports.tasks import reconcile_rollups
from scoring import services as scoring
from scoring.models import LedgerEntry, ScoringSettings
from tests.factories import CampaignFactory, ContactFactory
from tests.scoring.factories import EngagementRuleFactory, NegativeRuleFactory
from tests.services import celery_conf

pytestmark = pytest.mark.django_db

SEEN: list[list[int]] = []  # what spy_handler was called with, per call


@handler("queued")
def spy_handler(event) -> None:
    SEEN.append([a.pk for a in event.activities])


@handler("queued")
def poison_handler(event) -> None:
    """Fails on any batch holding a "poison" activity (a handler bug, say)."""
    if any("poison" in a.url for a in event.activities):
        raise RuntimeError("poisoned batch")


def _items(contact, n=1, url="https://acme.example/pricing", kind=K.PAGE_VISIT, tag=None):
    at = timezone.now() - timedelta(minutes=5)
    return [
        {
            "contact": contact.pk,
            "kind": kind,
            "occurred_at": at - timedelta(seconds=i),
            "url": url,
            **({"external_id": f"{tag}-{i}"} if tag else {}),
        }
        for i in range(n)
    ]


def _score(contact) -> int:
    return Contact.objects.get(pk=contact.pk).scorecard.score


@pytest.fixture
def spied(settings):
    SEEN.clear()
    settings.ACTIVITIES_RECORDED_HANDLERS = [
        *settings.ACTIVITIES_RECORDED_HANDLERS,
        "tests.crm.test_activity_queue.spy_handler",
    ]
    yield SEEN
    SEEN.clear()


@pytest.fixture
def poisonable(settings):
    settings.ACTIVITIES_RECORDED_HANDLERS = [
        *settings.ACTIVITIES_RECORDED_HANDLERS,
        "tests.crm.test_activity_queue.poison_handler",
    ]


def test_recording_queues_the_batch_and_the_drain_runs_its_handlers(queued_handlers):
    EngagementRuleFactory(points=10, activity_kind=K.PAGE_VISIT)
    contact = ContactFactory()
    result = activities_record(items=_items(contact, n=2))
    assert result.created == 2
    assert Activity.objects.filter(contact=contact).count() == 2
    batch = QueuedBatch.objects.get()
    assert batch.activity_ids == [a.pk for a in result.activities]
    assert batch.size == 2
    assert _score(contact) == 0  # the handlers have not run yet

    drained = queue_drain()
    assert (drained.batches, drained.activities, drained.failed) == (1, 2, 0)
    assert _score(contact) == 20
    assert not QueuedBatch.objects.exists()
    assert queue_drain().batches == 0  # nothing runs twice


def test_the_queued_path_ends_where_the_inline_path_does(settings):
    ScoringSettings.objects.create(pk=1, mql_threshold=25)
    EngagementRuleFactory(points=10, activity_kind=K.PAGE_VISIT)
    day_ago = timezone.now() - timedelta(days=1)
    inline, queued = (ContactFactory(created_at=day_ago, stage_changed_at=day_ago) for _ in "ab")
    activities_record(items=_items(inline, n=3))
    settings.ACTIVITY_HANDLERS_QUEUED = True
    activities_record(items=_items(queued, n=3))
    queue_drain()
    assert _score(inline) == _score(queued) == 30
    dated = []
    for contact in (inline, queued):
        contact.refresh_from_db()
        assert contact.stage == "mql"
        mql = LifecycleTransition.objects.get(contact=contact, to_stage="mql")
        dated.append(mql.at - contact.activities.latest("occurred_at").occurred_at)
    # Dated by the activities (the same offset from them on both paths), not by the drain.
    assert dated[0] == dated[1]
    assert abs(dated[0]) < timedelta(seconds=3)


def test_the_core_consequences_do_not_wait_for_the_queue(queued_handlers):
    contact = ContactFactory()
    activities_record(items=_items(contact, kind=K.EMAIL_UNSUBSCRIBED, url=""))
    contact.refresh_from_db()
    assert contact.email_status == EmailStatus.UNSUBSCRIBED  # never emailed meanwhile
    assert QueuedBatch.objects.count() == 1


def test_a_retried_delivery_queues_nothing(queued_handlers):
    contact = ContactFactory()
    activities_record(items=_items(contact, n=3, tag="esp"))
    again = activities_record(items=_items(contact, n=3, tag="esp"))
    assert (again.created, again.duplicates) == (0, 3)
    assert QueuedBatch.objects.count() == 1


def test_the_drain_merges_batches_in_order_up_to_its_size(queued_handlers, spied):
    contact = ContactFactory()
    ids = [
        [a.pk for a in activities_record(items=_items(contact, n=n)).activities] for n in (3, 2, 4)
    ]
    result = queue_drain(size=5)
    assert (result.batches, result.activities) == (3, 9)
    # 3 + 2 fit in one event of size 5; the third batch is the next round's.
    assert spied == [ids[0] + ids[1], ids[2]]


def test_a_batch_larger_than_the_drain_size_is_still_applied(queued_handlers, spied):
    contact = ContactFactory()
    ids = [a.pk for a in activities_record(items=_items(contact, n=4)).activities]
    assert queue_drain(size=2).activities == 4
    assert spied == [ids]


def test_activities_deleted_before_the_drain_are_left_out(queued_handlers, spied):
    kept, erased = ContactFactory(), ContactFactory()
    activities_record(items=_items(kept) + _items(erased))
    erased.delete()
    assert queue_drain().batches == 1
    assert [len(ids) for ids in spied] == [1]
    assert not QueuedBatch.objects.exists()


def test_a_failing_batch_waits_and_the_others_go_on(queued_handlers, poisonable):
    EngagementRuleFactory(points=10, activity_kind=K.PAGE_VISIT)
    first, poisoned, last = ContactFactory(), ContactFactory(), ContactFactory()
    activities_record(items=_items(first))
    activities_record(items=_items(poisoned, url="https://acme.example/poison"))
    activities_record(items=_items(last))

    result = queue_drain()
    assert (result.batches, result.failed, result.parked) == (2, 1, 0)
    assert _score(first) == _score(last) == 10
    assert _score(poisoned) == 0
    batch = QueuedBatch.objects.get()
    assert batch.attempts == 1
    assert "poisoned batch" in batch.last_error
    assert batch.retry_at > timezone.now()  # backs off instead of failing on every commit
    assert queue_drain().failed == 0
    assert queue_status()["pending_batches"] == 1


def test_a_batch_that_keeps_failing_is_parked_and_an_admin_retries_it(
    queued_handlers, poisonable, settings, admin_user, marketing_user
):
    EngagementRuleFactory(points=10, activity_kind=K.PAGE_VISIT)
    contact = ContactFactory()
    activities_record(items=_items(contact, url="https://acme.example/poison"))
    for _ in range(settings.ACTIVITY_QUEUE_MAX_ATTEMPTS):
        QueuedBatch.objects.update(retry_at=None)
        queue_drain()
    batch = QueuedBatch.objects.get()
    assert batch.parked_at is not None
    assert batch.attempts == settings.ACTIVITY_QUEUE_MAX_ATTEMPTS
    assert queue_status()["parked_batches"] == 1
    notice = Notification.objects.get(user=admin_user)  # every admin is told, once
    assert notice.text.startswith(f"Activity batch {batch.pk} was parked after 5 failed")
    assert notice.url == f"/admin/crm/queuedbatch/{batch.pk}/change/"
    assert not Notification.objects.exclude(user=admin_user).exists()
    QueuedBatch.objects.update(retry_at=None)
    assert queue_drain().batches == 0  # parked: not retried by itself

    settings.ACTIVITIES_RECORDED_HANDLERS = settings.ACTIVITIES_RECORDED_HANDLERS[:-1]  # fixed
    assert batches_retry(batch_ids=[batch.pk]) == 1
    assert queue_drain().batches == 1
    assert _score(contact) == 10


def test_a_failing_handler_does_not_refuse_the_recording(queued_handlers, poisonable):
    contact = ContactFactory()
    result = activities_record(items=_items(contact, url="https://acme.example/poison"))
    assert result.created == 1
    assert Activity.objects.filter(contact=contact).count() == 1


def test_healthz_reports_the_backlog(queued_handlers, client):
    activities_record(items=_items(ContactFactory(), n=2))
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["activity_queue"]["pending_batches"] == 1
    assert body["activity_queue"]["parked_batches"] == 0
    assert body["activity_queue"]["oldest_pending_seconds"] >= 0


def test_the_commit_enqueues_a_drain(queued_handlers, django_capture_on_commit_callbacks):
    EngagementRuleFactory(points=10, activity_kind=K.PAGE_VISIT)
    contact = ContactFactory()
    with celery_conf(task_always_eager=True), django_capture_on_commit_callbacks(execute=True):
        activities_record(items=_items(contact))
    assert _score(contact) == 10
    assert not QueuedBatch.objects.exists()


@pytest.mark.django_db(transaction=True)  # after-commit callbacks run for real
def test_recording_stores_and_queues_the_batch_while_the_broker_is_down(
    queued_handlers, broker_down, marketing_api
):
    response = marketing_api.post(
        "/api/v1/activities/",
        [
            {
                "email": "ann@example.com",
                "kind": "form_submitted",
                "external_id": "f-1",
                "occurred_at": timezone.now().isoformat(),
            }
        ],  # fmt: skip
        format="json",
    )
    assert response.status_code == 201  # the beat drain applies the batch
    assert (Activity.objects.count(), QueuedBatch.objects.count()) == (1, 1)


@pytest.mark.django_db(transaction=True)  # after-commit callbacks run for real
def test_a_drain_whose_hand_off_cannot_queue_the_owner_email_counts_its_batch_applied(
    queued_handlers, broker_down, caplog
):
    from scoring.models import PendingOwnerEmail
    from tests.factories import UserFactory

    rep = UserFactory(username="rep", role="sales")
    ScoringSettings.objects.create(pk=1, mql_threshold=10)
    EngagementRuleFactory(points=15, activity_kind=K.PAGE_VISIT)
    contact = ContactFactory()
    Contact.objects.filter(pk=contact.pk).update(stage=Stage.LEAD)
    activities_record(items=_items(contact))
    result = queue_drain()
    # The hand-off committed with the batch; the broker refusing the email task after the
    # commit is not the batch failing (it was reported so, and applied "one by one").
    assert (result.batches, result.failed) == (1, 0)
    assert "one by one" not in caplog.text
    contact.refresh_from_db()
    assert (contact.stage, contact.owner) == (Stage.MQL, rep)
    assert PendingOwnerEmail.objects.filter(owner=rep, contact=contact).exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_drains_the_queue_after_the_commit(queued_handlers):
    EngagementRuleFactory(points=10, activity_kind=K.PAGE_VISIT)
    contact = ContactFactory()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        activities_record(items=_items(contact, n=2))
        deadline = timezone.now() + timedelta(seconds=20)
        while QueuedBatch.objects.exists() and timezone.now() < deadline:
            threading.Event().wait(0.1)
    assert not QueuedBatch.objects.exists()
    assert _score(contact) == 20


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_drains_apply_each_batch_once_in_order(queued_handlers, spied):
    EngagementRuleFactory(points=1, activity_kind=K.PAGE_VISIT)
    contacts = [ContactFactory() for _ in range(5)]
    order = []
    for b in range(12):
        result = activities_record(items=_items(contacts[b % 5], n=3, tag=f"c{b}"))
        order.append([a.pk for a in result.activities])
    errors = []

    def drain():
        try:
            queue_drain(size=4)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert not QueuedBatch.objects.exists()
    assert [pk for call in spied for pk in call] == [pk for batch in order for pk in batch]
    # Every activity counted exactly once: 12 batches × 3 visits × 1 point.
    assert sum(LedgerEntry.objects.values_list("points", flat=True)) == 36
    assert sum(_score(c) for c in contacts) == 36


# --- property: after any sequence of batches and drains, every derived store is right ----

activity = st.tuples(
    st.integers(0, 3),  # contact
    st.sampled_from(
        [K.PAGE_VISIT, K.EMAIL_OPENED, K.EMAIL_CLICKED, K.FORM_SUBMITTED, K.EMAIL_UNSUBSCRIBED]
    ),
    st.integers(0, 24 * 20),  # hours ago
    st.sampled_from(["https://acme.example/pricing", "https://acme.example/blog", ""]),
    st.sampled_from([None, 0, 1]),  # campaign (0 has a goal: a form after a click converts)
    st.sampled_from(["", "m1", "m2"]),  # message id
)
step = st.one_of(
    st.tuples(st.just("batch"), st.lists(activity, min_size=1, max_size=6)),
    st.tuples(st.just("drain"), st.integers(1, 12)),
)


@hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=8))
def test_after_any_batches_and_drains_scores_segments_and_reports_are_right(queued_handlers, steps):
    with transaction.atomic():
        ScoringSettings.objects.create(pk=1, mql_threshold=30)
        EngagementRuleFactory(points=10, url_contains="/pricing", frequency="once_per_day")
        EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED, cap=3)
        EngagementRuleFactory(points=6, activity_kind=K.PAGE_VISIT, half_life_days=7)
        NegativeRuleFactory(points=-20)
        campaigns = [
            CampaignFactory(goal_action=K.FORM_SUBMITTED, channel="email"),
            CampaignFactory(channel="email"),
        ]
        base = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
        contacts = [ContactFactory(created_at=base - timedelta(days=30)) for _ in range(4)]
        segment = segment_save(
            segment=None,
            name="Pricing readers",
            kind="dynamic",
            definition={"did": "page_visit", "url_contains": "/pricing", "min_count": 2},
        )
        days = set()
        for op, arg in steps:
            if op == "drain":
                queue_drain(size=arg)
                continue
            items = []
            for i, kind, hours, url, campaign, message in arg:
                at = base - timedelta(hours=hours)
                days.add(timezone.localdate(at))
                items.append(
                    {
                        "contact": contacts[i].pk,
                        "kind": kind,
                        "occurred_at": at,
                        "url": url,
                        "campaign": None if campaign is None else campaigns[campaign].pk,
                        "message_id": message,
                    }
                )
            activities_record(items=items)
        queue_drain()
        assert not QueuedBatch.objects.exists()

        scores = dict(Contact.objects.values_list("pk", "scorecard__score"))
        ledger = {
            c.pk: sum(LedgerEntry.objects.filter(contact=c).values_list("points", flat=True))
            for c in contacts
        }
        assert {c.pk: scores[c.pk] for c in contacts} == ledger
        assert scoring.scores_rescore_all().entries_created == 0
        members = set(
            SegmentMembership.objects.filter(segment=segment).values_list("contact_id", flat=True)
        )
        assert members == set(segment_queryset(segment).values_list("pk", flat=True))
        for day in sorted(days):
            diff = reconcile_rollups(day.isoformat())
            assert {k: v for k, v in diff.items() if k != "day" and v} == {}, day
        transaction.set_rollback(True)


def test_rules_are_only_read_inside_the_drain(queued_handlers):
    """Recording does no scoring work: a rule added after recording still applies."""
    contact = ContactFactory()
    activities_record(items=_items(contact))
    EngagementRuleFactory(points=7, activity_kind=K.PAGE_VISIT, name="Late rule")
    queue_drain()
    assert _score(contact) == 7


def test_the_pending_index_follows_the_queue_between_rounds(queued_handlers):
    from crm.activity_queue import _PendingIndex

    a, b = ContactFactory(), ContactFactory()
    first = activities_record(items=_items(a, n=2) + _items(b)).activities
    second = activities_record(items=_items(a)).activities
    rows = list(QueuedBatch.objects.order_by("pk"))
    index = _PendingIndex()
    index.refresh()
    assert index.unapplied({a.pk}, exclude={rows[0].pk}) == {second[0].pk}
    assert index.unapplied({a.pk, b.pk}, exclude={rows[1].pk}) == {x.pk for x in first}
    rows[0].delete()  # drained
    # A row queued without its contacts (before they were recorded) is looked up.
    third = activities_record(items=_items(b)).activities
    QueuedBatch.objects.filter(activity_ids=[third[0].pk]).update(contact_ids=[])
    index.refresh()
    assert index.unapplied({a.pk, b.pk}, exclude=set()) == {second[0].pk, third[0].pk}


@handler("queued")
def broken_database_handler(event) -> None:
    from django.db import OperationalError

    raise OperationalError("server closed the connection unexpectedly")


def test_a_merge_repoints_queued_batches_and_the_rollup_stays_right(queued_handlers):
    from crm.services import contact_merge

    older, newer = ContactFactory(), ContactFactory()
    now = timezone.now() - timedelta(hours=1)
    opened = {"kind": K.EMAIL_OPENED, "message_id": "m-1", "url": ""}
    activities_record(items=[{**opened, "contact": newer.pk, "occurred_at": now}])
    activities_record(
        items=[{**opened, "contact": older.pk, "occurred_at": now - timedelta(days=2)}]
    )
    kept = contact_merge(keep=older, duplicate=newer)
    assert all(kept.pk in row.contact_ids for row in QueuedBatch.objects.all())
    queue_drain(size=1)  # one batch per round: the other is still queued each time
    # The first open moved two days back: one unique open, on that day, none on the other.
    rows = dict(EmailDaily.objects.values_list("day", "unique_opens"))
    assert rows == {timezone.localdate(now - timedelta(days=2)): 1}
    for day in {timezone.localdate(now), timezone.localdate(now - timedelta(days=2))}:
        assert reconcile_rollups(day.isoformat())["email"] == 0, day


def test_the_nightly_report_check_waits_while_batches_are_queued(queued_handlers, poisonable):
    contact = ContactFactory()
    activities_record(items=_items(contact, url="https://acme.example/poison"))
    queue_drain()  # fails: the batch backs off and stays queued
    result = reconcile_rollups()
    assert result["deferred_queued_batches"] == 1


def test_a_database_failure_does_not_count_against_the_batch(queued_handlers, settings):
    settings.ACTIVITIES_RECORDED_HANDLERS = [
        *settings.ACTIVITIES_RECORDED_HANDLERS,
        "tests.crm.test_activity_queue.broken_database_handler",
    ]
    activities_record(items=_items(ContactFactory()))
    with pytest.raises(OperationalError):
        queue_drain()
    batch = QueuedBatch.objects.get()
    assert (batch.attempts, batch.retry_at, batch.parked_at) == (0, None, None)


def test_only_admins_may_retry_parked_batches(rf, admin_user, marketing_user):
    from django.contrib.admin.sites import site

    from crm.admin import QueuedBatchAdmin

    model_admin = QueuedBatchAdmin(QueuedBatch, site)
    for user, allowed in ((admin_user, True), (marketing_user, False)):
        request = rf.get("/")
        request.user = user
        assert model_admin.has_retry_permission(request) is allowed
