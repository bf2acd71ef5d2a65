"""/healthz: is the database reachable, is the broker reachable (JSON, 200 or 503) — for the
embedded filesystem broker, are its folders there and writable.

It also reports the activity queue (crm.activity_queue): batches waiting for their
handlers, parked ones and the oldest's age — for a monitor to alert on a growing backlog;
and, on PostgreSQL, the age of the oldest transaction that holds the cluster's horizon
(``oldest_transaction_seconds``): segment triggers read only joins no running transaction
can precede (crm.models.SegmentChange), so one transaction left open — even idle — holds
every segment trigger back until it ends (and vacuum with them). Neither changes the
status: nothing is lost, only delayed.
"""

import os

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from crm.activity_queue import queue_status
from crm.celery import app as celery_app
from crm.roles import public


def _database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the message says why
        return False, exc.__class__.__name__
    return True, "ok"


def _broker_ok() -> tuple[bool, str]:
    try:
        _check_broker_folders()
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return False, exc.__class__.__name__
    return True, "ok"


# The filesystem transport's folders (crm/settings.py creates them).
_BROKER_FOLDER_OPTIONS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


def _check_broker_folders() -> None:
    """Raise unless the filesystem transport's folders exist and can be written.

    Its connection opens whatever the folders are, so the connection check alone would call
    the broker up while every send fails.
    """
    if not (celery_app.conf.broker_url or "").startswith("filesystem"):
        return
    options = celery_app.conf.broker_transport_options or {}
    for folder in filter(None, map(options.get, _BROKER_FOLDER_OPTIONS)):
        if not os.path.isdir(folder):
            raise FileNotFoundError(folder)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(folder)


# Transactions with an xid or a snapshot: what pg_snapshot_xmin() waits for. Other
# databases' and other roles' sessions count only where the role may read their stats
# (pg_read_all_stats); the application's own sessions always do.
_OLDEST_TRANSACTION_SQL = """
    SELECT EXTRACT(EPOCH FROM clock_timestamp() - MIN(xact_start))
    FROM pg_stat_activity
    WHERE pid <> pg_backend_pid() AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
"""


def _oldest_transaction_seconds() -> float:
    with connection.cursor() as cursor:
        cursor.execute(_OLDEST_TRANSACTION_SQL)
        (age,) = cursor.fetchone()
    return round(float(age), 1) if age is not None else 0.0


@public
@never_cache
def healthz(request):
    db_ok, db_msg = _database_ok()
    broker_ok, broker_msg = _broker_ok()
    ok = db_ok and broker_ok
    body = {"status": "ok" if ok else "unavailable", "database": db_msg, "broker": broker_msg}
    if db_ok:
        try:
            body["activity_queue"] = queue_status()
        except Exception as exc:  # noqa: BLE001 - the status above still answers
            body["activity_queue"] = exc.__class__.__name__
        if connection.vendor == "postgresql":
            try:
                body["oldest_transaction_seconds"] = _oldest_transaction_seconds()
            except Exception as exc:  # noqa: BLE001
                body["oldest_transaction_seconds"] = exc.__class__.__name__
    return JsonResponse(body, status=200 if ok else 503)
