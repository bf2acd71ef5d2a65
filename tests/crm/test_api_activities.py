import json
from datetime import timedelta

import pytest
from django.utils import timezone

from crm import services
from crm.models import Activity
from tests.factories import ActivityFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/activities/"


def _item(who, **extra):
    return {
        "contact": who.pk,
        "kind": "page_visit",
        "occurred_at": timezone.now().isoformat(),
        **extra,
    }


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [("anonymous", 403, 403), ("marketing", 200, 201), ("sales", 200, 403), ("admin", 200, 201)],
    indirect=["persona"],
)
def test_activities_are_read_by_everyone_and_posted_by_marketing(api_client, persona, read, write):
    contact = services.contact_create(email="a@example.com")
    if persona:
        api_client.force_authenticate(persona)
    assert api_client.get(URL).status_code == read
    assert api_client.post(URL, _item(contact), format="json").status_code == write


def test_a_batch_is_stored_and_a_retry_is_a_200_of_duplicates(marketing_api):
    contact = services.contact_create(email="a@example.com")
    batch = [
        _item(contact, external_id="e1"),
        _item(contact, external_id="e2"),
        {
            "email": "new@example.com",
            "kind": "form_submitted",
            "occurred_at": timezone.now().isoformat(),
        },
    ]
    r = marketing_api.post(URL, batch, format="json")
    assert (r.status_code, r.json()) == (
        201,
        {"created": 3, "duplicates": 0, "contacts_created": 1},
    )
    r = marketing_api.post(URL, batch[:2], format="json")
    assert (r.status_code, r.json()["duplicates"]) == (200, 2)


def test_bad_items_reject_the_batch_with_per_index_errors(marketing_api):
    contact = services.contact_create(email="a@example.com")
    batch = [
        _item(contact),
        _item(contact, kind="teleported"),
        _item(contact, occurred_at="2026-01-01T10:00:00"),
        {"email": "not-an-email", "kind": "page_visit", "occurred_at": timezone.now().isoformat()},
        _item(contact, contact="abc"),
    ]
    r = marketing_api.post(URL, batch, format="json")
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert set(errors) == {"1", "2", "3", "4"}
    assert "kind" in errors["1"]
    assert "occurred_at" in errors["2"]
    assert "email" in errors["3"]
    assert "contact" in errors["4"]
    assert not Activity.objects.exists()


def test_malformed_json_too_many_items_and_a_huge_body(marketing_api, settings):
    r = marketing_api.post(URL, data="{not json", content_type="application/json")
    assert r.status_code == 400
    contact = services.contact_create(email="a@example.com")
    r = marketing_api.post(URL, [_item(contact)] * 1001, format="json")
    assert r.status_code == 413
    assert "1000" in r.json()["detail"] or "1,000" in r.json()["detail"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = marketing_api.post(
        URL, data=json.dumps([_item(contact)] * 50), content_type="application/json"
    )
    assert r.status_code == 413
    assert not Activity.objects.exists()
    r = marketing_api.post(URL, data="42", content_type="application/json")
    assert r.status_code == 400


def test_the_list_filters_and_pins_queries(sales_api, django_assert_num_queries):
    contact = services.contact_create(email="a@example.com")
    ActivityFactory.create_batch(5, contact=contact, kind="email_opened")
    ActivityFactory.create_batch(3, contact=contact)
    sales_api.get(URL)  # the user's roles are cached after the first request
    with django_assert_num_queries(1):
        r = sales_api.get(URL, {"contact": contact.pk, "kind": "email_opened"})
    assert len(r.json()["results"]) == 5


# --- Review findings -----------------------------------------------------------------------


def _iso(delta=timedelta(0)):
    return (timezone.now() - delta).isoformat()


def test_api_batch_lists_every_error_not_only_the_format_ones(marketing_api):
    contact = services.contact_create(email="a@example.com")
    batch = [
        {"contact": contact.pk, "kind": "teleported", "occurred_at": _iso()},
        {"contact": 999999, "kind": "page_visit", "occurred_at": _iso()},
        {"email": "ghost@example.com", "kind": "email_opened", "occurred_at": _iso()},
    ]
    r = marketing_api.post("/api/v1/activities/", batch, format="json")
    assert r.status_code == 400
    # one answer lists them all: the reference checks run beside the format errors
    assert set(r.json()["errors"]) == {"0", "1", "2"}, r.json()


def test_a_huge_contact_id_is_a_400_not_a_500(marketing_api):
    r = marketing_api.post(
        "/api/v1/activities/",
        {"contact": 10**30, "kind": "page_visit", "occurred_at": _iso()},
        format="json",
    )
    assert r.status_code == 400, r.status_code
    assert "below 2^63" in str(r.json())
