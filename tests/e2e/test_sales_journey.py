"""Sales journey: work the MQL queue — accept one lead with a deal, reject the other as not
ready (No budget) with a note — and see the rejected lead recycled on its contact page and
enrolled in the recycle program for that reason.

No background task is involved: the recycle enrollment happens in nurture's stage-changed
handler inside the reject request.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.crm.sales_factories import make_mql
from tests.e2e.conftest import login
from tests.e2e.helpers import shoot_pages
from tests.factories import UserFactory, rejection_reasons
from tests.nurture.factories import ProgramFactory, StepFactory, TriggerFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sales_accepts_one_mql_and_recycles_the_other(page, settings):
    settings.MQL_RESPONSE_TARGET_HOURS = 24
    rejection_reasons()
    rep = UserFactory(username="sam-e2e", first_name="Sam", last_name="Reyes", role="sales")
    recycle = ProgramFactory(name="Not ready: budget")
    StepFactory(program=recycle, position=1)
    TriggerFactory(program=recycle, kind="recycled", reason_code="no_budget")
    make_mql(owner=rep, email="ada@analytical.example", first_name="Ada", last_name="Lovelace",
             job_title="CTO", score=80, hours_ago=2)  # fmt: skip
    make_mql(owner=rep, email="bob@builders.example", first_name="Bob", last_name="Stone",
             job_title="Site manager", score=60, hours_ago=30)  # fmt: skip
    login(page, rep)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="MQL queue").click()
    expect(page.get_by_role("link", name="My MQLs")).to_have_attribute("aria-current", "page")
    queue = page.locator("table.mql-queue tbody")
    expect(queue.get_by_role("row")).to_have_count(2)
    ada = queue.get_by_role("row").filter(has_text="Ada Lovelace")
    bob = queue.get_by_role("row").filter(has_text="Bob Stone")
    expect(ada.get_by_role("cell").nth(1)).to_have_text("80")
    expect(bob).to_contain_text("overdue")  # 30 h in the queue, past the response target

    # Accept Ada and open a deal.
    ada.get_by_label("Deal amount for Ada Lovelace").fill("12000")
    ada.get_by_role("button", name="Accept").click()
    expect(page.get_by_role("status")).to_contain_text(
        "You accepted Ada Lovelace and opened a deal"
    )
    expect(queue.get_by_role("row")).to_have_count(1)

    # Reject Bob as not ready: no budget, with a note.
    bob.get_by_label("Reason to reject Bob Stone").select_option(label="No budget")
    bob.get_by_label("Note").fill("Budget frozen until Q3")
    bob.get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_contain_text(
        "You rejected Bob Stone (No budget): recycled into nurture."
    )
    expect(queue).to_contain_text("No leads in this view.")

    # Bob's contact page: recycled, the reason and note on the timeline, in the program.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Contacts").click()
    page.get_by_role("link", name="Bob Stone").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bob Stone")
    expect(page.locator(".toolbar .badge")).to_have_text("Recycled")
    timeline = page.locator("ol.timeline")
    recycled = timeline.get_by_role("listitem").filter(has_text="Stage MQL → Recycled")
    expect(recycled).to_contain_text("reason: no_budget")
    expect(recycled).to_contain_text("Budget frozen until Q3")
    expect(timeline.get_by_role("link", name="Entered Not ready: budget")).to_be_visible()

    # Ada's deal is on the deals page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Deals").click()
    expect(page.get_by_role("main")).to_contain_text(re.compile(r"12[,.\s]?000"))

    shoot_pages(
        page,
        "sales",
        {
            "dashboard": "/",
            "mql-queue": "/crm/mqls/",
            "mql-reengaged": "/crm/mqls/?tab=reengaged",
            "contacts": "/crm/contacts/",
            "deals": "/crm/deals/",
            "reports": "/reports/",
        },
    )
