from datetime import timedelta

import pytest
from django.utils import timezone

from crm import lifecycle, services
from crm.models import Activity, Contact, Deal, LifecycleTransition, Segment, SegmentMembership
from tests.factories import ActivityFactory, DealFactory

pytestmark = pytest.mark.django_db


def test_merging_keeps_the_older_contact_and_moves_everything():
    now = timezone.now()
    old = services.contact_create(email="old@example.com", created_at=now - timedelta(days=9))
    new = services.contact_create(
        email="new@example.com", job_title="CTO", phone="123", attributes={"plan": "pro"}
    )
    ActivityFactory(contact=new)
    ActivityFactory(contact=old)
    DealFactory(contact=new)
    both = Segment.objects.create(name="Both", kind="static")
    only_new = Segment.objects.create(name="New only", kind="static")
    SegmentMembership.objects.create(segment=both, contact=old, joined_at=now)
    SegmentMembership.objects.create(segment=both, contact=new, joined_at=now)
    SegmentMembership.objects.create(segment=only_new, contact=new, joined_at=now)

    # Passing them the "wrong" way round still keeps the older one.
    kept = services.contact_merge(keep=new, duplicate=old)

    assert kept.pk == old.pk
    assert list(Contact.objects.values_list("email", flat=True)) == ["old@example.com"]
    assert Activity.objects.filter(contact=old).count() == 2
    assert LifecycleTransition.objects.filter(contact=old).count() == 2
    assert Deal.objects.get().contact_id == old.pk
    assert SegmentMembership.objects.filter(contact=old).count() == 2
    kept.refresh_from_db()
    assert (kept.job_title, kept.phone, kept.attributes) == ("CTO", "123", {"plan": "pro"})


def test_merging_a_contact_with_itself_is_refused():
    contact = services.contact_create(email="a@example.com")
    with pytest.raises(Exception, match="itself"):
        services.contact_merge(keep=contact, duplicate=contact)


def test_merging_contacts_live_in_one_program_keeps_every_enrollment_and_send(settings):
    """Review finding: the duplicate's enrollments could not move (one live enrollment per
    program) and deleting it took its sends along, breaking links of delivered mail."""
    from django.test import Client

    from nurture import tokens
    from nurture.models import EmailSend, Enrollment
    from nurture.services.enrollment import contacts_enroll
    from nurture.services.sending import enrollments_advance
    from tests.nurture.factories import ProgramFactory, StepFactory

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://crm.example.com"
    both, only_dup = ProgramFactory(), ProgramFactory()
    for program in (both, only_dup):
        StepFactory(program=program, position=1)
        StepFactory(program=program, position=2)
    keep = services.contact_create(
        email="keep@example.com", created_at=timezone.now() - timedelta(days=1)
    )
    dup = services.contact_create(email="dup@example.com")
    contacts_enroll(program=both, contact_ids=[keep.pk, dup.pk], source="manual")
    contacts_enroll(program=only_dup, contact_ids=[dup.pk], source="manual")
    enrollments_advance()
    dup_sends = set(EmailSend.objects.filter(contact=dup).values_list("message_id", flat=True))
    assert len(dup_sends) == 2

    services.contact_merge(keep=keep, duplicate=dup)

    # Every send survives, now the kept contact's, and its unsubscribe link still works.
    assert (
        set(
            EmailSend.objects.filter(contact=keep, message_id__in=dup_sends).values_list(
                "message_id", flat=True
            )
        )
        == dup_sends
    )
    states = sorted(
        Enrollment.objects.filter(contact=keep).values_list("program_id", "state", "exit_reason")
    )
    assert states == sorted(
        [
            (both.pk, "active", ""),  # the kept contact's own
            (both.pk, "exited", "merged"),  # the duplicate's, ended: one live per program
            (only_dup.pk, "active", ""),
        ]
    )
    for message_id in dup_sends:
        url = tokens.unsubscribe_url(message_id).removeprefix("https://crm.example.com")
        assert Client().get(url).status_code == 200
    # The moved enrollments go on: the next step of each live one is sent to the kept address.
    enrollments_advance(now=timezone.now() + timedelta(minutes=1))
    assert EmailSend.objects.filter(contact=keep, status="sent").count() == 5


def test_an_enrollment_with_sends_cannot_be_deleted_alone():
    from django.db.models import RestrictedError

    from nurture.models import Enrollment
    from nurture.services.enrollment import contacts_enroll
    from nurture.services.sending import enrollments_advance
    from tests.nurture.factories import ProgramFactory, StepFactory

    program = ProgramFactory()
    StepFactory(program=program)
    contact = services.contact_create(email="a@example.com")
    contacts_enroll(program=program, contact_ids=[contact.pk], source="manual")
    enrollments_advance()
    with pytest.raises(RestrictedError):
        Enrollment.objects.get().delete()
    # Deleting the contact itself still deletes its enrollments and sends.
    contact.delete()
    assert not Enrollment.objects.exists()


# --- Review findings: what a merge must carry over (score, suppression, stage, facts) ------


def _pair(**dup_fields):
    now = timezone.now()
    keep = services.contact_create(email="keep@example.com", created_at=now - timedelta(days=9))
    dup = services.contact_create(
        email="dup@example.com", created_at=now - timedelta(days=1), **dup_fields
    )
    return keep, dup


def _visit(contact, days_ago, url="https://x.example/pricing"):
    from crm.ingest import activities_record

    when = timezone.now() - timedelta(days=days_ago)
    activities_record(
        items=[{"contact": contact.pk, "kind": "page_visit", "occurred_at": when, "url": url}]
    )


def test_the_duplicates_points_move_and_a_once_ever_rule_counts_once():
    """The ledger (related_name="+") was deleted with the duplicate: its points vanished."""
    from scoring.models import LedgerEntry
    from tests.scoring.factories import EngagementRuleFactory

    EngagementRuleFactory(points=10)  # every visit
    EngagementRuleFactory(points=25, activity_kind="form_submitted", frequency="once_ever")
    keep, dup = _pair()
    _visit(keep, 3)
    _visit(dup, 2)
    _visit(dup, 1)
    for contact in (keep, dup):
        from crm.ingest import activities_record

        activities_record(
            items=[{"contact": contact.pk, "kind": "form_submitted", "occurred_at": timezone.now()}]
        )
    assert Contact.objects.get(pk=dup.pk).scorecard.score == 45  # 2 × 10 + 25
    kept = services.contact_merge(keep=keep, duplicate=dup)
    # 3 visits × 10 + the form once: 55; the second form's 25 is taken back by one entry
    assert Contact.objects.get(pk=kept.pk).scorecard.score == 55
    assert (
        sum(LedgerEntry.objects.filter(contact_id=kept.pk).values_list("points", flat=True)) == 55
    )
    assert LedgerEntry.objects.filter(contact_id=kept.pk, reason="rescore", points=-25).count() == 1


def test_a_merge_that_takes_the_score_over_the_threshold_hands_the_lead_to_sales():
    from scoring.models import ScoringSettings
    from tests.scoring.factories import EngagementRuleFactory

    ScoringSettings.objects.update_or_create(pk=1, defaults={"mql_threshold": 50})
    EngagementRuleFactory(points=30)
    keep, dup = _pair()
    _visit(keep, 2)
    _visit(dup, 1)
    assert Contact.objects.get(pk=keep.pk).stage == "lead"
    before = timezone.now()
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert (kept.stage, kept.scorecard.score) == ("mql", 60)
    mql = kept.transitions.get(to_stage="mql")
    assert mql.at >= before  # qualified when the records became one


@pytest.mark.parametrize(
    ("theirs", "ours", "merged"),
    [
        ("unsubscribed", "active", "unsubscribed"),
        ("complained", "unsubscribed", "complained"),
        ("complained", "hard_bounced", "complained"),
        ("unsubscribed", "complained", "complained"),
        # a bounce belongs to the duplicate's address, which the merge drops
        ("hard_bounced", "active", "active"),
    ],
)
def test_a_persons_stop_follows_them_to_the_merged_record(theirs, ours, merged):
    """Review finding: the merged contact kept the older record's "active" status, so a
    person who unsubscribed under their other address was mailed again."""
    keep, dup = _pair()
    Contact.objects.filter(pk=keep.pk).update(email_status=ours)
    Contact.objects.filter(pk=dup.pk).update(email_status=theirs)
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert kept.email_status == merged
    assert kept.is_suppressed is (merged != "active")


def test_consent_recorded_on_either_record_is_the_persons():
    keep, dup = _pair()
    given = timezone.now() - timedelta(days=30)
    Contact.objects.filter(pk=keep.pk).update(consent_basis="none")
    Contact.objects.filter(pk=dup.pk).update(
        consent_basis="consent", consent_given_at=given, consent_source="webinar form"
    )
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert (kept.consent_basis, kept.consent_given_at, kept.consent_source) == (
        "consent",
        given,
        "webinar form",
    )


def test_the_merged_stage_is_the_merged_historys_latest():
    """Review finding: the duplicate's history (… → customer) moved, the stage stayed lead."""
    from crm import lifecycle

    keep, dup = _pair()
    lifecycle.stage_change(contact=keep, to_stage="mql")
    lifecycle.stage_change(contact=keep, to_stage="recycled")
    lifecycle.stage_change(contact=keep, to_stage="mql")
    lifecycle.stage_change(contact=keep, to_stage="recycled")  # round 2
    lifecycle.stage_change(contact=dup, to_stage="customer")
    last = LifecycleTransition.objects.get(contact=dup, to_stage="customer")
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert (kept.stage, kept.stage_changed_at, kept.recycle_round) == ("customer", last.at, 2)
    # no transition for the merge itself: each stage entry is counted once
    assert LifecycleTransition.objects.filter(contact=kept, to_stage="customer").count() == 1


def test_the_duplicates_report_facts_follow_its_history():
    """Facts keyed by a plain contact-id column (related_name="+", DO_NOTHING) dangled."""
    from crm import lifecycle
    from reports.models import TransitionFact

    keep, dup = _pair()
    lifecycle.stage_change(contact=dup, to_stage="mql")
    assert TransitionFact.objects.filter(contact_id=dup.pk).exists()
    kept = services.contact_merge(keep=keep, duplicate=dup)
    assert not TransitionFact.objects.filter(contact_id=dup.pk).exists()
    assert TransitionFact.objects.filter(contact_id=kept.pk, transition__to_stage="mql").exists()


# --- Review findings on the merge's stage and hand-off ------------------------------------


def test_merging_a_fresh_duplicate_into_a_customer_keeps_customer():
    now = timezone.now()
    keep = services.contact_create(email="cust@example.com", created_at=now - timedelta(days=90))
    lifecycle.stage_change(contact=keep, to_stage="customer", at=now - timedelta(days=30))
    # the same person fills in a web form under another address yesterday: a new lead
    dup = services.contact_create(
        email="cust.other@example.com", created_at=now - timedelta(days=1)
    )
    assert Contact.objects.get(pk=dup.pk).stage == "lead"
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert kept.stage == "customer"


def test_a_scored_customer_merged_with_a_fresh_duplicate_is_not_handed_off_as_mql():
    from crm.ingest import activities_record
    from scoring.models import ScoringSettings
    from tests.scoring.factories import EngagementRuleFactory

    ScoringSettings.objects.update_or_create(pk=1, defaults={"mql_threshold": 30})
    EngagementRuleFactory(points=30)
    now = timezone.now()
    keep = services.contact_create(email="c2@example.com", created_at=now - timedelta(days=90))
    activities_record(
        items=[{"contact": keep.pk, "kind": "page_visit", "occurred_at": now - timedelta(days=60)}]
    )
    lifecycle.stage_change(contact=keep, to_stage="sql", at=now - timedelta(days=50))
    lifecycle.stage_change(contact=keep, to_stage="customer", at=now - timedelta(days=30))
    dup = services.contact_create(email="c2.other@example.com", created_at=now - timedelta(days=1))
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert kept.stage == "customer"


def test_a_merge_that_adds_nothing_does_not_requalify_a_recycled_lead():
    from crm.ingest import activities_record
    from scoring.models import ScoringSettings
    from tests.scoring.factories import EngagementRuleFactory

    """Policy "keep": a recycled lead keeps its points and re-qualifies on its next gain.
    Merging an empty duplicate into it is no gain: no hand-off (review finding)."""
    ScoringSettings.objects.update_or_create(
        pk=1, defaults={"mql_threshold": 30, "recycle_policy": "keep"}
    )
    EngagementRuleFactory(points=30)
    now = timezone.now()
    keep = services.contact_create(email="k@example.com", created_at=now - timedelta(days=9))
    activities_record(
        items=[{"contact": keep.pk, "kind": "page_visit", "occurred_at": now - timedelta(days=5)}]
    )
    assert Contact.objects.get(pk=keep.pk).stage == "mql"
    lifecycle.stage_change(
        contact=keep, to_stage="recycled", reason_code="no_budget", at=now - timedelta(days=4)
    )
    dup = services.contact_create(email="k2@example.com", created_at=now - timedelta(days=8))
    # keep the duplicate's creation transition older than the recycle (finding 1 aside)
    LifecycleTransition.objects.filter(contact=dup).update(at=now - timedelta(days=8))
    kept = services.contact_merge(keep=keep, duplicate=dup)
    kept.refresh_from_db()
    assert kept.scorecard.score == 30
    assert kept.stage == "recycled"
