"""Property: after random batches through the reports handlers (out-of-order events,
duplicates, conversions, stage changes), the incrementally kept ``EmailDaily``,
``EmailStepDaily`` and ``StageDaily`` rows equal a rebuild from raw data."""

from datetime import date, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.events import ActivitiesRecorded, StageChanged
from crm.lifecycle import stage_change
from crm.models import Activity, Campaign, Contact, LifecycleTransition
from crm.models import ActivityKind as K
from nurture.models import EmailSend, Enrollment, Program
from reports.facts import facts_rebuild
from reports.handlers import on_activities_recorded, on_stage_changed
from reports.models import EmailDaily, EmailStepDaily, StageDaily
from reports.rollups import EMAIL_COUNT_FIELDS, STEP_FIELDS, rollups_rebuild
from reports.upkeep import upkeep_apply_activities, upkeep_apply_transitions
from tests.nurture.factories import ProgramFactory, StepFactory

from .factories import at, email_flags

START = at("2025-03-01")
FIRST_DAY, END_DAY = date(2025, 2, 20), date(2025, 3, 25)
KINDS = [
    K.EMAIL_SENT,
    K.EMAIL_OPENED,
    K.EMAIL_CLICKED,
    K.EMAIL_CLICKED,
    K.EMAIL_BOUNCED,
    K.EMAIL_UNSUBSCRIBED,
    K.EMAIL_COMPLAINED,
    K.DEMO_REQUESTED,  # campaign 0's goal action
    K.PAGE_VISIT,  # campaign 1's goal action
    K.SOCIAL_LIKE,
]
STAGES = ["lead", "mql", "sql", "recycled", "opportunity"]
event = st.tuples(
    st.integers(0, 2),  # contact (few emails, so batches often meet the same email)
    st.integers(0, 2),  # campaign (2 = none)
    st.sampled_from(KINDS),
    st.integers(-3 * 24, 20 * 24),  # hours after Mar 1 (before it: a late, old event)
    st.sampled_from(["", "m1", "m3"]),  # m3 is not a nurture send
    st.booleans(),  # machine open or click, unsubscribe-link click / hard bounce
    st.booleans(),  # stored twice in the batch (a duplicate delivery)
)
transition = st.tuples(
    st.integers(0, 3),  # contact
    st.sampled_from(STAGES),
    st.sampled_from(STAGES),
    st.integers(-3 * 24, 20 * 24),
)
batch = st.tuples(st.lists(event, max_size=7), st.lists(transition, max_size=3))


def _world():
    for model in (
        Activity,
        LifecycleTransition,
        EmailDaily,
        EmailStepDaily,
        StageDaily,
        EmailSend,
        Enrollment,
        Program,
        Campaign,
        Contact,
    ):
        model.objects.all().delete()
    camps = [
        Campaign.objects.create(name="C0", channel="email", goal_action=K.DEMO_REQUESTED),
        Campaign.objects.create(name="C1", channel="social", goal_action=K.PAGE_VISIT),
    ]
    contacts = [
        Contact.objects.create(
            email=f"p{i}@x.example",
            created_at=at("2025-01-01"),
            source=source,
            acquired_by=camps[i % 2] if i < 2 else None,
        )
        for i, source in enumerate(["web_form", "paid", "web_form", "event"])
    ]
    program = ProgramFactory(campaign=camps[0])
    steps = [StepFactory(program=program, position=i) for i in range(2)]
    for i, contact in enumerate(contacts):
        enrollment = Enrollment.objects.create(
            contact=contact, program=program, entered_at=at("2025-02-01")
        )
        for j, m in enumerate(["m1", "m2"]):
            EmailSend.objects.create(
                enrollment=enrollment,
                step=steps[(i + j) % 2],
                contact=contact,
                program=program,
                message_id=f"{i}-{m}",
                status=EmailSend.Status.SENT,
            )
    return camps, contacts


def _store(items, camps, contacts) -> list[Activity]:
    rows = []
    for c, k, kind, h, m, flag, twice in items:
        for _ in range(2 if twice else 1):
            rows.append(
                Activity(
                    contact=contacts[c],
                    campaign=camps[k] if k < 2 else None,
                    kind=kind,
                    occurred_at=START + timedelta(hours=h),
                    message_id=f"{c}-{m}" if m else "",
                    **email_flags(kind, flag, h),
                    details={"bounce_type": "hard" if flag else "soft"},
                )
            )
    return Activity.objects.bulk_create(rows)


def _state() -> dict:
    def rows(model, key, fields):
        return {
            tuple(r[k] for k in key): tuple(r[f] for f in fields)
            for r in model.objects.values(*key, *fields)
        }

    email_key = ["day", "campaign_id", "source", "step_id"]
    return {
        "email": rows(EmailDaily, [*email_key, "channel"], EMAIL_COUNT_FIELDS),
        "steps": rows(EmailStepDaily, [*email_key, "channel"], STEP_FIELDS),
        "stage": rows(
            StageDaily, ["day", "from_stage", "to_stage", "source", "campaign_id"], ["entries"]
        ),
    }


def _rebuilt() -> dict:
    rollups_rebuild(start_day=FIRST_DAY, end_day=END_DAY)
    facts_rebuild(start_day=FIRST_DAY, end_day=END_DAY)
    return _state()


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(batch, min_size=2, max_size=5))
def test_incremental_rows_equal_a_rebuild_for_random_batches(batches):
    camps, contacts = _world()
    for items, moves in batches:  # out-of-order batches, like a late webhook
        stored = _store(items, camps, contacts)
        if stored:
            on_activities_recorded(ActivitiesRecorded(stored))
        transitions = LifecycleTransition.objects.bulk_create(
            LifecycleTransition(
                contact=contacts[c],
                from_stage=src,
                to_stage=dst,
                at=START + timedelta(hours=h),
            )
            for c, src, dst, h in moves
            if src != dst
        )
        if transitions:
            on_stage_changed(StageChanged(transitions))
    assert _state() == _rebuilt()


@pytest.mark.django_db
def test_a_late_click_moves_the_first_click_and_its_conversion_in_both_tables():
    camps, contacts = _world()
    ada = contacts[0]
    on_activities_recorded(
        ActivitiesRecorded(
            _store(
                [(0, 0, K.EMAIL_CLICKED, 5 * 24, "m1", False, False)],
                camps,
                contacts,
            )
        )
    )
    # a demo request two days after an earlier click that arrives late: that click is the
    # email's first click now, and it converts (the later one did not)
    on_activities_recorded(
        ActivitiesRecorded(
            _store(
                [
                    (0, 2, K.DEMO_REQUESTED, 3 * 24, "", False, False),
                    (0, 0, K.EMAIL_CLICKED, 1 * 24, "m1", False, True),
                ],
                camps,
                contacts,
            )
        )
    )
    state = _state()
    for table in ("email", "steps"):
        days = {k[0]: v for k, v in state[table].items() if k[1] == camps[0].pk}
        assert list(days) == [date(2025, 3, 2)], table  # the Mar 6 row was emptied
        fields = EMAIL_COUNT_FIELDS if table == "email" else STEP_FIELDS
        counts = dict(zip(fields, days[date(2025, 3, 2)], strict=True))
        assert (counts["unique_clicks"], counts["conversions"]) == (1, 1)
    assert ada.source == "web_form"
    assert state == _rebuilt()


@pytest.mark.django_db
def test_a_stage_change_through_the_lifecycle_adds_its_entry(django_assert_num_queries):
    camps, contacts = _world()
    stage_change(contact=contacts[0], to_stage="mql", at=at("2025-03-03 10:00"))
    stage_change(contact=contacts[0], to_stage="sql", at=at("2025-03-03 12:00"))
    stage_change(contact=contacts[1], to_stage="mql", at=at("2025-03-03 12:00"))
    state = _state()
    assert state["stage"] == {
        (date(2025, 3, 3), "lead", "mql", "web_form", camps[0].pk): (1,),
        (date(2025, 3, 3), "mql", "sql", "web_form", camps[0].pk): (1,),
        (date(2025, 3, 3), "lead", "mql", "paid", camps[1].pk): (1,),
    }
    assert state == _rebuilt()
    transitions = list(LifecycleTransition.objects.all())
    StageDaily.objects.all().delete()
    # PostgreSQL: one upsert joining the contacts; elsewhere contacts, then the upsert
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        upkeep_apply_transitions(transitions=transitions)
    assert _state() == state


@pytest.mark.django_db
def test_a_batch_costs_only_the_queries_its_kinds_need(django_assert_num_queries):
    world = camps, contacts = _world()
    Campaign.objects.filter(pk=camps[1].pk).update(goal_action="")
    web = _store([(c, 2, K.FORM_SUBMITTED, c, "", False, False) for c in range(4)], camps, contacts)
    with django_assert_num_queries(1):  # the campaigns' goal actions: nothing to count
        upkeep_apply_activities(activities=web)
    emails = _store(
        [
            (c, 0, kind, 30 + c, m, False, False)
            for c in range(4)
            for m in ("m1", "m3")
            for kind in (K.EMAIL_SENT, K.EMAIL_OPENED, K.EMAIL_CLICKED)
        ],
        camps,
        contacts,
    )
    # campaigns, earlier first events, the clicks (each with whether a goal action follows
    # it), then on PostgreSQL one upsert of both tables (joining sources and steps),
    # elsewhere sources, steps and two upserts
    with django_assert_num_queries(4 if connection.vendor == "postgresql" else 7):
        upkeep_apply_activities(activities=emails)
    assert _state() == _rebuilt()
    assert not EmailDaily.objects.filter(conversions__gt=0).exists()
    late = _store([(c, 0, K.DEMO_REQUESTED, 40, "", False, False) for c in range(2)], *world)
    # campaigns, which goal contacts clicked (index only), the emails they clicked in the
    # goal actions' windows, those emails' clicks (each with whether a goal action follows
    # it, with and without the batch), the upsert(s) as above
    with django_assert_num_queries(5 if connection.vendor == "postgresql" else 8):
        upkeep_apply_activities(activities=late)
    assert sum(EmailDaily.objects.values_list("conversions", flat=True)) == 4  # 2 × m1, m3
    assert _state() == _rebuilt()


@pytest.mark.django_db
def test_message_ids_with_quotes_backslashes_and_commas_reach_their_step():
    camps, contacts = _world()
    odd = 'a"b\\c,{d} e@x'
    send = EmailSend.objects.get(message_id="0-m1")
    send.message_id = odd
    send.save(update_fields=["message_id"])
    batch = [
        Activity(
            contact=contacts[0], campaign=camps[0], kind=kind, occurred_at=at(when), message_id=odd
        )
        for kind, when in [(K.EMAIL_SENT, "2025-03-02"), (K.EMAIL_CLICKED, "2025-03-03")]
    ]
    on_activities_recorded(ActivitiesRecorded(Activity.objects.bulk_create(batch)))
    steps = _state()["steps"]
    assert [(k[3], v[0], v[5]) for k, v in sorted(steps.items())] == [
        (send.step_id, 1, 0),
        (send.step_id, 0, 1),
    ]
    assert _state() == _rebuilt()


@pytest.mark.django_db
def test_a_batch_touching_many_rows_is_written_in_chunks():
    camps, contacts = _world()
    # 3 contacts × 2 emails × 30 days: more rows than one SQLite statement may carry
    items = [
        (c, 0, kind, d * 24 - 48, m, d % 2 == 0, False)
        for c in range(3)
        for m in ("m1", "m3")
        for d in range(30)
        for kind in (K.EMAIL_SENT, K.EMAIL_OPENED)
    ]
    on_activities_recorded(ActivitiesRecorded(_store(items, camps, contacts)))
    state = _state()
    assert len(state["email"]) >= 60  # SQLite: 55 rows of 18 values per statement
    assert sum(v[0] for v in state["email"].values()) == len(items) // 2  # sends
    assert state == _rebuilt()
