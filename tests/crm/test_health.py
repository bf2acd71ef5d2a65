"""/healthz reports database and broker reachability: 200 when both answer, 503 with JSON
saying which one is down otherwise. Public, never cached, and carries the security headers."""

import os

import pytest
from django.db import connection, connections
from django.db.utils import load_backend

from tests.services import celery_conf, closed_loopback_port

# broker_down: the shared fixture of tests/services (Celery on a closed loopback port).


@pytest.fixture
def database_down(tmp_path):
    """Swap the default connection for one to a database that cannot be reached.

    SQLite: a file in a directory that does not exist; PostgreSQL: a closed loopback port.
    """
    real = connections["default"]
    settings_dict = dict(real.settings_dict)
    if real.vendor == "sqlite":
        settings_dict["NAME"] = str(tmp_path / "missing" / "db.sqlite3")
    else:
        settings_dict.update(HOST="127.0.0.1", PORT=str(closed_loopback_port()))
        settings_dict["OPTIONS"] = {**settings_dict.get("OPTIONS", {}), "connect_timeout": 2}
    broken = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, "default")
    connections["default"] = broken
    yield
    broken.close()
    connections["default"] = real


@pytest.mark.django_db
def test_it_answers_200_when_database_and_broker_are_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    if connection.vendor == "postgresql":  # other sessions' transactions: any age
        assert body.pop("oldest_transaction_seconds") >= 0
    assert body == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "activity_queue": {"pending_batches": 0, "parked_batches": 0, "oldest_pending_seconds": 0},
    }
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_needs_no_log_in(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert "Location" not in response


@pytest.mark.django_db
def test_it_answers_503_with_json_when_the_broker_is_unreachable(client, broker_down):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"] != "ok"


def _filesystem_broker(root):
    """Celery on the embedded filesystem broker with its folders under ``root``."""
    folders = {
        "data_folder_in": root / "out",
        "data_folder_out": root / "out",
        "processed_folder": root / "processed",
        "control_folder": root / "control",
    }
    options = {key: str(path) for key, path in folders.items()}
    return celery_conf(broker_url="filesystem://", broker_transport_options=options)


@pytest.mark.django_db
def test_it_answers_200_on_the_filesystem_broker_with_its_folders(client, tmp_path):
    for folder in ("out", "processed", "control"):
        (tmp_path / folder).mkdir()
    with _filesystem_broker(tmp_path):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["broker"] == "ok"


@pytest.mark.django_db
@pytest.mark.parametrize("control", ["missing", "a file"])
def test_it_answers_503_when_a_filesystem_broker_folder_is_missing(client, tmp_path, control):
    """Review finding: kombu's filesystem connection opens whatever its folders are, so
    /healthz said "broker": "ok" while every task send failed (FileNotFoundError)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "processed").mkdir()
    if control == "a file":
        (tmp_path / "control").write_text("")
    with _filesystem_broker(tmp_path):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] == "FileNotFoundError"


@pytest.mark.django_db
@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_it_answers_503_when_a_filesystem_broker_folder_is_read_only(client, tmp_path):
    for folder in ("out", "processed", "control"):
        (tmp_path / folder).mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        with _filesystem_broker(tmp_path):
            response = client.get("/healthz")
    finally:
        (tmp_path / "out").chmod(0o755)
    assert response.status_code == 503
    assert response.json()["broker"] == "PermissionError"


@pytest.mark.django_db
def test_it_answers_503_with_json_when_the_database_is_unreachable(client, database_down):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] != "ok"
    assert body["broker"] == "ok"


@pytest.mark.django_db
def test_its_response_carries_the_security_headers(client):
    response = client.get("/healthz")
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db(transaction=True)
def test_it_reports_the_age_of_a_transaction_left_open(client):
    """On PostgreSQL: a transaction left open (here idle after a write) holds back every
    segment trigger; /healthz shows how long it has been open, for a monitor to alert on."""
    import threading
    import time

    from django.db import transaction

    from crm.models import Company

    if connection.vendor != "postgresql":
        assert "oldest_transaction_seconds" not in client.get("/healthz").json()
        return
    opened, done = threading.Event(), threading.Event()

    def idle_in_transaction():
        try:
            with transaction.atomic():
                Company.objects.create(name="Left open")
                opened.set()
                done.wait(timeout=30)
        finally:
            connection.close()

    writer = threading.Thread(target=idle_in_transaction)
    writer.start()
    try:
        assert opened.wait(timeout=30)
        time.sleep(1.2)
        assert client.get("/healthz").json()["oldest_transaction_seconds"] >= 1.0
    finally:
        done.set()
        writer.join(timeout=30)
