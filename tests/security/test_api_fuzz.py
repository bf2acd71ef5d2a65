"""API fuzzing: schemathesis against our own OpenAPI schema on a live (loopback) server.

Each operation of ``/api/schema/`` gets a handful of generated requests (valid and invalid
data) sent over HTTP with the admin's API token; no response may be a server error, and
every response with a documented status must match the schema (content type and body).

Bounded on purpose (``MAX_EXAMPLES`` per operation): this runs in ``make test`` on every
change; a nightly run can raise it. Excluded checks and why:

* ``negative_data_rejection`` / ``positive_data_acceptance``: our filters and report
  parameters answer 200 with an empty page (or ignore an unknown sort key) where the
  generator expects a 4xx, by design (see test_hostile_input); the checks that matter for
  robustness — no 5xx, documented statuses, conforming bodies — stay on.
* ``status_code_conformance``: drf-spectacular documents the success status of each
  operation, not the uniform 400/404 error envelope of ``crm.api.errors`` that every
  endpoint may answer; documenting it on ~60 operations would add noise, not safety.
  Responses with a documented status are still checked against their schema.
* ``ignored_auth``: the token is sent on every call; authentication is covered by the
  access matrix.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

pytestmark = [pytest.mark.slow]
MAX_EXAMPLES = 5
CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def admin_token(transactional_db):
    from rest_framework.authtoken.models import Token

    from tests.factories import CampaignFactory, ContactFactory, UserFactory

    admin = UserFactory(username="fuzz-admin", role="admin")
    # A little data so list endpoints return rows whose shape is checked.
    ContactFactory.create_batch(3, acquired_by=CampaignFactory())
    return Token.objects.create(user=admin).key


# Operations whose response does not match its declared schema yet (owners told; each is
# checked for server errors and content type, not body shape, until fixed):
KNOWN_SCHEMA_GAPS = {
    "POST /api/v1/scoring/backtest/": "declared response lacks the returned shape (no rules)",
}


def _admin():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="fuzz-admin")


def test_the_api_survives_generated_requests(live_server, admin_token, client):
    """Every operation of the schema, ``MAX_EXAMPLES`` generated cases each.

    Operations are iterated here (not with ``schema.parametrize``) because the schema is
    served by the live server only once the test database exists; failures of all
    operations are collected and reported together.
    """
    client.force_login(_admin())
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200, response.content[:500]
    schema = schemathesis.openapi.from_dict(response.json())
    headers = {"Authorization": f"Token {admin_token}"}
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        checks = CHECKS[:2] if operation.label in KNOWN_SCHEMA_GAPS else CHECKS

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case):
            # Called at once, inside this iteration: the loop variables are the current ones.
            case.call_and_validate(base_url=live_server.url, headers=headers, checks=checks)  # noqa: B023

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported per operation
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations > 30
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)
