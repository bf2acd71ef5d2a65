"""The PostgreSQL rescore's whole-table pass (scoring.rescore_pass): what happens between
the pass's read and a chunk's writes — activities recorded (with and without the scoring
handler), ledger entries appended, profile and company changes, a merge, an erasure — is
neither lost nor counted twice: the outcome equals that of the exact path run after the
same changes."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from crm.ingest import activities_record
from crm.models import Activity, Company, Contact, LifecycleTransition
from crm.models.choices import ActivityKind
from crm.privacy import contact_erase
from crm.services.contacts import contact_merge
from scoring import rescore_pass, rescore_sql, services
from scoring.models import LedgerEntry, RescoreRun, Rule, ScoringSettings
from tests.factories import ActivityFactory, CompanyFactory, ContactFactory

from .factories import EngagementRuleFactory, FitRuleFactory, NegativeRuleFactory

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the pass is PostgreSQL's"
)

K = ActivityKind
PRICING = "https://acme.example/pricing?utm=x"


def _world(now):
    """Contacts with a history, a baseline rescore, then a rule change that leaves most
    contacts' ledgers stale (what a rescore is for)."""
    ScoringSettings.objects.create(pk=1, mql_threshold=45)
    rules = [
        EngagementRuleFactory(
            points=10, url_contains="/pricing", frequency=Rule.Frequency.ONCE_PER_DAY
        ),
        EngagementRuleFactory(points=3, activity_kind=K.EMAIL_CLICKED, cap=4),
        EngagementRuleFactory(
            points=15, activity_kind=K.WEBINAR_ATTENDED, frequency=Rule.Frequency.ONCE_PER_WEEK
        ),
        EngagementRuleFactory(points=6, activity_kind=K.PAGE_VISIT, half_life_days=7),
        NegativeRuleFactory(negative=Rule.Negative.INACTIVE, inactive_days=20, points=-5),
        FitRuleFactory(points=15),
        FitRuleFactory(field="company.industry", operator="equals", value="Software", points=8),
    ]
    company = CompanyFactory(industry="Retail")
    contacts = [
        ContactFactory(
            job_title="VP Sales" if i % 3 == 0 else "Engineer",
            created_at=now - timedelta(days=60),
            company=company if i % 5 == 0 else None,
        )
        for i in range(16)
    ]
    for i, c in enumerate(contacts):
        for day in range(i % 4 + 1):
            at = now - timedelta(days=day * 3 + 1, hours=i)
            ActivityFactory(contact=c, kind=K.PAGE_VISIT, occurred_at=at, url=PRICING)
            ActivityFactory(contact=c, kind=K.EMAIL_CLICKED, occurred_at=at)
        if i % 3 == 1:
            ActivityFactory(contact=c, kind=K.WEBINAR_ATTENDED, occurred_at=now - timedelta(days=9))
    services.scores_rescore_all()
    Rule.objects.filter(pk=rules[0].pk).update(points=12)
    Rule.objects.filter(pk=rules[1].pk).update(cap=2)
    Rule.objects.filter(pk=rules[5].pk).update(enabled=False)
    return contacts, company, rules


def _meanwhile(contacts, company, rules, now):
    """What ingestion, the UI and the other handlers do while the rescore runs."""
    c = contacts
    activities_record(
        items=[
            {
                "contact": c[0].pk,
                "kind": K.PAGE_VISIT,
                "occurred_at": now - timedelta(hours=2),
                "url": PRICING,
            },
            {"contact": c[1].pk, "kind": K.EMAIL_CLICKED, "occurred_at": now - timedelta(hours=2)},
            {
                "contact": c[2].pk,
                "kind": K.WEBINAR_ATTENDED,
                "occurred_at": now - timedelta(hours=3),
            },
        ]
    )
    # An activity the handler did not score (the ledger does not show it).
    ActivityFactory(contact=c[3], kind=K.PAGE_VISIT, occurred_at=now - timedelta(hours=1))
    LedgerEntry.objects.create(
        contact=c[4], rule=rules[0], points=-4, at=now, reason=LedgerEntry.Reason.RECYCLE_RESET
    )
    Contact.objects.filter(pk=c[6].pk).update(job_title="VP Marketing")
    Company.objects.filter(pk=company.pk).update(industry="Software")
    contact_erase(contact=c[8])  # drops the query string of its URLs: /pricing stays
    contact_merge(keep=c[0], duplicate=c[9])
    changed = {c[i].pk for i in (0, 1, 2, 3, 4, 6, 8)} | {x.pk for x in c if x.company_id}
    return changed - {c[9].pk}


def _outcome(now, *, portable, before=None, after_pass=None):
    """Run the changes (before the rescore, or between its pass and its chunks), then
    the rescore; return what changed, and roll everything back."""
    sid = transaction.savepoint()
    last = max(LedgerEntry.objects.values_list("pk", flat=True), default=0)
    if before:
        before()
    build = rescore_pass.pass_build

    def build_then_change(**kwargs):
        built = build(**kwargs)
        after_pass()
        return built

    rescore_pass.pass_build = build_then_change if after_pass else build
    try:
        run = RescoreRun.objects.create(total=0)
        run = services.rescore_execute(run_id=run.pk, now=now, portable=portable)
    finally:
        rescore_pass.pass_build = build
    entries = LedgerEntry.objects.filter(pk__gt=last).values_list(
        "contact_id", "rule_id", "activity__kind", "activity__occurred_at", "points", "at", "reason"
    )
    result = {
        # Entries of the merge's handlers (the fit rules of its "contacts changed", the
        # reconcile of its "contacts merging") are dated by the clock: after ``now``.
        "entries": sorted(
            (
                e[:5] + (None if e[6] == LedgerEntry.Reason.FIT or e[5] > now else e[5], e[6])
                for e in entries
            ),
            key=repr,
        ),
        "scores": dict(Contact.objects.values_list("pk", "scorecard__score")),
        "stages": dict(Contact.objects.values_list("pk", "stage")),
        # Likewise a hand-off by that handler: every other transition is dated at an
        # activity or at the rescore's ``now``, never after it. (Whether the merge's handler
        # hands a contact off depends on the time of day: an activity two hours ago falls
        # on a day the contact has already been counted for once it is past midnight.)
        "transitions": sorted(
            (
                (contact, stage, at if at <= now else None)
                for contact, stage, at in LifecycleTransition.objects.values_list(
                    "contact_id", "to_stage", "at"
                )
            ),
            key=repr,
        ),
        "counts": (run.processed, run.contacts_changed, run.entries_created, run.status),
    }
    transaction.savepoint_rollback(sid)
    return result


@pytest.mark.django_db
@pytest.mark.parametrize("dirty_share", [1.0, 0.0], ids=["dirty-by-id", "dirty-chunk-by-range"])
def test_changes_between_the_pass_and_the_writes_are_neither_lost_nor_doubled(
    dirty_share, monkeypatch
):
    now = timezone.now().replace(microsecond=0)
    contacts, company, rules = _world(now)
    monkeypatch.setattr(rescore_pass, "DIRTY_SHARE", dirty_share)
    exact_ids = []
    statement = rescore_sql._statement

    def spy(scope, *args):
        exact_ids.append(scope.ids)
        return statement(scope, *args)

    monkeypatch.setattr(rescore_sql, "_statement", spy)
    changed = []
    meanwhile = lambda: changed.append(_meanwhile(contacts, company, rules, now))  # noqa: E731
    fast = _outcome(now, portable=False, after_pass=meanwhile)
    reference = _outcome(now, portable=True, before=meanwhile)
    assert fast == reference
    assert fast["entries"]
    assert fast["counts"][1] > 0
    if dirty_share:
        # Exactly the changed contacts were rescored apart (the merged-away one is gone);
        # every other adjustment came from the pass.
        assert [set(ids) for ids in exact_ids] == [changed[0]]
        assert len({e[0] for e in fast["entries"]} - changed[0]) > 0
    else:
        assert exact_ids == [None]  # the chunk, read whole by range


@pytest.mark.django_db
def test_without_changes_the_pass_alone_gives_the_exact_outcome(monkeypatch):
    now = timezone.now().replace(microsecond=0)
    _world(now)
    monkeypatch.setattr(
        rescore_sql, "_statement", lambda *a: pytest.fail("nothing is dirty: no exact read")
    )
    fast = _outcome(now, portable=False)
    monkeypatch.undo()
    assert fast == _outcome(now, portable=True)
    assert fast["counts"][1] > 0


@pytest.mark.django_db(transaction=True)
def test_the_watermark_waits_for_transactions_writing_activities():
    """Until a transaction that inserted activities ends, their ids may be below the
    sequence's value yet invisible to the pass: the watermark waits (here: gives up)."""
    contact = ContactFactory()
    inserted, release = threading.Event(), threading.Event()

    def ingest():
        try:
            with transaction.atomic():
                ActivityFactory(contact=contact)
                inserted.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        assert inserted.wait(10)
        assert rescore_pass.activity_watermark(timeout=0.3) is None
    finally:
        release.set()
        writer.join()
    mark = rescore_pass.activity_watermark(timeout=5)
    assert mark == Activity.objects.get(contact=contact).pk


@pytest.mark.django_db
def test_a_pass_that_gives_up_waiting_leaves_the_rescore_to_the_chunk_reads(monkeypatch):
    now = timezone.now().replace(microsecond=0)
    _world(now)
    monkeypatch.setattr(rescore_pass, "activity_watermark", lambda **kwargs: None)
    fast = _outcome(now, portable=False)
    monkeypatch.undo()
    assert fast == _outcome(now, portable=True)
    assert fast["counts"][1] > 0


@pytest.mark.django_db
def test_the_check_writes_clean_contacts_and_returns_only_the_hand_off(monkeypatch):
    """The check statement appends the clean contacts' adjustments and sets their scores
    itself: the worker gets back only the totals, the dirty ids and the rows of the
    contacts it may hand off (gained points and reach the threshold)."""
    now = timezone.now().replace(microsecond=0)
    _world(now)
    monkeypatch.setattr(
        rescore_sql, "rows_apply", lambda *a, **k: pytest.fail("nothing comes back to write")
    )
    returned = []
    execute = rescore_pass.chunk_apply

    def spy(**kwargs):
        outcome = execute(**kwargs)
        returned.append(outcome)
        return outcome

    monkeypatch.setattr(rescore_pass, "chunk_apply", spy)
    fast = _outcome(now, portable=False)
    monkeypatch.undo()
    assert fast == _outcome(now, portable=True)
    (outcome,) = returned
    threshold = ScoringSettings.load().mql_threshold
    assert outcome.handoff_scores
    assert min(outcome.handoff_scores.values()) >= threshold
    assert {e.contact_id for e in outcome.handoff_entries} == set(outcome.handoff_scores)
    assert outcome.contacts_changed > len(outcome.handoff_scores)
    assert all(fast["scores"][c] == s for c, s in outcome.handoff_scores.items())


@pytest.mark.django_db
def test_without_hand_off_the_check_returns_no_candidates(monkeypatch):
    now = timezone.now().replace(microsecond=0)
    _world(now)
    returned = []
    execute = rescore_pass.chunk_apply
    monkeypatch.setattr(
        rescore_pass,
        "chunk_apply",
        lambda **kw: returned.append(execute(**kw)) or returned[-1],
    )
    services.scores_rescore_all(hand_off=False)
    (outcome,) = returned
    assert outcome.contacts_changed > 0
    assert (outcome.handoff_entries, outcome.handoff_scores) == ([], {})
