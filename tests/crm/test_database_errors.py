"""What an API client gets when the database refuses a request mid-way
(crm.middleware.DatabaseUnavailableMiddleware): always a 503 with Retry-After — the
transaction was rolled back, so a retry is safe — and a message that says which case it is."""

import json

from django.db import OperationalError
from django.test import RequestFactory

from crm.middleware import DatabaseUnavailableMiddleware


class _DriverError(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _answer(sqlstate):
    exception = OperationalError("boom")
    exception.__cause__ = _DriverError(sqlstate) if sqlstate else None
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    return middleware.process_exception(RequestFactory().post("/api/v1/activities/"), exception)


def test_a_deadlock_or_serialization_failure_is_a_retryable_conflict_not_an_outage():
    for sqlstate in ("40P01", "40001"):
        response = _answer(sqlstate)
        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert "conflicted with a concurrent" in json.loads(response.content)["detail"]


def test_a_lost_connection_is_reported_as_the_database_being_unavailable():
    for sqlstate in (None, "08006"):
        response = _answer(sqlstate)
        assert response.status_code == 503
        assert "temporarily unavailable" in json.loads(response.content)["detail"]


def test_other_errors_are_left_to_django():
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    request = RequestFactory().get("/")
    assert middleware.process_exception(request, ValueError("not ours")) is None
