"""/healthz: is the database reachable, is the broker reachable (JSON, 200 or 503).

It also reports the activity queue (crm.activity_queue): batches waiting for their
handlers, parked ones and the oldest's age — for a monitor to alert on a growing backlog;
they do not change the status, since the activities themselves are stored.
"""

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
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return False, exc.__class__.__name__
    return True, "ok"


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
    return JsonResponse(body, status=200 if ok else 503)
