import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from crm import imports, services
from crm.models import Activity, Contact, Stage

pytestmark = pytest.mark.django_db

HUBSPOT = (
    "First Name,Last Name,Email Address,Company Name,Job Title,Lifecycle Stage,Lead Status,Plan\n"
    "Ann,Lee,ann@example.com,Acme,CTO,Marketing Qualified Lead,Open,pro\n"
    "Bob,=1+2,bob@example.com,Acme,,Lead,,\n"
    "<script>x</script>,Bad,not-an-email,,,,,\n"
    "Cy,Zed,cy@example.com,,,Teleported,,\n"
)


def _upload(client, text, kind="contacts", encoding="utf-8"):
    data = text.encode(encoding) if isinstance(text, str) else text
    return client.post(
        reverse("crm:import-upload"),
        {"kind": kind, "file": SimpleUploadedFile("x.csv", data, content_type="text/csv")},
    )


def test_it_auto_maps_hubspot_and_salesforce_headers():
    header = [
        "FirstName",
        "Last Name",
        "Email",
        "Account Name",
        "Title",
        "Lead Source",
        "Phone",
        "Country",
        "Lead Status",
        "Lifecycle Stage",
        "Favourite colour",
        "Record ID",
    ]
    assert imports.auto_mapping(header, "contacts") == [
        "first_name",
        "last_name",
        "email",
        "company_name",
        "job_title",
        "source",
        "phone",
        "country",
        "lead_status",
        "stage",
        "attr:favourite_colour",
        "",
    ]


def test_upload_preview_import_reports_rows_with_line_numbers(marketing_client):
    r = _upload(marketing_client, HUBSPOT)
    assert r.status_code == 302
    preview = marketing_client.get(reverse("crm:import-preview"))
    assert preview.status_code == 200
    assert b"&lt;script&gt;x&lt;/script&gt;" in preview.content
    mapping = {f"col{c['index']}": c["target"] for c in preview.context["columns"]}
    result = marketing_client.post(reverse("crm:import-preview"), mapping)
    report = result.context["report"]
    assert (report.rows, report.created) == (4, 2)
    assert [line for line, _ in report.errors] == [4, 5]
    assert "email" in report.errors[0][1]
    assert "stage" in report.errors[1][1]
    ann = Contact.objects.get(email="ann@example.com")
    assert (ann.stage, ann.company.name, ann.attributes) == (
        Stage.MQL,
        "Acme",
        {"lead_status": "Open", "plan": "pro"},
    )
    assert ann.transitions.get().to_stage == Stage.MQL  # initial stage via the lifecycle
    assert Contact.objects.get(email="bob@example.com").last_name == "=1+2"  # stored as text


def test_reimporting_the_same_file_changes_nothing(marketing_user):
    header, _ = imports.read_rows(HUBSPOT)
    mapping = imports.auto_mapping(header, "contacts")
    imports.run_import(text=HUBSPOT, kind="contacts", mapping=mapping, by=marketing_user)
    again = imports.run_import(text=HUBSPOT, kind="contacts", mapping=mapping, by=marketing_user)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert Contact.objects.count() == 2


def test_a_repeated_email_is_merged_and_accounted_for(marketing_client, marketing_user):
    text = (
        "Email,First Name,Job Title\n"
        "jose@example.com,José,CTO\n"
        "ann@example.com,Ann,\n"
        "not-an-email,Bad,\n"
        "JOSE@example.com,,VP Engineering\n"
    )
    header, _ = imports.read_rows(text)
    mapping = imports.auto_mapping(header, "contacts")
    report = imports.run_import(text=text, kind="contacts", mapping=mapping, by=marketing_user)
    counted = report.created + report.updated + report.unchanged + len(report.merged)
    assert counted + report.rejected == report.rows == 4
    assert report.merged == [(5, 2)]
    jose = Contact.objects.get(email="jose@example.com")
    assert (jose.first_name, jose.job_title) == ("José", "VP Engineering")
    _upload(marketing_client, text)
    page = marketing_client.post(reverse("crm:import-preview"), {"col0": "email"}).content
    assert b"merged into an earlier row" in page


def test_a_cp1252_file_is_read_with_a_notice_and_utf16_is_refused(marketing_client):
    r = _upload(marketing_client, "Email,First Name\nz@example.com,Zoë\n", encoding="cp1252")
    assert r.status_code == 302
    preview = marketing_client.get(reverse("crm:import-preview")).content.decode()
    assert preview.count("read as Windows-1252") == 1  # once, not also as a message
    marketing_client.post(reverse("crm:import-preview"), {"col0": "email", "col1": "first_name"})
    assert Contact.objects.get().first_name == "Zoë"
    r = _upload(marketing_client, "Email\na@example.com\n", encoding="utf-16")
    assert r.status_code == 200
    assert "CSV UTF-8" in r.content.decode()


def test_activities_import_goes_through_ingest_with_per_row_errors(marketing_user):
    contact = services.contact_create(email="a@example.com")
    text = (
        "email,kind,occurred_at,external_id\n"
        f"{contact.email},email_opened,2026-01-05T10:00:00Z,x1\n"
        f"{contact.email},teleported,2026-01-05T10:00:00Z,x2\n"
        f"{contact.email},page_visit,2026-01-05T10:00:00,x3\n"
        "new@example.com,form_submitted,2026-01-06T10:00:00+01:00,x4\n"
    )
    header, _ = imports.read_rows(text)
    mapping = imports.auto_mapping(header, "activities")
    report = imports.run_import(text=text, kind="activities", mapping=mapping, by=marketing_user)
    assert (report.created, report.contacts_created) == (2, 1)
    assert [line for line, _ in report.errors] == [3, 4]
    again = imports.run_import(text=text, kind="activities", mapping=mapping, by=marketing_user)
    assert (again.created, again.duplicates) == (0, 2)
    assert Activity.objects.count() == 2


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 302), ("marketing", 200), ("sales", 403), ("admin", 200)],
    indirect=["persona"],
)
def test_imports_are_for_marketing_only(client, persona, status):
    if persona:
        client.force_login(persona)
    assert client.get(reverse("crm:import-upload")).status_code == status


def test_import_keeps_the_mapped_consent_source(marketing_user):
    text = "Email,Consent Basis,Consent Source\na@example.com,consent,Signed form at booth 12\n"
    header, _ = imports.read_rows(text)
    mapping = imports.auto_mapping(header, "contacts")
    assert mapping == ["email", "consent_basis", "consent_source"]
    report = imports.run_import(text=text, kind="contacts", mapping=mapping, by=marketing_user)
    assert (report.created, report.errors) == (1, [])
    assert Contact.objects.get().consent_source == "Signed form at booth 12"


def test_import_row_with_doubled_quotes_after_8kb_is_read_intact(marketing_user):
    rows = "".join(f'u{i}@example.com,U,"note, {i}"\n' for i in range(400))
    text = "Email,First Name,Notes\n" + rows + 'z@example.com,Zed,"He said ""hi"", ok"\n'
    header, _ = imports.read_rows(text)
    mapping = imports.auto_mapping(header, "contacts")
    report = imports.run_import(text=text, kind="contacts", mapping=mapping, by=marketing_user)
    assert report.errors == []
    assert Contact.objects.get(email="z@example.com").attributes == {"notes": 'He said "hi", ok'}


def test_import_row_with_more_cells_than_the_header_is_an_error(marketing_user):
    """Review finding: "Smith, Jr." unquoted shifted the row's values and dropped the last
    one without an error."""
    text = "Email,Last Name,Job Title\na@example.com,Smith, Jr.,CTO\nb@example.com,Bo,CEO\n"
    header, _ = imports.read_rows(text)
    mapping = imports.auto_mapping(header, "contacts")
    report = imports.run_import(text=text, kind="contacts", mapping=mapping, by=marketing_user)
    assert report.errors == [
        (2, "4 cells but the header has 3: a value with a delimiter in it needs quotes.")
    ]
    assert list(Contact.objects.values_list("email", flat=True)) == ["b@example.com"]


def test_an_exported_file_imports_back_unchanged(marketing_user, sales_client):
    """The export neutralises formula-like cells with a leading ' (CSV injection); the
    import takes it off again, so a phone "+49 …" or a name "-Jo" survives the round trip."""
    services.contact_create(email="jo@example.com", first_name="-Jo", phone="+49 30 1234567")
    response = sales_client.get(reverse("crm:contact-list") + "?export=csv")
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    assert "'+49 30 1234567" in text  # inert in a spreadsheet
    header, _ = imports.read_rows(text)
    mapping = imports.auto_mapping(header, "contacts")
    report = imports.run_import(text=text, kind="contacts", mapping=mapping, by=marketing_user)
    assert (report.updated, report.unchanged, report.errors) == (0, 1, [])
    jo = Contact.objects.get()
    assert (jo.first_name, jo.phone) == ("-Jo", "+49 30 1234567")


def test_the_xlsx_export_keeps_formula_like_text_as_text(sales_client):
    import io

    from openpyxl import load_workbook

    services.contact_create(email="jo@example.com", first_name="=1+2", phone="+49 30 1234567")
    response = sales_client.get(reverse("crm:contact-list") + "?export=xlsx")
    sheet = load_workbook(io.BytesIO(response.content)).active
    header = [c.value for c in sheet[1]]
    row = {h: c for h, c in zip(header, sheet[2], strict=True)}
    assert (row["first_name"].value, row["phone"].value) == ("=1+2", "+49 30 1234567")
    assert row["first_name"].data_type == "s"
    assert row["first_name"].quotePrefix


def test_hubspot_and_salesforce_exports_name_countries_and_accounts(marketing_user):
    hubspot = (
        "Record ID,First Name,Email,Country/Region,Contact owner\n"
        "101,Ann,ann@example.com,United States,Sam Seller\n"
        "102,Jörg,joerg@example.com,Deutschland,\n"
        "103,Kofi,kofi@example.com,Côte d’Ivoire,\n"
        "104,Bad,bad@example.com,Narnia,\n"
    )
    header, _ = imports.read_rows(hubspot)
    mapping = imports.auto_mapping(header, "contacts")
    report = imports.run_import(text=hubspot, kind="contacts", mapping=mapping, by=marketing_user)
    assert report.created == 3
    assert [(line, "Narnia" in message) for line, message in report.errors] == [(5, True)]
    assert dict(Contact.objects.values_list("email", "country")) == {
        "ann@example.com": "US",
        "joerg@example.com": "DE",
        "kofi@example.com": "CI",
    }
    salesforce = "First Name,Last Name,Email,Company / Account,Mailing Country,Lead Owner\n"
    mapping = imports.auto_mapping(
        imports.read_rows(salesforce + "x,y,z@e.com,A,UK,\n")[0], "contacts"
    )
    assert mapping == ["first_name", "last_name", "email", "company_name", "country", ""]
