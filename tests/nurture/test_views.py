import pytest
from django.core import mail
from django.urls import reverse

from nurture.models import Enrollment, Program, Step
from nurture.services.enrollment import contacts_enroll
from nurture.services.sending import enrollments_advance
from tests.nurture.factories import (
    ContactFactory,
    EmailTemplateFactory,
    ProgramFactory,
    StepFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def program():
    p = ProgramFactory(name="Onboarding <script>")
    StepFactory(program=p, position=1)
    StepFactory(program=p, position=2, kind=Step.Kind.WAIT, config={"days": 3})
    return p


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 302), ("marketing", 200), ("sales", 200), ("admin", 200)],
    indirect=["persona"],
)
def test_program_list_is_readable_by_every_role(client, persona, status, program):
    if persona:
        client.force_login(persona)
    assert client.get(reverse("nurture:program-list")).status_code == status


def test_sales_cannot_change_programs(sales_client, program):
    url = reverse("nurture:program-status", args=[program.pk])
    assert sales_client.post(url, {"status": "paused"}).status_code == 403
    assert sales_client.get(reverse("nurture:program-detail", args=[program.pk])).status_code == 200
    assert sales_client.get(reverse("nurture:outbox")).status_code == 403


def test_program_list_query_count_does_not_grow(marketing_client, django_assert_max_num_queries):
    for _ in range(5):
        p = ProgramFactory()
        contacts_enroll(program=p, contact_ids=[ContactFactory().pk], source="m")
    with django_assert_max_num_queries(8):
        response = marketing_client.get(reverse("nurture:program-list"))
    assert response.status_code == 200


def test_program_page_escapes_names_and_shows_the_funnel(marketing_client, program):
    contacts_enroll(program=program, contact_ids=[ContactFactory().pk], source="m")
    enrollments_advance()
    response = marketing_client.get(reverse("nurture:program-detail", args=[program.pk]))
    body = response.content.decode()
    assert "Onboarding &lt;script&gt;" in body
    assert "sent 1" in body


def test_marketing_builds_steps_with_htmx_and_reorders_them(marketing_client, program):
    template = EmailTemplateFactory()
    url = reverse("nurture:step-add", args=[program.pk])
    response = marketing_client.post(
        url, {"kind": "email", "template": template.pk}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert 'id="steps"' in response.content.decode()
    new = program.steps.order_by("-position").first()
    move = reverse("nurture:step-move", args=[program.pk, new.pk])
    marketing_client.post(move, {"direction": "up"}, HTTP_HX_REQUEST="true")
    kinds = list(program.steps.order_by("position").values_list("kind", flat=True))
    assert kinds == ["email", "email", "wait"]
    bad = marketing_client.post(url, {"kind": "wait"}, HTTP_HX_REQUEST="true")
    assert "Give the wait" in bad.content.decode()


def test_marketing_pauses_and_resumes_a_program(marketing_client, program):
    url = reverse("nurture:program-status", args=[program.pk])
    marketing_client.post(url, {"status": "paused"})
    assert Program.objects.get(pk=program.pk).status == "paused"
    marketing_client.post(url, {"status": "active"})
    assert Program.objects.get(pk=program.pk).status == "active"
    assert marketing_client.post(url, {"status": "bogus"}).status_code == 400


def test_marketing_enrolls_by_hand(marketing_client, program):
    c1, c2 = ContactFactory(), ContactFactory()
    url = reverse("nurture:program-enroll", args=[program.pk])
    marketing_client.post(url, {"contact_ids": f"{c1.pk}, {c2.pk}"})
    assert Enrollment.objects.filter(program=program).count() == 2
    response = marketing_client.post(url, {"contact_ids": "abc"}, follow=True)
    assert response.status_code == 200


def test_template_editor_refuses_ssti_and_previews_in_a_sandbox(marketing_client):
    url = reverse("nurture:template-create")
    response = marketing_client.post(
        url, {"name": "x", "subject": "{{ settings.SECRET_KEY }}", "text_body": "{% debug %}"}
    )
    assert response.status_code == 200
    assert "not allowed" in response.content.decode()
    template = EmailTemplateFactory()
    contact = ContactFactory(first_name="<img src=x onerror=alert(1)>")
    preview = marketing_client.get(
        reverse("nurture:template-preview", args=[template.pk]) + f"?contact={contact.pk}"
    )
    assert "sandbox" in preview["Content-Security-Policy"]
    assert "<img src=x" not in preview.content.decode()


def test_test_send_goes_to_the_signed_in_user(marketing_client, marketing_user):
    template = EmailTemplateFactory()
    marketing_client.post(reverse("nurture:template-test", args=[template.pk]))
    assert [m.to for m in mail.outbox] == [[marketing_user.email]]
    assert mail.outbox[0].subject.startswith("[TEST]")


def test_outbox_lists_file_backend_mail_safely(marketing_client, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    program = ProgramFactory()
    StepFactory(
        program=program, template=EmailTemplateFactory(subject="Hi <b>{{ contact.first_name }}</b>")
    )
    contacts_enroll(program=program, contact_ids=[ContactFactory(first_name="Ann").pk], source="m")
    enrollments_advance()
    response = marketing_client.get(reverse("nurture:outbox"))
    body = response.content.decode()
    assert "Hi &lt;b&gt;Ann&lt;/b&gt;" in body
    name = next(tmp_path.iterdir()).name
    frame = marketing_client.get(reverse("nurture:outbox-body", args=[name, 0]))
    assert frame.status_code == 200
    assert "sandbox" in frame["Content-Security-Policy"]
    assert (
        marketing_client.get(
            reverse("nurture:outbox-body", args=["..%2Fsecret.log", 0])
        ).status_code
        == 404
    )


def test_template_list_and_program_page_query_counts(
    marketing_client, django_assert_max_num_queries, program
):
    EmailTemplateFactory.create_batch(5)
    with django_assert_max_num_queries(6):
        assert marketing_client.get(reverse("nurture:template-list")).status_code == 200
    contacts_enroll(
        program=program, contact_ids=[c.pk for c in ContactFactory.create_batch(10)], source="m"
    )
    enrollments_advance()
    with django_assert_max_num_queries(22):
        response = marketing_client.get(reverse("nurture:program-detail", args=[program.pk]))
    assert response.status_code == 200
