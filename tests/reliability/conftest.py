"""Fixtures for the reliability tests: a live, migrated database and a process reaper."""

import os
import uuid

import pytest

from tests.services import service_missing

from .live import Processes, live_database


@pytest.fixture
def cluster_url() -> str:
    """The throwaway PostgreSQL cluster of tests/run.sh (the test database's server)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        service_missing("needs PostgreSQL: set DATABASE_URL=postgres://… (tests/run.sh does)")
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        service_missing("needs DATABASE_URL pointing at the throwaway PostgreSQL cluster")
    return url


@pytest.fixture
def live_db(cluster_url):
    """A database of its own on the cluster, committed data visible to every process."""
    with live_database(cluster_url, f"reliability_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def processes(tmp_path):
    """Start long-running processes through this; all of them are killed afterwards."""
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()
