import csv
import io

import pytest
from django.urls import reverse
from openpyxl import load_workbook

from crm import exports, imports, services
from crm.models import Contact

pytestmark = pytest.mark.django_db


def test_dangerous_cells_are_neutralised():
    for value in ("=HYPERLINK(1)", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert exports.neutralise(value) == "'" + value
    assert exports.neutralise("Ann") == "Ann"
    assert exports.neutralise(-1) == -1


def _csv(response):
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def test_csv_export_of_a_filter_neutralises_formulas(sales_client):
    services.contact_create(email="f@example.com", first_name="=cmd|' /C calc'!A0", stage="mql")
    services.contact_create(email="other@example.com")
    rows = _csv(sales_client.get(reverse("crm:contact-list"), {"stage": "mql", "export": "csv"}))
    assert rows[0][:3] == ["id", "email", "first_name"]
    assert len(rows) == 2
    assert rows[1][2] == "'=cmd|' /C calc'!A0"


def test_xlsx_export_has_every_row(sales_client):
    services.contacts_create_bulk(rows=[{"email": f"x{i}@example.com"} for i in range(5)])
    r = sales_client.get(reverse("crm:contact-list"), {"export": "xlsx"})
    sheet = load_workbook(io.BytesIO(r.content)).active
    assert sheet.max_row == 6
    assert sheet.cell(1, 2).value == "email"


def test_export_then_import_round_trips(sales_client, marketing_user):
    services.contact_create(email="r@example.com", first_name="Ro", job_title="CEO", country="FR")
    text = b"".join(
        sales_client.get(reverse("crm:contact-list"), {"export": "csv"}).streaming_content
    ).decode("utf-8-sig")
    Contact.objects.all().delete()
    header, _ = imports.read_rows(text)
    report = imports.run_import(
        text=text,
        kind="contacts",
        mapping=imports.auto_mapping(header, "contacts"),
        by=marketing_user,
    )
    assert (report.created, report.errors) == (1, [])
    contact = Contact.objects.get()
    assert (contact.first_name, contact.job_title, contact.country) == ("Ro", "CEO", "FR")
