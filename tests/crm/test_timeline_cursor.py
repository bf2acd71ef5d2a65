"""The contact timeline's cursor (review findings): entries sharing the boundary time are
neither skipped nor shown twice, and provider entries are cut at the time they show."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm import ingest, services
from crm.timeline import contact_timeline

pytestmark = pytest.mark.django_db


def all_pages(contact, limit=50):
    seen, before, skip = [], None, 0
    for _ in range(200):
        page = contact_timeline(contact, before=before, skip=skip, limit=limit)
        seen += page.entries
        if page.next_before is None:
            return seen
        before, skip = page.next_before, page.next_skip
    raise AssertionError("the cursor never reached the end")


def test_entries_sharing_the_boundary_time_are_not_skipped(settings):
    settings.CONTACT_TIMELINE_PROVIDERS = []
    contact = services.contact_create(email="tie@example.com")
    at = contact.created_at - timedelta(hours=1)
    # A webinar list imported with one timestamp per row: 60 activities at one instant.
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "page_visit",
                "occurred_at": at.isoformat(),
                "url": f"https://x.example/{i}",
            }
            for i in range(60)
        ]
    )
    entries = all_pages(contact)
    activities = [e for e in entries if e.kind == "activity"]
    assert len(activities) == 60
    assert len({e.detail for e in activities}) == 60  # each once


def test_an_enrollment_exit_is_not_shown_twice(settings):
    from nurture.models import Enrollment
    from tests.nurture.factories import ProgramFactory

    settings.CONTACT_TIMELINE_PROVIDERS = ["nurture.providers.timeline"]
    contact = services.contact_create(email="enr@example.com")
    now = timezone.now()
    program = ProgramFactory()
    Enrollment.objects.create(
        contact=contact,
        program=program,
        state="exited",
        entered_at=now - timedelta(days=30),
        exited_at=now - timedelta(minutes=1),
        exit_reason="goal",
        source="manual",
    )
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "page_visit",
                "occurred_at": (now - timedelta(days=1, minutes=i)).isoformat(),
            }
            for i in range(60)
        ]
    )
    entries = all_pages(contact)
    left = [e for e in entries if e.title.startswith("Left") or e.title.startswith("Completed")]
    assert len(left) == 1, [(e.at, e.title) for e in left]


def test_scored_activities_are_not_skipped_at_a_page_boundary():
    # Default providers: each scored activity has a ledger entry at the same instant.
    from tests.scoring.factories import EngagementRuleFactory

    EngagementRuleFactory(points=1)
    contact = services.contact_create(email="scored@example.com")
    now = timezone.now()
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "page_visit",
                "occurred_at": (now - timedelta(hours=1, minutes=i)).isoformat(),
            }
            for i in range(30)
        ]
    )
    entries = all_pages(contact)
    assert len([e for e in entries if e.kind == "activity"]) == 30
    assert len([e for e in entries if e.kind == "score"]) == 30


def test_every_page_size_shows_every_entry_once():
    """Pages of any size over ties of every width add up to the whole history, in order."""
    from tests.scoring.factories import EngagementRuleFactory

    EngagementRuleFactory(points=1)
    contact = services.contact_create(email="sizes@example.com")
    base = timezone.now() - timedelta(days=2)
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "page_visit",
                "occurred_at": (base - timedelta(minutes=i // 4)).isoformat(),
                "url": f"https://x.example/{i}",
            }
            for i in range(23)
        ]
    )
    whole = all_pages(contact, limit=1000)
    for limit in (1, 2, 3, 5, 7, 50):
        paged = all_pages(contact, limit=limit)
        assert [(e.at, e.kind, e.title, e.detail) for e in paged] == [
            (e.at, e.kind, e.title, e.detail) for e in whole
        ], limit


def test_two_enrollments_entered_at_one_instant_one_exiting_later(settings):
    """An activity trigger enrolls the contact in two programs with one `now`; the first
    (lower id) later exits. The page cut between the two 'Entered' entries must not
    repeat one and skip the other."""
    from nurture.models import Enrollment
    from tests.nurture.factories import ProgramFactory

    settings.CONTACT_TIMELINE_PROVIDERS = ["nurture.providers.timeline"]
    contact = services.contact_create(email="twoprog@example.com")
    now = timezone.now()
    t = now - timedelta(days=2)
    a, b = ProgramFactory(name="A"), ProgramFactory(name="B")
    Enrollment.objects.create(
        contact=contact,
        program=a,
        state="exited",
        entered_at=t,
        exited_at=now - timedelta(days=1),
        exit_reason="goal",
        source="activity",
    )
    Enrollment.objects.create(
        contact=contact, program=b, state="active", entered_at=t, source="activity"
    )
    whole = [(e.at, e.title) for e in all_pages(contact, limit=1000)]
    for limit in (1, 2, 3):
        paged = [(e.at, e.title) for e in all_pages(contact, limit=limit)]
        assert paged == whole, (limit, paged, whole)


def test_one_source_with_a_page_and_one_more_left_gets_an_older_page(settings):
    """Every source is read one row past the page: with 51 activities left and nothing
    else, the page of 50 still offers the older page holding the 51st."""
    settings.CONTACT_TIMELINE_PROVIDERS = []
    contact = services.contact_create(email="one-more@example.com")
    base = contact.created_at - timedelta(days=1)
    ingest.activities_record(
        items=[
            {
                "contact": contact.pk,
                "kind": "page_visit",
                "occurred_at": (base - timedelta(minutes=i)).isoformat(),
            }
            for i in range(100)
        ]
    )
    assert len([e for e in all_pages(contact) if e.kind == "activity"]) == 100


@pytest.mark.parametrize("seed", [*range(30), 67])
def test_pages_of_every_size_concatenate_to_the_whole_timeline(settings, seed):
    """Random histories over three instants (activities, score entries, enrollments
    entered and left, sends; every source ties with every other): pages of any size, cut
    anywhere, add up to the whole timeline, each entry once, in its order (review finding:
    a cut enrollment's entry sorted ahead of a read one's exit)."""
    import random

    from crm.models import Activity, LifecycleTransition
    from nurture.models import EmailSend, Enrollment
    from scoring.models import LedgerEntry
    from tests.nurture.factories import ProgramFactory

    settings.CONTACT_TIMELINE_PROVIDERS = [
        "nurture.providers.timeline",
        "scoring.extensions.timeline",
    ]
    rnd = random.Random(seed)
    base = timezone.now().replace(microsecond=0) - timedelta(days=5)
    times = [base + timedelta(hours=h) for h in range(3)]
    contact = services.contact_create(email=f"t{seed}@example.com", created_at=base)
    LifecycleTransition.objects.filter(contact=contact).update(at=rnd.choice(times))
    for i in range(rnd.randint(0, 5)):
        Activity.objects.create(
            contact=contact, kind="page_visit", occurred_at=rnd.choice(times), url=f"u{i}"
        )
    for i in range(rnd.randint(0, 5)):
        LedgerEntry.objects.create(
            contact=contact, points=i + 1, at=rnd.choice(times), reason="rescore"
        )
    for i in range(rnd.randint(0, 9)):
        entered = rnd.choice(times)
        state = rnd.choice(["exited", "completed", "active"])
        exited = None if state == "active" else rnd.choice([t for t in times if t >= entered])
        program = ProgramFactory(name=f"P{i}")
        enrollment = Enrollment.objects.create(
            contact=contact,
            program=program,
            state=state,
            entered_at=entered,
            exited_at=exited,
            exit_reason="x" if exited else "",
        )
        for j in range(rnd.randint(0, 2)):
            EmailSend.objects.create(
                enrollment=enrollment,
                contact=contact,
                program=program,
                message_id=f"m{i}-{j}",
                status="sent",
                subject=f"S{i}-{j}",
                sent_at=rnd.choice(times),
            )

    def key(e):
        return (e.at, e.kind, e.title, e.detail)

    whole = [key(e) for e in contact_timeline(contact, limit=10_000).entries]
    expected = (
        Activity.objects.filter(contact=contact).count()
        + 1  # the creation transition
        + LedgerEntry.objects.filter(contact=contact).count()
        + EmailSend.objects.filter(contact=contact).count()
        + Enrollment.objects.filter(contact=contact).count()
        + Enrollment.objects.filter(contact=contact, exited_at__isnull=False).count()
    )
    assert len(whole) == expected
    for limit in (1, 2, 3, 4, 5, 7):
        assert [key(e) for e in all_pages(contact, limit)] == whole, limit
