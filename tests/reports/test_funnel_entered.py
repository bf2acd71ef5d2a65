"""The funnel report takes each conversion step's cohort (contacts that entered the stage
in the period) from flow mode's unique contacts instead of counting them again: the two
are the same first-in-period count, so the step figures equal conversions' own count."""

from datetime import date

import pytest

from reports.lifecycle_facts import new_leads_rebuild
from reports.metrics.funnel import conversions, funnel_report
from reports.query import ReportQuery
from tests.factories import ContactFactory

from .factories import at, move

pytestmark = pytest.mark.django_db

PERIODS = [
    ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1)),
    ReportQuery(start=date(2025, 3, 10), end=date(2025, 3, 20)),
    ReportQuery(start=date(2025, 1, 1), end=date(2026, 1, 1)),
    ReportQuery(start=date(2025, 3, 1), end=date(2025, 4, 1), source="paid"),
]


def test_funnel_steps_equal_conversions_counted_on_their_own():
    a, b = (ContactFactory(created_at=at("2025-02-01"), source="paid") for _ in range(2))
    c = ContactFactory(created_at=at("2025-03-02"), source="web_form")
    move(a, "lead", "mql", "2025-03-05")
    move(a, "mql", "recycled", "2025-03-12")
    move(a, "recycled", "mql", "2025-03-15")  # re-entry: one contact
    move(a, "mql", "sql", "2025-03-25")
    move(b, "lead", "mql", "2025-02-20")  # before the period
    move(b, "mql", "sql", "2025-03-11")
    move(b, "sql", "opportunity", "2025-04-03")  # after the end
    move(c, "lead", "mql", "2025-03-31 23:59")
    new_leads_rebuild()
    for q in PERIODS:
        steps = {s["stage"]: s for s in funnel_report(q)["stages"]}
        for step in conversions(q):
            got = steps[step["from_stage"]]
            assert (got["entered"], got["converted"], got["median_days"], got["p90_days"]) == (
                step["entered"],
                step["converted"],
                step["median_days"],
                step["p90_days"],
            ), (q, step["from_stage"])
    march = {s["stage"]: s for s in funnel_report(PERIODS[0])["stages"]}
    assert (march["mql"]["entered"], march["mql"]["converted"]) == (2, 1)
    assert (march["sql"]["entered"], march["sql"]["converted"]) == (2, 0)
