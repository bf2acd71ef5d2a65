"""Admin journey: edit a scoring rule's points, back-test the draft, save, and watch the
rescore finish.

The rescore runs synchronously: saving enqueues ``scoring.tasks.rescore`` on the test's
in-memory broker (nothing consumes it), and the test then calls the task's body directly,
as a worker would, while the page keeps polling the run's progress with htmx.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.helpers import shoot_pages
from tests.factories import ContactFactory, UserFactory
from tests.scoring.factories import EngagementRuleFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Pricing-page visits per contact: at 10 points a visit only the last reaches the MQL
# threshold of 100; at 25 points the last three do.
VISITS = {"ann": 1, "ben": 2, "cat": 4, "dan": 5, "eve": 12}


def _seed_visits() -> None:
    from crm.ingest import activities_record
    from crm.models import ActivityKind

    now = timezone.now()
    items = []
    for name, visits in VISITS.items():
        contact = ContactFactory(email=f"{name}@visitors.example", first_name=name.title())
        items += [
            {
                "kind": ActivityKind.PAGE_VISIT,
                "contact": contact.pk,
                "occurred_at": now - timedelta(days=3, hours=i),
                "url": "https://www.example.com/pricing",
            }
            for i in range(visits)
        ]
    activities_record(items=items)


def test_admin_changes_a_rule_backtests_saves_and_watches_the_rescore(page):
    from scoring.models import RescoreRun
    from scoring.tasks import rescore

    admin = UserFactory(username="ada-admin", first_name="Ada", last_name="Admin", role="admin")
    rule = EngagementRuleFactory(name="Pricing page visit", points=10)
    _seed_visits()
    login(page, admin)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Scoring").click()
    rules = page.get_by_role("table")
    row = rules.get_by_role("row").filter(has_text="Pricing page visit")
    expect(row).to_contain_text("+10")
    row.get_by_role("link", name="Edit").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Edit “Pricing page visit”")

    # Back-test the draft: nothing is saved yet.
    page.get_by_label("Points").fill("25")
    page.get_by_label("Back-test days").fill("30")
    page.get_by_role("button", name="Back-test").click()
    result = page.locator("section.backtest-result")
    expect(result.get_by_role("heading")).to_have_text("Back-test: last 30 days")
    mqls = result.get_by_role("row").filter(has_text="Would be MQL").get_by_role("cell")
    expect(mqls.nth(1)).to_have_text("1")  # current rules
    expect(mqls.nth(2)).to_have_text("3")  # with the draft
    expect(page.get_by_label("Points")).to_have_value("25")  # the draft is still in the form
    assert not RescoreRun.objects.exists()

    # Save: the rescore is queued and its progress page polls.
    page.get_by_role("button", name="Save and rescore").click()
    expect(page).to_have_url(re.compile(r"/scoring/rescore/\d+/$"))
    expect(page.get_by_role("status")).to_contain_text("Saved “Pricing page visit”")
    progress = page.locator("#rescore-progress")
    expect(progress).to_contain_text("Queued")
    expect(progress.get_by_role("progressbar")).to_have_attribute("value", "0")

    run = RescoreRun.objects.get()
    rescore(run.pk)  # the worker's job, synchronously

    expect(progress).to_contain_text("Done", timeout=10_000)  # htmx poll, every second
    expect(progress.get_by_role("progressbar")).to_have_attribute("value", "100")
    expect(progress).to_contain_text("5 of 5 contacts")
    expect(progress).to_contain_text("5 changed")
    expect(progress).to_contain_text("finished")

    page.get_by_role("link", name="Back to the rules").click()
    row = page.get_by_role("table").get_by_role("row").filter(has_text="Pricing page visit")
    expect(row).to_contain_text("+25")
    expect(row).to_contain_text("by ada-admin")
    expect(page.get_by_role("main")).to_contain_text("Last rescore: Done")

    shoot_pages(
        page,
        "admin",
        {
            "dashboard": "/",
            "scoring": "/scoring/",
            "rule-edit": f"/scoring/rules/{rule.pk}/",
            "rescore": f"/scoring/rescore/{run.pk}/",
            "scoring-health": "/scoring/health/",
            "mql-queue": "/crm/mqls/?tab=team",
            "contacts": "/crm/contacts/",
            "reports": "/reports/",
        },
    )


def test_a_rescore_that_lifts_leads_over_the_threshold_puts_them_in_the_queue(page):
    from scoring import services
    from scoring.tasks import rescore

    admin = UserFactory(username="ada-admin", role="admin")
    rule = EngagementRuleFactory(name="Pricing page visit", points=10)
    _seed_visits()
    services.rule_save(rule=rule, data={"points": 25}, by=admin)
    login(page, admin)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Scoring").click()
    page.once("dialog", lambda dialog: dialog.accept())  # "Rescore every contact now?"
    page.get_by_role("button", name="Rescore all").click()
    expect(page.locator("#rescore-progress")).to_contain_text("Queued")
    rescore(int(re.search(r"/rescore/(\d+)/", page.url).group(1)))
    expect(page.locator("#rescore-progress")).to_contain_text("Done", timeout=10_000)

    page.goto("/crm/mqls/?tab=team")
    queue = page.locator("table.mql-queue tbody")
    expect(queue.get_by_role("link", name=re.compile("^(Eve|Dan|Cat) "))).to_have_count(3)
