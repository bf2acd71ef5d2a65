"""Property: per-step email figures served by ``EmailStepDaily`` equal the raw join."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Activity, Campaign, Contact
from crm.models import ActivityKind as K
from nurture.models import EmailSend, Enrollment, Program
from reports.facts import facts_apply_activities, facts_reconcile
from reports.metrics.email import email_by_step, step_counts, step_counts_raw
from reports.models import EmailStepDaily
from reports.query import ReportQuery
from tests.nurture.factories import ProgramFactory, StepFactory

from .factories import at, email_flags

KINDS = [
    K.EMAIL_SENT,
    K.EMAIL_SENT,
    K.EMAIL_OPENED,
    K.EMAIL_CLICKED,
    K.EMAIL_BOUNCED,
    K.EMAIL_UNSUBSCRIBED,
    K.EMAIL_COMPLAINED,
    K.DEMO_REQUESTED,
]
event = st.tuples(
    st.integers(0, 2),  # contact
    st.integers(0, 2),  # campaign (2 = none)
    st.sampled_from(KINDS),
    st.integers(0, 20 * 24),  # hours after Mar 1
    st.sampled_from(["", "m1", "m2", "m3"]),  # m3 is not a nurture send
    st.booleans(),  # machine open or click, unsubscribe-link click / hard bounce
)


def _world():
    for model in (Activity, EmailStepDaily, EmailSend, Enrollment, Program, Campaign, Contact):
        model.objects.all().delete()
    camps = [Campaign.objects.create(name=f"C{i}", goal_action=K.DEMO_REQUESTED) for i in range(2)]
    contacts = [
        Contact.objects.create(email=f"p{i}@x.example", created_at=at("2025-01-01"), source=s)
        for i, s in enumerate(["web_form", "paid", "web_form"])
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


@pytest.mark.django_db
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(event, min_size=1, max_size=6), min_size=1, max_size=4))
def test_step_facts_equal_raw_for_random_batches(batches):
    camps, contacts = _world()
    start = at("2025-03-01")
    for batch in batches:  # out-of-order batches, like a late webhook
        stored = [
            Activity.objects.create(
                contact=contacts[c],
                campaign=camps[k] if k < 2 else None,
                kind=kind,
                occurred_at=start + timedelta(hours=h),
                message_id=f"{c}-{m}" if m else "",
                **email_flags(kind, flag, h),
                details={"bounce_type": "hard" if flag else "soft"},
            )
            for c, k, kind, h, m, flag in batch
        ]
        facts_apply_activities(activities=stored)
    periods = [(date(2025, 3, 1), date(2025, 3, 22)), (date(2025, 3, 5), date(2025, 3, 12))]
    for first, end in periods:
        for q in (
            ReportQuery(start=first, end=end),
            ReportQuery(start=first, end=end, campaign=camps[0].id),
            ReportQuery(start=first, end=end, source="paid"),
        ):
            raw = {k: v for k, v in step_counts_raw(q).items() if any(v.values())}
            served = {k: v for k, v in step_counts(q).items() if any(v.values())}
            assert served == raw
    # Reconciliation finds nothing to fix after incremental maintenance.
    for day in range(21):
        assert facts_reconcile(day=date(2025, 3, 1) + timedelta(days=day)) == {"email_steps": {}}


@pytest.mark.django_db
def test_step_rows_name_step_and_campaign(django_assert_max_num_queries):
    camps, contacts = _world()
    sent = [
        Activity.objects.create(
            contact=contacts[0],
            campaign=camps[0],
            kind=k,
            occurred_at=at("2025-03-02") + timedelta(hours=h),
            message_id="0-m1",
        )
        for h, k in enumerate([K.EMAIL_SENT, K.EMAIL_OPENED, K.EMAIL_CLICKED, K.EMAIL_OPENED])
    ]
    facts_apply_activities(activities=sent)
    q = ReportQuery(start=date(2025, 3, 1), end=date(2025, 3, 8))
    with django_assert_max_num_queries(3):
        rows = email_by_step(q)
    assert len(rows) == 1
    assert rows[0]["campaign"] == "C0"
    assert (rows[0]["sent"], rows[0]["unique_opens"], rows[0]["unique_clicks"]) == (1, 1, 1)
