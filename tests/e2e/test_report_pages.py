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
