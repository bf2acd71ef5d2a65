"""Report pages in a real browser: every chart draws, with no script errors."""

import pytest

from tests.e2e.conftest import login
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_dashboards_long_term_trend_is_drawn_after_htmx_loads_it(page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, UserFactory(username="mia-trend", role="marketing"))
    page.wait_for_selector("#long-term-chart")
    drawn = "() => !!(window.Chart && Chart.getChart(document.getElementById('long-term-chart')))"
    page.wait_for_function(drawn)
    assert errors == []


@pytest.mark.parametrize("path", ["/reports/funnel/", "/"])
def test_dates_typed_in_the_filter_are_the_period_shown(page, path):
    login(page, UserFactory(username="mia-dates", role="marketing"))
    page.goto(path)
    page.fill("input[name=start]", "2026-01-01")
    page.fill("input[name=end]", "2026-02-01")
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    assert "period=custom" in page.url
    assert page.locator(".report-period").first.inner_text().startswith("2026-01-01")
    # Picking a preset again clears the dates: the preset is what is shown.
    page.select_option("select[name=period]", "last_30")
    assert page.input_value("input[name=start]") == ""
