import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, transaction
from django.db.models import Max
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm import lifecycle
from crm.ingest import activities_record
from crm.models import Contact, Segment, SegmentChange, SegmentMembership, Stage
from crm.models.segments import SettledBelow
from crm.segments import condition_providers
from nurture.models import Enrollment, Trigger
from nurture.providers import summaries, timeline
from nurture.services import enrollment
from nurture.services.enrollment import contacts_enroll, triggers_run
from nurture.services.programs import trigger_create
from nurture.services.sending import enrollments_advance
from tests.factories import CampaignFactory
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory, TriggerFactory

pytestmark = pytest.mark.django_db


def _live(program):
    return set(
        Enrollment.objects.filter(program=program).live().values_list("contact_id", flat=True)
    )


def _segment_trigger(**program_fields):
    program = ProgramFactory(**program_fields)
    StepFactory(program=program)
    segment = Segment.objects.create(name="Hot", kind="static")
    trigger_create(trigger=Trigger(program=program, kind="segment_joined", segment=segment))
    return program, segment


def _join(segment, contact, **position):
    """A join; ``xid`` (and ``pk``) given: at that place in the log, as if written by that
    transaction (explicit xids are far below PostgreSQL's, so they read as settled)."""
    return SegmentChange.objects.create(
        segment=segment, contact=contact, kind="joined", at=timezone.now(), **position
    )


def _wait_until_settled(timeout: float = 60) -> None:
    """Wait until no transaction still running can precede a stored change. On PostgreSQL
    that is when every transaction older than the newest change has ended, another test
    worker's too (transaction ids are the cluster's); so a test whose own transaction
    wrote the changes never sees them settle (``transaction=True`` commits each write)."""
    deadline = time.monotonic() + timeout
    while SegmentChange.objects.filter(xid__gte=SettledBelow()).exists():
        assert time.monotonic() < deadline, "an older transaction stayed open"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_joining_a_segment_enrolls_once():
    program = ProgramFactory()
    StepFactory(program=program)
    segment = Segment.objects.create(name="Hot", kind="static")
    before = ContactFactory()
    _join(segment, before)
    trigger_create(trigger=Trigger(program=program, kind="segment_joined", segment=segment))
    joiner = ContactFactory()
    _join(segment, joiner)
    SegmentChange.objects.create(segment=segment, contact=before, kind="left", at=timezone.now())
    _wait_until_settled()
    assert triggers_run() == 1
    assert triggers_run() == 0  # the cursor moved on
    assert _live(program) == {joiner.pk}


def test_a_join_that_commits_behind_a_join_already_read_is_enrolled():
    """The reported defect: ids are taken at INSERT and rows appear at COMMIT, so the tick
    read id n + 2, moved its cursor there, and the join with id n + 1 that committed after
    was never read. Here transaction 11 took id n + 1 and was still open when transaction
    10 wrote n + 2 and committed."""
    program, segment = _segment_trigger()
    early, late = ContactFactory(), ContactFactory()
    n = (SegmentChange.objects.aggregate(m=Max("pk"))["m"] or 0) + 10
    _join(segment, late, xid=10, pk=n + 2)
    assert triggers_run() == 1
    _join(segment, early, xid=11, pk=n + 1)  # transaction 11 commits
    assert triggers_run() == 1
    assert triggers_run() == 0
    assert _live(program) == {early.pk, late.pk}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_join_still_being_written_holds_back_later_joins_until_it_commits():
    """The same defect with real transactions: the open one's join has the lower id."""
    program, segment = _segment_trigger()
    early, late = ContactFactory(), ContactFactory()
    written, commit = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def open_transaction():
        try:
            with transaction.atomic():
                _join(segment, early)
                written.set()
                commit.wait(timeout=30)
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=open_transaction)
    writer.start()
    try:
        assert written.wait(timeout=30)
        later = _join(segment, late)  # commits at once, with the higher id
        assert triggers_run() == 0  # it waits for the older open transaction
    finally:
        commit.set()
        writer.join(timeout=30)
    assert not errors
    assert SegmentChange.objects.get(contact=early).pk < later.pk
    _wait_until_settled()
    assert triggers_run() == 2
    assert triggers_run() == 0
    assert _live(program) == {early.pk, late.pk}


def test_a_tick_that_stops_inside_one_transactions_joins_goes_on_from_there(monkeypatch):
    monkeypatch.setattr(enrollment, "SEGMENT_JOINS_PER_RUN", 2)
    program, segment = _segment_trigger()
    contacts = ContactFactory.create_batch(4)
    for contact in contacts[:3]:
        _join(segment, contact, xid=20)  # one transaction's joins, in id order
    _join(segment, contacts[3], xid=19)  # an older transaction's, written last
    order = [contacts[3], *contacts[:3]]
    assert triggers_run() == 2
    assert _live(program) == {c.pk for c in order[:2]}
    assert triggers_run() == 2
    assert triggers_run() == 0
    assert _live(program) == {c.pk for c in order}


@pytest.mark.parametrize(("reentry", "enrolled"), [("never", 1), ("always", 2)])
def test_a_second_join_enrolls_again_only_as_the_reentry_rule_allows(reentry, enrolled):
    program, segment = _segment_trigger(reentry=reentry)
    contact = ContactFactory()
    _join(segment, contact, xid=10)
    assert triggers_run() == 1
    Enrollment.objects.update(state="completed")
    assert triggers_run() == 0  # a join is read once
    _join(segment, contact, xid=11)
    assert triggers_run() == enrolled - 1
    assert triggers_run() == 0
    assert Enrollment.objects.filter(program=program, contact=contact).count() == enrolled


def test_an_activity_matching_the_trigger_enrolls_the_contact():
    program = ProgramFactory()
    StepFactory(program=program)
    webinar = CampaignFactory()
    TriggerFactory(
        program=program, kind="activity", activity_kind="webinar_attended", campaign=webinar
    )
    TriggerFactory(
        program=program, kind="activity", activity_kind="page_visit", url_pattern="*/pricing*"
    )
    a, b, c = ContactFactory(), ContactFactory(), ContactFactory()
    now = timezone.now()
    activities_record(
        items=[
            {
                "kind": "webinar_attended",
                "occurred_at": now,
                "contact": a.pk,
                "campaign": webinar.pk,
            },
            {"kind": "webinar_attended", "occurred_at": now, "contact": b.pk},  # other campaign
            {
                "kind": "page_visit",
                "occurred_at": now,
                "contact": c.pk,
                "url": "https://x.example/pricing/",
            },
            {
                "kind": "page_visit",
                "occurred_at": now,
                "contact": b.pk,
                "url": "https://x.example/blog/",
            },
        ]
    )
    assert _live(program) == {a.pk, c.pk}


def test_a_click_trigger_is_not_fired_by_a_click_that_is_not_a_click():
    """METRICS.md "unique clicks": a click on the unsubscribe link or a machine's (a link
    scanner's) is not a click, so it enrolls nobody in a program triggered by clicks."""
    program = ProgramFactory()
    StepFactory(program=program)
    TriggerFactory(program=program, kind="activity", activity_kind="email_clicked")
    reader, leaving, scanned = ContactFactory(), ContactFactory(), ContactFactory()
    now = timezone.now()
    click = {"kind": "email_clicked", "occurred_at": now}
    activities_record(
        items=[
            {**click, "contact": reader.pk, "url": "https://x.example/offer"},
            {**click, "contact": leaving.pk, "url": "https://CRM.example.com/u/token"},
            {**click, "contact": scanned.pk, "url": "https://x.example/offer", "is_machine": True},
        ]
    )
    assert _live(program) == {reader.pk}


def test_a_machine_open_enrolls_nobody():
    """A privacy proxy opens every email it relays (flagged ``is_machine``): no person
    opened it, so a program triggered by opens enrolls only the person who did."""
    program = ProgramFactory()
    StepFactory(program=program)
    TriggerFactory(program=program, kind="activity", activity_kind="email_opened")
    reader, proxied = ContactFactory(), ContactFactory()
    opened = {"kind": "email_opened", "occurred_at": timezone.now()}
    activities_record(
        items=[
            {**opened, "contact": reader.pk},
            {**opened, "contact": proxied.pk, "is_machine": True},
        ]
    )
    assert _live(program) == {reader.pk}


def test_a_date_trigger_enrolls_on_the_anniversary():
    program = ProgramFactory()
    StepFactory(program=program)
    TriggerFactory(program=program, kind="date", date_attribute="birthday", offset_days=-3)
    in_three_days = timezone.localdate() + timedelta(days=3)
    due = ContactFactory(attributes={"birthday": f"1990-{in_three_days:%m-%d}"})
    ContactFactory(
        attributes={"birthday": "1990-01-01" if in_three_days.month != 1 else "1990-06-01"}
    )
    ContactFactory(attributes={})
    assert triggers_run() == 1
    assert _live(program) == {due.pk}
    assert triggers_run() == 0  # once a day


def test_a_29_february_date_fires_on_28_february_in_common_years():
    """Review finding: a yearly trigger on 29 February never fired outside leap years."""
    from datetime import date

    from nurture.services.enrollment import date_trigger_contacts

    leapling = ContactFactory(attributes={"birthday": "2000-02-29"})
    no_year = ContactFactory(attributes={"birthday": "02-29"})
    on_28th = ContactFactory(attributes={"birthday": "1999-02-28"})
    trigger = TriggerFactory(kind="date", date_attribute="birthday", yearly=True)

    def fired(year: int) -> dict[date, set[int]]:
        days = (date(year, 1, 1) + timedelta(days=i) for i in range(366))
        out = {}
        for day in (d for d in days if d.year == year):
            ids = set(date_trigger_contacts(trigger, day).values_list("pk", flat=True))
            if ids:
                out[day] = ids
        return out

    assert fired(2027) == {date(2027, 2, 28): {leapling.pk, no_year.pk, on_28th.pk}}
    assert fired(2028) == {
        date(2028, 2, 28): {on_28th.pk},
        date(2028, 2, 29): {leapling.pk, no_year.pk},
    }
    # With an offset the date looked for moves, and the rule with it: three days before.
    early = TriggerFactory(kind="date", date_attribute="birthday", yearly=True, offset_days=-3)
    assert leapling in date_trigger_contacts(early, date(2027, 2, 25))


def test_recycle_programs_enroll_by_reason_code_and_mql_exits_others():
    nurture = ProgramFactory()
    StepFactory(program=nurture)
    recycle = ProgramFactory(exit_on_recycle=False)
    StepFactory(program=recycle)
    TriggerFactory(program=recycle, kind="recycled", reason_code="no_budget")
    other = ProgramFactory(exit_on_recycle=False)
    TriggerFactory(program=other, kind="recycled", reason_code="bad_timing")
    contact = ContactFactory()
    contacts_enroll(program=nurture, contact_ids=[contact.pk], source="m")
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
    assert Enrollment.objects.get(program=nurture).exit_reason == "became_mql"
    lifecycle.stage_change(contact=contact, to_stage=Stage.RECYCLED, reason_code="no_budget")
    assert _live(recycle) == {contact.pk}
    assert _live(other) == set()


def test_every_recycle_round_enters_the_recycle_program_whatever_its_reentry_policy():
    recycle = ProgramFactory(reentry="never")  # exits on MQL, as by default
    StepFactory(program=recycle)
    TriggerFactory(program=recycle, kind="recycled", reason_code="")
    contact = ContactFactory()
    for _round in range(2):
        lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
        assert _live(recycle) == set()
        lifecycle.stage_change(contact=contact, to_stage=Stage.RECYCLED, reason_code="no_budget")
        assert _live(recycle) == {contact.pk}
    assert Enrollment.objects.filter(program=recycle).count() == 2


def test_sales_taking_a_lead_on_ends_the_programs_that_exit_on_accept():
    keeps_mqls = ProgramFactory(exit_on_mql=False)  # exits on acceptance by default
    StepFactory(program=keeps_mqls)
    for_customers_too = ProgramFactory(exit_on_mql=False, exit_on_accept=False)
    StepFactory(program=for_customers_too)
    contact = ContactFactory()
    for program in (keeps_mqls, for_customers_too):
        contacts_enroll(program=program, contact_ids=[contact.pk], source="m")
    lifecycle.stage_change(contact=contact, to_stage=Stage.MQL)
    assert _live(keeps_mqls) == {contact.pk}
    lifecycle.stage_change(contact=contact, to_stage=Stage.SQL)
    assert Enrollment.objects.get(program=keeps_mqls).exit_reason == "accepted_by_sales"
    assert _live(for_customers_too) == {contact.pk}


def test_the_queue_names_the_program_that_sent_the_last_email():
    alpha, beta = ProgramFactory(name="Alpha"), ProgramFactory(name="Beta")
    StepFactory(program=alpha, position=1)
    StepFactory(program=beta, position=1, kind="wait", config={"days": 3})
    contact = ContactFactory(consent_basis="consent")
    contacts_enroll(program=alpha, contact_ids=[contact.pk], source="m")
    enrollments_advance()
    contacts_enroll(
        program=beta, contact_ids=[contact.pk], source="m", now=timezone.now() + timedelta(1)
    )
    assert summaries([contact.pk])[contact.pk][0].startswith("last program: Alpha")
    other = ContactFactory()
    contacts_enroll(program=beta, contact_ids=[other.pk], source="m")
    assert summaries([other.pk])[other.pk][0].startswith("last program: Beta")


def test_the_goal_action_exits_and_suppression_exits():
    campaign = CampaignFactory(goal_action="demo_requested")
    program = ProgramFactory(campaign=campaign)
    StepFactory(program=program)
    goal, unsub = ContactFactory(), ContactFactory()
    contacts_enroll(program=program, contact_ids=[goal.pk, unsub.pk], source="m")
    now = timezone.now()
    activities_record(
        items=[
            {"kind": "demo_requested", "occurred_at": now, "contact": goal.pk},
            {"kind": "email_unsubscribed", "occurred_at": now, "contact": unsub.pk},
        ]
    )
    reasons = dict(Enrollment.objects.values_list("contact_id", "exit_reason"))
    assert reasons == {goal.pk: "goal", unsub.pk: "suppressed"}
    enrollments_advance()
    assert mail.outbox == []


def test_a_program_only_unsubscribe_ends_no_other_enrollment_and_enrolls_nobody():
    """Leaving one program (scope "program": the unsubscribe page exits that program
    itself) is not a suppression: the contact's other programs go on. No unsubscribe,
    of either scope, fires an activity trigger: it never enrolls in more email."""
    program = ProgramFactory()
    StepFactory(program=program)
    welcome = ProgramFactory()
    StepFactory(program=welcome)
    TriggerFactory(program=welcome, kind="activity", activity_kind="email_unsubscribed")
    left = ContactFactory()
    contacts_enroll(program=program, contact_ids=[left.pk], source="m")
    unsubscribe = {"kind": "email_unsubscribed", "occurred_at": timezone.now()}
    activities_record(items=[{**unsubscribe, "contact": left.pk, "details": {"scope": "program"}}])
    assert _live(program) == {left.pk}
    assert _live(welcome) == set()


def test_the_tick_applies_queued_activities_before_it_sends(queued_handlers):
    from nurture.tasks import tick

    campaign = CampaignFactory(goal_action="demo_requested")
    program = ProgramFactory(campaign=campaign)
    StepFactory(program=program)
    goal = ContactFactory()
    contacts_enroll(program=program, contact_ids=[goal.pk], source="m")
    activities_record(
        items=[{"kind": "demo_requested", "occurred_at": timezone.now(), "contact": goal.pk}]
    )
    assert Enrollment.objects.get(contact=goal).exit_reason == ""  # still queued
    tick()
    assert Enrollment.objects.get(contact=goal).exit_reason == "goal"
    assert mail.outbox == []


def test_goal_exits_match_each_program_to_its_own_goal_in_one_update():
    demo = ProgramFactory(campaign=CampaignFactory(goal_action="demo_requested"))
    buy = ProgramFactory(campaign=CampaignFactory(goal_action="purchase"))
    for program in (demo, buy):
        StepFactory(program=program)
    a, b = ContactFactory(), ContactFactory()
    for program in (demo, buy):
        contacts_enroll(program=program, contact_ids=[a.pk, b.pk], source="m")
    now = timezone.now()
    with CaptureQueriesContext(connection) as ctx:
        activities_record(
            items=[
                {"kind": "demo_requested", "occurred_at": now, "contact": a.pk},
                {"kind": "purchase", "occurred_at": now, "contact": b.pk},
                {"kind": "page_visit", "occurred_at": now, "contact": a.pk},
            ]
        )
    assert _live(demo) == {b.pk}
    assert _live(buy) == {a.pk}
    updates = [
        q for q in ctx.captured_queries if q["sql"].startswith('UPDATE "nurture_enrollment"')
    ]
    assert len(updates) == 1


def test_activities_no_program_has_as_goal_cost_no_exit_update():
    program = ProgramFactory(campaign=CampaignFactory(goal_action="demo_requested"))
    StepFactory(program=program)
    c = ContactFactory()
    contacts_enroll(program=program, contact_ids=[c.pk], source="m")
    with CaptureQueriesContext(connection) as ctx:
        activities_record(
            items=[{"kind": "page_visit", "occurred_at": timezone.now(), "contact": c.pk}]
        )
    assert _live(program) == {c.pk}
    assert not [q for q in ctx.captured_queries if 'UPDATE "nurture_enrollment"' in q["sql"]]


def test_reentry_policies():
    program = ProgramFactory(reentry="never")
    c = ContactFactory()
    assert contacts_enroll(program=program, contact_ids=[c.pk], source="m") == 1
    Enrollment.objects.update(state="completed")
    assert contacts_enroll(program=program, contact_ids=[c.pk], source="m") == 0
    program.reentry = "after_days"
    program.reentry_days = 30
    assert contacts_enroll(program=program, contact_ids=[c.pk], source="m") == 0
    Enrollment.objects.update(entered_at=timezone.now() - timedelta(days=31))
    assert contacts_enroll(program=program, contact_ids=[c.pk], source="m") == 1
    program.reentry = "always"
    assert contacts_enroll(program=program, contact_ids=[c.pk], source="m") == 0  # still live


def test_audience_limits_entry():
    segment = Segment.objects.create(name="A", kind="static")
    program = ProgramFactory(audience=segment)
    inside, outside = ContactFactory(), ContactFactory()
    SegmentMembership.objects.create(segment=segment, contact=inside, joined_at=timezone.now())
    contacts_enroll(program=program, contact_ids=[inside.pk, outside.pk], source="m")
    assert _live(program) == {inside.pk}


def test_segment_condition_in_and_not_in_a_program():
    program = ProgramFactory()
    a, b = ContactFactory(), ContactFactory()
    contacts_enroll(program=program, contact_ids=[a.pk], source="m")
    provider = condition_providers()["program"]
    cond_in = {"program": {"id": program.pk, "state": "in"}}
    cond_out = {"program": {"id": program.pk, "state": "not_in"}}
    provider.validate(cond_in)
    assert set(Contact.objects.filter(provider.build(cond_in))) == {a}
    assert b in set(Contact.objects.filter(provider.build(cond_out)))
    for bad in ({"program": 5}, {"program": {"id": "x"}}, {"program": {"id": 1, "state": "maybe"}}):
        with pytest.raises(ValueError):
            provider.validate(bad)


def test_contact_page_providers(django_assert_num_queries):
    program = ProgramFactory(name="Welcome")
    StepFactory(program=program)
    c = ContactFactory()
    contacts_enroll(program=program, contact_ids=[c.pk], source="m")
    enrollments_advance()
    entries = timeline(c, before=None, limit=10)
    assert {e.kind for e in entries} == {"enrollment", "email"}
    with django_assert_num_queries(1):
        assert summaries([c.pk, ContactFactory.build(pk=999999).pk]) == {
            c.pk: ["last program: Welcome (active)"]
        }


@pytest.mark.parametrize("key", ["range", "isnull", "contains", "exact", "has_key"])
def test_a_date_attribute_named_like_a_lookup_is_read_as_that_key(marketing_client, key):
    program = ProgramFactory()
    StepFactory(program=program)
    response = marketing_client.post(  # any slug is a valid attribute name
        f"/nurture/programs/{program.pk}/triggers/",
        {"kind": "date", "date_attribute": key, "offset_days": 0, "yearly": "on"},
    )
    assert response.status_code == 302
    due = ContactFactory(attributes={key: f"1990-{timezone.localdate():%m-%d}"})
    ContactFactory(attributes={key: "1990-13-40", "birthday": f"1990-{timezone.localdate():%m-%d}"})
    assert triggers_run() == 1
    assert _live(program) == {due.pk}


def test_a_failing_entry_rule_is_logged_and_the_other_rules_and_the_sending_go_on(caplog):
    from nurture.tasks import tick

    drip = ProgramFactory(name="Onboarding")
    StepFactory(program=drip, position=1)
    reader = ContactFactory(consent_basis="consent")
    contacts_enroll(program=drip, contact_ids=[reader.pk], source="manual")
    # A rule whose offset reaches past the calendar (stored before the form refused such
    # offsets) fails on every run …
    broken = TriggerFactory(kind="date", date_attribute="renewal_date", offset_days=10**9)
    # … and must not stop the rule after it, nor the drip's due email.
    birthdays = ProgramFactory(name="Birthdays")
    TriggerFactory(program=birthdays, kind="date", date_attribute="birthday", offset_days=0)
    born_today = ContactFactory(attributes={"birthday": f"1990-{timezone.localdate():%m-%d}"})
    tick()
    assert f"entry rule {broken.pk} of program {broken.program_id} failed" in caplog.text
    assert Enrollment.objects.filter(program=birthdays, contact=born_today).exists()
    assert [m.to for m in mail.outbox] == [[reader.email]]
    assert Trigger.objects.get(pk=broken.pk).last_run_on is None  # tried again next tick


def test_the_form_refuses_a_date_offset_beyond_ten_years(marketing_client):
    program = ProgramFactory()
    response = marketing_client.post(
        f"/nurture/programs/{program.pk}/triggers/",
        {"kind": "date", "date_attribute": "renewal_date", "offset_days": 10**9},
        follow=True,
    )
    assert not Trigger.objects.filter(program=program).exists()
    assert "within 3660 days" in response.content.decode()
