import pytest

from crm.models import Segment, SegmentMembership
from nurture.models import Enrollment, Program
from tests.factories import CampaignFactory
from tests.nurture.factories import ContactFactory, EmailTemplateFactory, ProgramFactory

pytestmark = pytest.mark.django_db


def test_marketing_creates_a_program_with_steps_and_enrolls(marketing_api):
    campaign = CampaignFactory()
    r = marketing_api.post(
        "/api/v1/programs/", {"name": "Drip", "campaign": campaign.pk, "status": "active"}
    )
    assert r.status_code == 201, r.content
    pid = r.json()["id"]
    template = EmailTemplateFactory()
    r = marketing_api.post(
        f"/api/v1/programs/{pid}/steps/", {"kind": "email", "template": template.pk}
    )
    assert r.status_code == 201, r.content
    r = marketing_api.post(f"/api/v1/programs/{pid}/steps/", {"kind": "email"})
    assert r.status_code == 400
    contacts = ContactFactory.create_batch(2)
    r = marketing_api.post(
        f"/api/v1/programs/{pid}/enrollments/", {"contacts": [c.pk for c in contacts]}
    )
    assert r.json() == {"entered": 2}
    detail = marketing_api.get(f"/api/v1/programs/{pid}/").json()
    assert [s["kind"] for s in detail["steps"]] == ["email"]
    listing = marketing_api.get(f"/api/v1/programs/{pid}/enrollments/").json()
    assert len(listing["results"]) == 2


def test_enroll_by_segment(marketing_api):
    program = ProgramFactory()
    segment = Segment.objects.create(name="S", kind="static")
    c = ContactFactory()
    SegmentMembership.objects.create(segment=segment, contact=c, joined_at=c.created_at)
    r = marketing_api.post(f"/api/v1/programs/{program.pk}/enrollments/", {"segment": segment.pk})
    assert r.status_code == 201
    assert Enrollment.objects.get().contact == c
    assert marketing_api.post(f"/api/v1/programs/{program.pk}/enrollments/", {}).status_code == 400


def test_sales_reads_but_cannot_write(sales_api):
    program = ProgramFactory()
    assert sales_api.get("/api/v1/programs/").status_code == 200
    r = sales_api.patch(f"/api/v1/programs/{program.pk}/", {"status": "paused"})
    assert r.status_code == 403
    assert Program.objects.get().status == "active"


def test_api_refuses_hostile_templates(marketing_api):
    r = marketing_api.post(
        "/api/v1/email-templates/",
        {"name": "x", "subject": "hi", "text_body": "{% load static %}"},
    )
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"send_hour_start": 9, "send_hour_end": 9}, "send_hour_end"),
        ({"send_hour_start": 17, "send_hour_end": 9}, "send_hour_end"),
        ({"send_hour_end": 30}, "send_hour_end"),
        ({"holdout_percent": 60}, "holdout_percent"),
    ],
)
def test_the_api_refuses_what_the_program_form_refuses(marketing_api, fields, field):
    """Review finding: an empty send window (start = end) was accepted by the API and then
    held every email of the program for ever."""
    campaign = CampaignFactory()
    r = marketing_api.post(
        "/api/v1/programs/", {"name": "x", "campaign": campaign.pk, **fields}, format="json"
    )
    assert r.status_code == 400
    assert field in r.json()
    program = ProgramFactory(send_hour_start=9, send_hour_end=17)
    r = marketing_api.patch(f"/api/v1/programs/{program.pk}/", fields, format="json")
    assert r.status_code == 400
    assert field in r.json()


def test_a_patch_is_checked_against_the_programs_other_hours(marketing_api):
    program = ProgramFactory(send_hour_start=9, send_hour_end=17)
    r = marketing_api.patch(f"/api/v1/programs/{program.pk}/", {"send_hour_end": 9}, format="json")
    assert r.status_code == 400
    r = marketing_api.patch(f"/api/v1/programs/{program.pk}/", {"send_hour_end": 12}, format="json")
    assert r.status_code == 200


def test_the_program_form_still_refuses_an_empty_window():
    from nurture.forms import ProgramForm

    form = ProgramForm(
        {
            "name": "x",
            "campaign": CampaignFactory().pk,
            "reentry": "never",
            "reentry_days": 0,
            "send_hour_start": 9,
            "send_hour_end": 9,
            "holdout_percent": 0,
        }
    )
    assert not form.is_valid()
    assert "send_hour_end" in form.errors
