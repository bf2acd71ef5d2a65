"""Report exports hold every table the page shows (issue 8: "CSV/XLSX export of exactly
what is shown"): XLSX one named sheet per table, CSV the tables one after another."""

import csv
import io
from datetime import date

import pytest
from openpyxl import load_workbook

from crm.models import ActivityKind as K
from nurture.models import EmailSend, Enrollment
from reports.facts import facts_rebuild
from reports.landing_rollup import landing_rollup_rebuild
from reports.lifecycle_facts import new_leads_rebuild
from reports.nurtured_facts import nurtured_rebuild
from reports.rollups import rollups_rebuild
from tests.factories import CampaignFactory, ContactFactory
from tests.nurture.factories import ProgramFactory, StepFactory

from .factories import act, at

pytestmark = pytest.mark.django_db
PERIOD = "start=2025-03-01&end=2025-04-01"
LANDING = "https://x.example/=offer"
SHEETS = {
    "dashboard": ["Dashboard"],
    "funnel": ["Funnel", "Totals", "Nurtured vs non-nurtured", "Program holdouts"],
    "email": ["Email and programs", "Totals", "Per step", "Landing pages"],
    "cost-per-mql": ["Cost per MQL", "Totals", "Cost per MQL by month"],
    "leads": ["Leads", "Totals", "Score profile of new leads"],
    "revenue": ["Revenue", "Totals", "By channel"],
    "customers": ["Customers", "Totals", "Social engagement per campaign"],
}


@pytest.fixture
def world():
    """One contact of a hostile-named campaign: a nurture step's email sent and opened, a
    landing page visited and its form submitted, a social like and a CSAT answer."""
    camp = CampaignFactory(name="=HYPERLINK(evil)", channel="email")
    c = ContactFactory(created_at=at("2025-03-02"))
    step = StepFactory(program=ProgramFactory(campaign=camp, name="Drip"), position=0)
    enrollment = Enrollment.objects.create(
        contact=c, program=step.program, entered_at=at("2025-03-02")
    )
    EmailSend.objects.create(
        enrollment=enrollment,
        step=step,
        contact=c,
        program=step.program,
        message_id="m1",
        status=EmailSend.Status.SENT,
    )
    act(c, K.EMAIL_SENT, "2025-03-03", camp, "m1")
    act(c, K.EMAIL_OPENED, "2025-03-04", camp, "m1")
    act(c, K.PAGE_VISIT, "2025-03-05", url=LANDING)
    act(c, K.FORM_SUBMITTED, "2025-03-05 10:00", url=LANDING)
    act(c, K.SOCIAL_LIKE, "2025-03-06", camp)
    act(c, K.CSAT_ANSWER, "2025-03-07", details={"answer": 5})
    rollups_rebuild(start_day=date(2025, 3, 1), end_day=date(2025, 4, 1))
    facts_rebuild(start_day=date(2025, 3, 1), end_day=date(2025, 4, 1))
    landing_rollup_rebuild()
    new_leads_rebuild()
    nurtured_rebuild()
    return camp


def _sheets(response) -> dict[str, list[tuple]]:
    book = load_workbook(io.BytesIO(response.content))
    return {ws.title: list(ws.iter_rows(values_only=True)) for ws in book.worksheets}


def _csv_blocks(response) -> dict[str, list[list[str]]]:
    """CSV blocks by title: each is a title row, a header row and rows, then an empty row."""
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    blocks: dict[str, list[list[str]]] = {}
    title = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            title = None
        elif title is None:
            title = row[0]
            blocks[title] = []
        else:
            blocks[title].append(row)
    return blocks


@pytest.mark.parametrize("name", SHEETS)
def test_the_xlsx_export_has_a_named_sheet_per_table_of_the_page(name, world, marketing_client):
    url = "/" if name == "dashboard" else f"/reports/{name}/"
    page = marketing_client.get(f"{url}?{PERIOD}").content.decode()
    for title in SHEETS[name][1:]:
        assert title in page  # the page shows that table under that heading
    sheets = _sheets(marketing_client.get(f"{url}?{PERIOD}&format=xlsx"))
    assert list(sheets) == SHEETS[name]


@pytest.mark.parametrize("name", [n for n in SHEETS if n != "dashboard"])
def test_the_api_csv_has_the_same_tables_one_after_another(name, world, marketing_api):
    blocks = _csv_blocks(marketing_api.get(f"/api/v1/reports/{name}/?{PERIOD}&format=csv"))
    sheets = _sheets(marketing_api.get(f"/api/v1/reports/{name}/?{PERIOD}&format=xlsx"))
    assert len(blocks) == len(sheets)
    for (title, rows), (sheet, sheet_rows) in zip(blocks.items(), sheets.items(), strict=True):
        assert title.startswith(sheet)  # the sheet is named after the table (≤ 31 characters)
        assert rows[0] == list(sheet_rows[0])  # each block has its own header row


def test_the_email_export_holds_the_step_and_landing_page_tables(world, marketing_api):
    sheets = _sheets(marketing_api.get(f"/api/v1/reports/email/?{PERIOD}&format=xlsx"))
    header, *rows = sheets["Per step"]
    assert header[:4] == ("Campaign", "Step", "Sent", "Delivered")
    ((campaign, step, sent, delivered, opens, open_rate, *_),) = rows
    assert (campaign, sent, delivered, opens, open_rate) == ("=HYPERLINK(evil)", 1, 1, 1, 1)
    assert step == "0. Send an email"
    assert sheets["Landing pages"] == [
        ("Page", "Unique visitors", "Submitted its form", "Conversion rate"),
        (LANDING, 1, 1, 1),
    ]


def test_formula_like_text_is_a_quote_prefixed_text_cell_in_xlsx_as_in_contact_exports(
    world, marketing_api
):
    r = marketing_api.get(f"/api/v1/reports/email/?{PERIOD}&format=xlsx")
    book = load_workbook(io.BytesIO(r.content))
    cells = [c for ws in book.worksheets for row in ws.iter_rows() for c in row]
    assert not [c for c in cells if c.data_type == "f"]
    risky = [c for c in cells if isinstance(c.value, str) and c.value.startswith("=")]
    assert {c.value for c in risky} == {"=HYPERLINK(evil)"}
    assert all(c.data_type == "s" and c.quotePrefix for c in risky)
    blocks = _csv_blocks(marketing_api.get(f"/api/v1/reports/email/?{PERIOD}&format=csv"))
    assert blocks["Per step"][1][0] == "'=HYPERLINK(evil)"


def test_the_customers_export_holds_the_social_table_and_every_total(world, marketing_client):
    blocks = _csv_blocks(marketing_client.get(f"/reports/customers/?{PERIOD}&format=csv"))
    assert blocks["Social engagement per campaign"] == [
        ["Campaign", "Likes", "Shares", "Comments", "Reposts"],
        ["'=HYPERLINK(evil)", "1", "0", "0", "0"],
    ]
    totals = dict(row[:2] for row in blocks["Totals"][1:])
    assert (totals["csat"], totals["csat_mean"], totals["csat_answers"]) == ("1.0", "5.0", "1")
    assert "acquisition_rate" in totals
    assert "churn_rate" in totals


def test_the_leads_export_has_a_column_per_score_bucket(world, marketing_api):
    sheets = _sheets(marketing_api.get(f"/api/v1/reports/leads/?{PERIOD}&format=xlsx"))
    header, march = sheets["Score profile of new leads"]
    assert header == ("Month", "< 0", "0–19", "20–39", "40–59", "60–79", "80–99", "≥ 100", "Median")
    assert march == ("2025-03", 0, 1, 0, 0, 0, 0, 0, 0)


def test_the_funnel_export_holds_nurtured_vs_non_nurtured_and_holdouts(world, marketing_api):
    sheets = _sheets(marketing_api.get(f"/api/v1/reports/funnel/?{PERIOD}&format=xlsx"))
    header, nurtured, never, difference = sheets["Nurtured vs non-nurtured"]
    assert header[:4] == ("Group", "New leads", "Reached opportunity", "Opportunity rate")
    assert nurtured[:4] == ("Nurtured", 1, 0, 0)
    assert never[:4] == ("Never enrolled", 0, 0, None)
    assert difference[0].startswith("Difference")
    assert sheets["Program holdouts"][0][:2] == ("Program", "Treated")
    main = sheets["Funnel"]
    assert main[0][0] == "Stage"
    assert main[-1][0] == "Total"
