"""Time in stage (median and nearest-rank p90) picked by rank in the database equals the
Python percentiles over every duration (`conversions_raw`), for odd and even counts, ties
and the lead step (creation → first MQL entry)."""

from datetime import date, timedelta

import pytest

from reports.lifecycle_facts import new_leads_rebuild
from reports.metrics.funnel import conversions, conversions_raw
from reports.query import ReportQuery
from tests.factories import ContactFactory

from .factories import at, move

pytestmark = pytest.mark.django_db

MARCH = ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1))
HOURS = [5, 30, 30, 2, 71, 12, 250, 9, 9, 9, 44, 1]  # ties, unsorted, up to ~10 days


def test_velocity_ranks_equal_the_python_percentiles_for_every_count():
    start = at("2025-03-02")
    for n, hours in enumerate(HOURS, start=1):
        contact = ContactFactory(created_at=start + timedelta(hours=n))
        mql_at = start + timedelta(days=1, hours=n)
        move(contact, "lead", "mql", mql_at)
        move(contact, "mql", "sql", mql_at + timedelta(hours=hours))
        new_leads_rebuild()
        served, raw = conversions(MARCH), conversions_raw(MARCH)
        assert served == raw, n
        mql_step = next(s for s in served if s["from_stage"] == "mql")
        assert mql_step["converted"] == n
    by_stage = {s["from_stage"]: s for s in served}
    # 12 durations in hours sorted: 1 2 5 9 9 9 12 30 30 44 71 250 → median (9 + 12) / 2,
    # p90 is rank ceil(0.9 × 12) = 11 → 71 hours
    assert by_stage["mql"]["median_days"] == pytest.approx(10.5 / 24, abs=0.01)
    assert by_stage["mql"]["p90_days"] == pytest.approx(71 / 24, abs=0.01)
