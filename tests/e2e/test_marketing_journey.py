"""Marketing journey: import a CSV, build a segment, build and start a branching program,
see its emails in the Outbox, read the reports and export one.

Background work runs synchronously in the test: the nurture tick is the Celery task's body
(``nurture.tasks.tick``) called directly between browser steps; the later ticks are its
``enrollments_advance(now=…)`` a minute and a day later (the wait step's day passing). Email goes to
the file backend in a temporary folder, which is what the Outbox page reads.
"""

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.helpers import path_of, shoot_pages
from tests.factories import CampaignFactory, UserFactory
from tests.nurture.factories import EmailTemplateFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CSV_TEXT = (
    "First Name,Last Name,Email Address,Job Title,Company,Favourite colour\n"
    "Ada,Lovelace,ada@analytical.example,CTO,Analytical Engines,green\n"
    "Grace,Hopper,grace@cobol.example,CTO,Cobol Works,blue\n"
    "Linus,Pauling,linus@vitamins.example,Chemist,Vitamins Ltd,orange\n"
    "Bad,Row,not-an-email,CTO,Nowhere,red\n"
)
# A real mail client, not a scanner: the click tracker ignores known bots and HeadlessChrome.
MAIL_CLIENT_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"


@pytest.fixture
def mail_dir(settings, tmp_path, live_server):
    folder = tmp_path / "mail"
    folder.mkdir()
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(folder)
    settings.SITE_URL = live_server.url
    return folder


def test_marketing_imports_segments_nurtures_and_reports(page, mail_dir, tmp_path):
    from nurture.services.sending import enrollments_advance
    from nurture.tasks import tick

    user = UserFactory(username="mia-e2e", first_name="Mia", last_name="Berg", role="marketing")
    campaign = CampaignFactory(name="Q3 Webinar")
    EmailTemplateFactory(name="Welcome", subject="Welcome aboard {{ contact.first_name }}")
    EmailTemplateFactory(name="Case study", subject="How Acme did it")
    EmailTemplateFactory(name="Second chance", subject="Did you miss this?")
    login(page, user)

    # --- Import a CSV of contacts: upload, check the mapping, import, read the results.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Contacts").click()
    page.get_by_role("link", name="Import CSV").click()
    upload = tmp_path / "leads.csv"
    upload.write_text(CSV_TEXT)
    page.get_by_label("Kind").select_option("contacts")
    page.get_by_label("File").set_input_files(str(upload))
    page.get_by_role("button", name="Upload and preview").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("leads.csv")
    expect(page.get_by_role("heading", level=1)).to_contain_text("4 rows of contacts")
    expect(page.get_by_label("Mapping of Email Address")).to_have_value("email")
    expect(page.get_by_label("Mapping of First Name")).to_have_value("first_name")
    expect(page.get_by_label("Mapping of Company")).to_have_value("company_name")
    expect(page.get_by_label("Mapping of Favourite colour")).to_have_value(re.compile("^attr:"))
    page.get_by_role("button", name="Import 4 rows").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Import of leads.csv finished")
    kpis = page.locator(".kpi")
    expect(kpis.filter(has_text="created").locator(".value")).to_have_text("3")
    expect(kpis.filter(has_text="rows with errors").locator(".value")).to_have_text("1")
    errors = page.locator("table.import-errors")
    bad_row = errors.get_by_role("row").filter(has_text="not-an-email")
    expect(bad_row.get_by_role("cell").first).to_have_text("5")  # the CSV line, header = 1

    # --- Build a segment with htmx: add a profile condition, watch the live count, save.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    page.get_by_role("link", name="New segment").click()
    page.get_by_label("Name").fill("CTOs from the import")
    preview = page.locator("#segment-preview")
    expect(preview.locator(".value")).to_have_text("3")  # no conditions: everyone
    page.get_by_role("button", name="+ Profile").click()
    page.get_by_label("Field").fill("job_title")
    page.get_by_label("Operator").select_option("equals")
    page.get_by_label("Value").fill("CTO")
    page.get_by_label("Value").press("Tab")
    expect(preview.locator(".value")).to_have_text("2")
    expect(preview).to_contain_text("Ada Lovelace")
    expect(preview).to_contain_text("Grace Hopper")
    expect(preview).not_to_contain_text("Linus")
    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("CTOs from the import")
    expect(page.get_by_role("status")).to_contain_text("(version 1)")

    # --- Build a program: email, wait a day, branch on "clicked", two emails.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Programs").click()
    page.get_by_role("link", name="New program").click()
    page.get_by_label("Name").fill("CTO welcome")
    page.get_by_label("Campaign").select_option(label=campaign.name)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("CTO welcome")

    def add_step(kind: str, **fields) -> None:
        form = page.locator("form").filter(has=page.get_by_role("button", name="Add step"))
        before = page.locator("li.nurture-step").count()
        form.get_by_label("Kind").select_option(label=kind)
        if "template" in fields:
            form.get_by_label("Template").select_option(label=fields["template"])
        if "days" in fields:
            form.get_by_label("Days").fill(str(fields["days"]))
        if "condition" in fields:
            form.get_by_label("Condition").select_option(label=fields["condition"])
        form.get_by_role("button", name="Add step").click()
        expect(page.locator("li.nurture-step")).to_have_count(before + 1)

    add_step("Send an email", template="Welcome")
    add_step("Wait", days=1)
    add_step("Branch on a condition", condition="Clicked the previous email")
    add_step("Send an email", template="Case study")
    add_step("End")
    add_step("Send an email", template="Second chance")
    steps = page.locator("li.nurture-step")
    expect(steps.nth(0)).to_contain_text("1. Send an email — Welcome")
    expect(steps.nth(5)).to_contain_text("6. Send an email — Second chance")

    def step_id(index: int) -> str:
        return re.search(r"\(id (\d+)\)", steps.nth(index).inner_text()).group(1)

    yes_id, no_id = step_id(3), step_id(5)
    steps.nth(2).get_by_role("link", name="edit").click()
    page.get_by_label("Yes step").fill(yes_id)
    page.get_by_label("No step").fill(no_id)
    page.get_by_role("button", name="Save").click()
    expect(steps.nth(2)).to_contain_text("yes → step 4")
    expect(steps.nth(2)).to_contain_text("no → step 6")

    # Start it: activate, then enroll the segment.
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Active")
    enroll = page.locator("form").filter(has=page.get_by_role("button", name="Enroll"))
    enroll.get_by_label("Segment").select_option(label="CTOs from the import")
    enroll.get_by_role("button", name="Enroll").click()
    expect(page.get_by_role("status")).to_contain_text("2 contact(s) enrolled.")

    # --- The tick (synchronously) sends step 1; the Outbox shows the two emails.
    tick()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Outbox").click()
    outbox = page.get_by_role("table").first
    expect(outbox.get_by_role("row").filter(has_text="Welcome aboard")).to_have_count(2)
    expect(outbox).to_contain_text("ada@analytical.example")
    expect(outbox).to_contain_text("grace@cobol.example")

    # Ada reads her email in a mail client and clicks the link (tracked).
    ada_row = outbox.get_by_role("row").filter(has_text="ada@analytical.example")
    page.goto(
        ada_row.get_by_role("link", name="View the email to ada@analytical.example").get_attribute(
            "href"
        )
    )
    tracked = page.locator("a[href*='/t/c/']").first.get_attribute("href")
    reader = page.context.browser.new_context(
        base_url=page.url.split("/nurture/")[0], user_agent=MAIL_CLIENT_UA
    )
    click = reader.request.get(path_of(tracked), max_redirects=0)
    assert click.status == 302, click.status
    reader.close()

    # The beat's next tick starts the wait; a day later the branch sends the case study to
    # Ada (she clicked) and the second chance to Grace.
    start = timezone.now()
    assert enrollments_advance(now=start + timedelta(minutes=1)).sent == 0
    assert enrollments_advance(now=start + timedelta(days=1, minutes=5)).sent == 2
    page.goto("/nurture/outbox/")
    outbox = page.get_by_role("table").first
    expect(outbox.get_by_role("row").filter(has_text="How Acme did it")).to_contain_text(
        "ada@analytical.example"
    )
    expect(outbox.get_by_role("row").filter(has_text="Did you miss this?")).to_contain_text(
        "grace@cobol.example"
    )

    # --- Reports: the dashboard, the email report for another period, and a CSV export.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    page.get_by_role("main").get_by_role("link", name=re.compile("^Email")).first.click()
    expect(page).to_have_url(re.compile(r"/reports/email/"))
    period = page.locator(".report-period")
    expect(period).to_be_visible()
    page.get_by_label("Period", exact=True).select_option("this_year")
    page.get_by_role("button", name="Show").click()
    year_start = timezone.localdate().replace(month=1, day=1).isoformat()
    expect(page).to_have_url(re.compile(r"period=this_year"))
    expect(period).to_contain_text(year_start)
    with page.expect_download() as download_info:
        period.get_by_role("link", name="CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    # Every table of the page, each as a title row, its header row and its rows.
    assert rows[0] == ["Email and programs"]
    headers = [h.lower() for h in rows[1]]
    assert any("sent" in h for h in headers), rows[1]

    shoot_pages(
        page,
        "marketing",
        {
            "dashboard": "/",
            "contacts": "/crm/contacts/",
            "segments": "/crm/segments/",
            "segment-new": "/crm/segments/new/",
            "programs": "/nurture/programs/",
            "outbox": "/nurture/outbox/",
            "mql-queue": "/crm/mqls/",
            "reports": "/reports/",
            "report-email": "/reports/email/",
            "scoring": "/scoring/",
        },
    )
