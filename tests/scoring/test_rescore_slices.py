"""A PostgreSQL rescore run by several connections, a slice of contact ids each
(scoring.rescore_slices): the same ledger, scores and hand-offs as the portable path."""

import threading

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from crm.models import Contact, LifecycleTransition
from scoring import rescore_pass, rescore_slices, services
from scoring.models import LedgerEntry, RescoreRun, ScoringSettings

from .test_rescore_pass import _meanwhile, _outcome, _world

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the slices are PostgreSQL's"
)


def _in_this_thread(works):
    """rescore_slices.in_threads, one slice after the other in this connection (whose
    transaction the test rolls back)."""
    stop = threading.Event()
    for work in works:
        work(stop)


@postgres_only
@pytest.mark.django_db
@pytest.mark.parametrize("changes", [False, True], ids=["quiet", "changes-after-a-pass"])
def test_slices_give_the_outcome_of_the_portable_path(changes, monkeypatch):
    now = timezone.now().replace(microsecond=0)
    contacts, company, rules = _world(now)
    monkeypatch.setattr(rescore_slices, "connections_wanted", lambda: 3)
    monkeypatch.setattr(rescore_slices, "in_threads", _in_this_thread)
    built = []
    build = rescore_pass.pass_build

    def spy(**kwargs):
        built.append((kwargs["lo"], kwargs["hi"], kwargs["parallel"]))
        result = build(**kwargs)
        if changes and len(built) == 1:  # between the first slice's pass and its writes
            _meanwhile(contacts, company, rules, now)
        return result

    monkeypatch.setattr(rescore_pass, "pass_build", spy)
    fast = _outcome(now, portable=False)
    monkeypatch.undo()
    reference = _outcome(
        now,
        portable=True,
        before=(lambda: _meanwhile(contacts, company, rules, now)) if changes else None,
    )
    assert fast == reference
    assert fast["counts"][1] > 0
    # Three slices, adjacent, covering every contact, each its own single-process pass.
    assert len(built) == 3
    assert [b[1] for b in built[:-1]] == [b[0] for b in built[1:]]
    ids = sorted(c.pk for c in contacts)
    assert built[0][0] <= ids[0]
    assert built[-1][1] > ids[-1]
    assert not any(b[2] for b in built)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_rescore_outside_a_transaction_runs_its_slices_in_threads(monkeypatch, settings):
    """The real thing: two threads, two connections; a second rescore finds nothing to
    change, every cached score is its ledger sum, and the leads over the threshold were
    handed off."""
    settings.SCORING_RESCORE_CONNECTIONS = 2
    now = timezone.now().replace(microsecond=0)
    contacts, _, _ = _world(now)
    threads = []
    work = services._rescore_slice

    def spy(ids, **kwargs):
        threads.append((threading.get_ident(), ids, kwargs["parallel"]))
        return work(ids, **kwargs)

    monkeypatch.setattr(services, "_rescore_slice", spy)
    run = services.scores_rescore_all(now=now)
    assert run.status == RescoreRun.Status.DONE
    assert run.processed == len(contacts)
    assert run.contacts_changed > 0
    assert len({t[0] for t in threads}) == 2
    assert threading.get_ident() not in {t[0] for t in threads}
    assert not any(t[2] for t in threads)
    changed = set(
        LedgerEntry.objects.filter(reason=LedgerEntry.Reason.RESCORE, at=now).values_list(
            "contact_id", flat=True
        )
    )
    (_, cut), _ = sorted(t[1] for t in threads)
    assert {c for c in changed if c < cut}
    assert {c for c in changed if c >= cut}
    sums = dict(
        LedgerEntry.objects.values("contact_id")
        .annotate(s=Sum("points"))
        .values_list("contact_id", "s")
    )
    for pk, score in Contact.objects.values_list("pk", "scorecard__score"):
        assert score == sums.get(pk, 0)
    # Hand-offs are dated when the ledger's running sum crossed the threshold.
    over = set(
        Contact.objects.filter(
            scorecard__score__gte=ScoringSettings.load().mql_threshold
        ).values_list("pk", flat=True)
    )
    assert over
    assert not Contact.objects.filter(pk__in=over, stage="lead").exists()
    assert LifecycleTransition.objects.filter(contact__in=over, to_stage="mql").count() == len(over)
    before = LedgerEntry.objects.count()
    again = services.scores_rescore_all(now=now)
    assert (again.contacts_changed, again.entries_created) == (0, 0)
    assert LedgerEntry.objects.count() == before


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_failing_slice_fails_the_run_and_stops_the_others(monkeypatch, settings):
    settings.SCORING_RESCORE_CONNECTIONS = 2
    now = timezone.now().replace(microsecond=0)
    contacts, _, _ = _world(now)
    top = max(c.pk for c in contacts) + 1
    work = services._rescore_slice

    def last_fails(ids, **kwargs):
        if ids[1] == top:
            raise RuntimeError("slice broke")
        return work(ids, **kwargs)

    monkeypatch.setattr(services, "_rescore_slice", last_fails)
    with pytest.raises(RuntimeError, match="slice broke"):
        services.scores_rescore_all(now=now)
    run = RescoreRun.objects.latest("pk")
    assert run.status == RescoreRun.Status.FAILED
    assert "slice broke" in run.error


class _Interrupted(Exception):
    pass


def test_an_interrupt_while_waiting_stops_the_slices_before_it_is_raised(monkeypatch):
    """A task's soft time limit lands in the thread that waits: the slices are told to
    stop and are waited for, so none writes after the run is marked failed."""
    ended = []

    def slice_work(stop):
        assert stop.wait(10), "never told to stop"
        ended.append(True)

    class Thread(threading.Thread):
        joins = 0

        def join(self, timeout=None):
            Thread.joins += 1
            if Thread.joins == 1:
                raise _Interrupted
            return super().join(timeout)

    monkeypatch.setattr(rescore_slices.threading, "Thread", Thread)
    with pytest.raises(_Interrupted):
        rescore_slices.in_threads([slice_work, slice_work])
    assert ended == [True, True]


def test_a_failing_slice_tells_the_others_to_stop():
    seen = []

    def fails(stop):
        raise ValueError("broken")

    def waits(stop):
        seen.append(stop.wait(10))

    with pytest.raises(ValueError, match="broken"):
        rescore_slices.in_threads([waits, fails])
    assert seen == [True]
