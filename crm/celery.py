"""The Celery application.

Beat runs a code-defined schedule of short "tick" tasks; each tick reads the work that is
due from our own tables, so any number of workers can run them and a missed tick is
simply caught up by the next one.
"""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")

app = Celery("leadcycle")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # NURTURE_TICK_SECONDS shortens the tick for the scale-out tests (default: a minute).
    "nurture-tick": {
        "task": "nurture.tasks.tick",
        "schedule": float(os.environ.get("NURTURE_TICK_SECONDS", "60")),
    },
    # Safety net: the queue is drained when each batch commits (crm.activity_queue).
    "activity-queue-drain": {"task": "crm.tasks.drain_activity_queue", "schedule": 60.0},
    "segments-refresh": {"task": "crm.tasks.refresh_segments", "schedule": crontab(minute=7)},
    "scoring-decay": {"task": "scoring.tasks.decay_tick", "schedule": crontab(minute=17)},
    # Safety net: a rescore is sent to the workers when it is asked for (scoring.services).
    "scoring-rescores-pick-up": {"task": "scoring.tasks.rescores_pick_up", "schedule": 60.0},
    # Safety net: a hand-off's owner emails are sent by its own task (scoring.handoff).
    "scoring-owner-emails": {"task": "scoring.tasks.owner_emails_sweep", "schedule": 60.0},
    "reports-reconcile": {
        "task": "reports.tasks.reconcile_rollups",
        "schedule": crontab(hour=2, minute=30),
    },
    "reports-review-digest": {
        "task": "reports.tasks.review_digest",
        "schedule": crontab(day_of_week="mon", hour=7, minute=0),
    },
}


@app.task(name="crm.ping")
def ping() -> str:
    """Answer "pong": used by the health check and the worker tests."""
    return "pong"
