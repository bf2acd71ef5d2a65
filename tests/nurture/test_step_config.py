"""Step settings: one check for the step form and the API, and a tick that a bad row cannot
stop (review finding: the API stored any JSON object, and one unreadable wait or branch made
every tick raise and roll back every program's work)."""

from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from crm.models import Notification, Segment
from nurture.models import EmailSend, Enrollment, Step
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import STEP_ERROR_RETRY, enrollments_advance
from tests.factories import UserFactory
from tests.nurture.factories import ContactFactory, ProgramFactory, StepFactory

pytestmark = pytest.mark.django_db

BAD = [
    ("wait", {"days": "two"}, "days"),
    ("wait", {"hours": 1e12}, "hours"),
    ("wait", {"days": 2.5}, "days"),
    ("wait", {"days": True}, "days"),
    ("wait", {}, "days"),
    ("wait", {"hour": 25}, "hour"),
    ("wait", {"weekday": 1, "hour": 25}, "hour"),
    ("wait", {"weekday": 9}, "weekday"),
    ("wait", {"weekday": 1, "days": 2}, "days"),
    ("wait", {"dyas": 2}, "config"),
    ("branch", {"condition": {"type": "score_above", "value": "high"}}, "value"),
    ("branch", {"condition": {"type": "score_above", "value": 1e300}}, "value"),
    ("branch", {"condition": {"type": "telepathy"}}, "condition"),
    ("branch", {"condition": "clicked"}, "condition"),
    ("branch", {"condition": {"type": "in_segment", "segment": 999999}}, "value"),
    ("branch", {"condition": {"type": "activity_since", "kind": "psychic"}}, "value"),
    ("branch", {"condition": {"type": "clicked"}, "yes_step": "next"}, "yes_step"),
    ("notify_owner", {"message": ["hi"]}, "message"),
    ("move_to_program", {"program": "abc"}, "program"),
    ("move_to_program", {}, "program"),
]


@pytest.mark.parametrize(("kind", "config", "key"), BAD)
def test_the_api_refuses_settings_the_sender_cannot_run(marketing_api, kind, config, key):
    program = ProgramFactory()
    r = marketing_api.post(
        f"/api/v1/programs/{program.pk}/steps/", {"kind": kind, "config": config}, format="json"
    )
    assert r.status_code == 400, r.content
    assert key in r.json()["config"]
    assert not Step.objects.exists()


def test_the_api_stores_good_settings_as_the_form_would(marketing_api):
    program, other = ProgramFactory(), ProgramFactory()
    segment = Segment.objects.create(name="S", kind="static")
    good = [
        ("wait", {"days": 2}),
        ("wait", {"hours": 6, "days": 1}),
        ("wait", {"weekday": 0, "hour": 9}),
        ("branch", {"condition": {"type": "score_above", "value": 40}, "yes_step": None}),
        ("branch", {"condition": {"type": "in_segment", "segment": segment.pk}}),
        ("branch", {"condition": {"type": "activity_since", "kind": "form_submitted"}}),
        ("notify_owner", {"message": "Call them"}),
        ("move_to_program", {"program": other.pk}),
        ("end", {}),
    ]
    for kind, config in good:
        r = marketing_api.post(
            f"/api/v1/programs/{program.pk}/steps/", {"kind": kind, "config": config}, format="json"
        )
        assert r.status_code == 201, (kind, config, r.content)
    stored = list(program.steps.order_by("position").values_list("config", flat=True))
    assert stored[0] == {"days": 2}
    assert stored[3] == {
        "condition": {"type": "score_above", "value": 40},
        "yes_step": None,
        "no_step": None,
    }


def test_the_step_form_uses_the_same_check(marketing_client):
    program = ProgramFactory()
    url = reverse("nurture:step-add", args=[program.pk])
    for data, field in [
        ({"kind": "wait"}, "days"),
        ({"kind": "branch", "condition": "score_above", "value": "high"}, "value"),
        ({"kind": "branch", "condition": "in_segment", "value": "999999"}, "value"),
        ({"kind": "branch", "condition": "activity_since", "value": "psychic"}, "value"),
    ]:
        r = marketing_client.post(url, data)
        assert r.status_code == 400
        assert r.context["step_form"].errors[field], data
    assert marketing_client.post(url, {"kind": "wait", "days": 2}).status_code in (200, 302)
    assert Step.objects.get().config == {"days": 2}


@pytest.mark.parametrize(
    "config",
    [
        {"days": "two"},
        {"hours": 1e12},
        {"weekday": 1, "hour": 25},
    ],
)
def test_a_step_that_fails_holds_its_enrollments_and_the_rest_goes_on(config):
    good = ProgramFactory()
    StepFactory(program=good, position=1)
    bad = ProgramFactory()
    notify = StepFactory(program=bad, position=1, kind=Step.Kind.NOTIFY_OWNER)
    # Stored before the API checked settings: the sender meets it as it is.
    broken = Step.objects.create(program=bad, position=2, kind=Step.Kind.WAIT, config=config)
    StepFactory(program=bad, position=3)
    a, b = ContactFactory(owner=UserFactory(username="owner")), ContactFactory()
    contacts_enroll(program=bad, contact_ids=[a.pk], source="api")
    contacts_enroll(program=good, contact_ids=[b.pk], source="api")
    now = timezone.now()

    result = enrollments_advance(now=now)

    assert result.sent == 1
    assert [m.to for m in mail.outbox] == [[b.email]]
    held = Enrollment.objects.get(contact=a)
    assert (held.state, held.current_step_id, held.exit_reason) == (
        "active",
        broken.pk,
        "step_error",
    )
    assert held.next_run_at == now + STEP_ERROR_RETRY
    assert notify.pk != held.current_step_id
    assert Notification.objects.count() == 1  # the step before it ran, once

    # Fixed, it goes on from that step at its next turn.
    Step.objects.filter(pk=broken.pk).update(config={"hours": 1})
    enrollments_advance(now=now + STEP_ERROR_RETRY)
    held.refresh_from_db()
    assert (held.state, held.exit_reason) == ("waiting", "")
    assert Notification.objects.count() == 1
    assert EmailSend.objects.filter(contact=b).count() == 1


def test_a_bad_branch_value_holds_only_its_enrollment():
    bad = ProgramFactory()
    branch = Step.objects.create(
        program=bad,
        position=1,
        kind=Step.Kind.BRANCH,
        config={"condition": {"type": "score_above", "value": "high"}},
    )
    other = ProgramFactory()
    StepFactory(program=other, position=1)
    contacts_enroll(program=bad, contact_ids=[ContactFactory().pk], source="api")
    contacts_enroll(program=other, contact_ids=[ContactFactory().pk], source="api")
    assert enrollments_advance().sent == 1
    assert Enrollment.objects.get(program=bad).current_step_id == branch.pk
    later = timezone.now() + timedelta(minutes=1)
    assert enrollments_advance(now=later).processed == 1  # only the good one's next pass
