"""Shared fixtures: personas (one per role, plus an outsider without a role) and clients."""

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytest_plugins = ["tests.services"]  # real services (PostgreSQL, Redis, Chromium), test broker


@pytest.fixture(autouse=True)
def _activity_handlers_inline(settings):
    """Run the queued "activities recorded" handlers inside the recording transaction, so a
    test reads a score or a segment right after recording (production queues them: see
    crm.activity_queue; tests/crm/test_activity_queue.py and the live tests run the queue;
    `queued_handlers` turns it back on)."""
    settings.ACTIVITY_HANDLERS_QUEUED = False


@pytest.fixture
def queued_handlers(settings):
    """Production's activity queue: handlers run when the queue is drained."""
    settings.ACTIVITY_HANDLERS_QUEUED = True


@pytest.fixture
def marketing_user(db):
    return UserFactory(username="maya", role="marketing")


@pytest.fixture
def sales_user(db):
    return UserFactory(username="sam", role="sales")


@pytest.fixture
def other_sales_user(db):
    return UserFactory(username="sasha", role="sales")


@pytest.fixture
def admin_user(db):
    return UserFactory(username="ada", role="admin")


@pytest.fixture
def no_role_user(db):
    return UserFactory(username="nobody")


@pytest.fixture
def persona(request, db):
    """Parametrize with a role name ("anonymous", "marketing", "sales", "admin")."""
    role = request.param
    return None if role == "anonymous" else UserFactory(username=f"p-{role}", role=role)


def _client_for(client, user):
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def marketing_client(client, marketing_user):
    return _client_for(client, marketing_user)


@pytest.fixture
def sales_client(client, sales_user):
    return _client_for(client, sales_user)


@pytest.fixture
def admin_client_(client, admin_user):
    return _client_for(client, admin_user)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def marketing_api(marketing_user):
    c = APIClient()
    c.force_authenticate(marketing_user)
    return c


@pytest.fixture
def sales_api(sales_user):
    c = APIClient()
    c.force_authenticate(sales_user)
    return c


@pytest.fixture
def admin_api(admin_user):
    c = APIClient()
    c.force_authenticate(admin_user)
    return c
