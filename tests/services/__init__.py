"""pytest plugin: the real services the suite talks to, and how tests find them.

``tests/run.sh`` starts a throwaway PostgreSQL and a loopback ``redis-server`` and passes
them as ``DATABASE_URL`` and ``REDIS_URL``. A test that needs a service the session does not
have is skipped with the reason, except under ``CI=true``, where it fails: in CI nothing may
quietly skip.

Markers: ``redis`` (needs ``REDIS_URL``), ``postgres`` (needs the PostgreSQL backend),
``browser`` (needs Chromium at ``CHROMIUM_PATH``, default ``/usr/bin/chromium``).

Celery runs on the in-memory broker and result backend in tests, so enqueuing never touches
``var/`` and a test worker (``celery.contrib.testing``) can consume in-process.
"""

import os
import shutil
import socket
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
TEST_BROKER_URL = "memory://"
TEST_RESULT_BACKEND = "cache+memory://"


def service_missing(reason: str):
    """Skip the running test because a service is absent — or fail it in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: services must be present)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    from django.conf import settings

    # whitenoise warns on every request when STATIC_ROOT does not exist yet.
    os.makedirs(settings.STATIC_ROOT, exist_ok=True)
    # Hashing at production strength would dominate the suite's run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CELERY_BROKER_URL = TEST_BROKER_URL
    settings.CELERY_RESULT_BACKEND = TEST_RESULT_BACKEND
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    celery_conf_set(
        broker_url=TEST_BROKER_URL,
        result_backend=TEST_RESULT_BACKEND,
        broker_transport_options={},
    )


def celery_conf_set(**values) -> dict:
    """Set Celery settings on the app at run time; return what they were.

    The app reads Django's settings under the ``CELERY_`` namespace, and before Celery 5.7
    ``app.conf.task_always_eager`` then reads only ``CELERY_TASK_ALWAYS_EAGER``: a value
    set under the plain name is silently ignored. Both spellings are set, so this works
    on every Celery the project allows.
    """
    from crm.celery import app

    before = {name: getattr(app.conf, name) for name in values}
    app.conf.update({**values, **{f"CELERY_{k.upper()}": v for k, v in values.items()}})
    return before


@contextmanager
def celery_conf(**values):
    """Celery settings overridden for a block (see :func:`celery_conf_set`)."""
    before = celery_conf_set(**values)
    try:
        yield
    finally:
        celery_conf_set(**before)


def closed_loopback_port() -> int:
    """A loopback port nothing listens on: bound, then released, for the few seconds a test
    needs it (connecting is refused at once, as with a stopped server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker_down():
    """Celery pointed at a Redis URL on a closed loopback port for one test, not eager: every
    enqueue meets the real connection error of a broker that is down.

    The app caches its connection and producer pools, so they are dropped on the way in (the
    in-memory broker's would still be used) and on the way out (the dead one must not leak).
    """
    from crm.celery import app

    def drop_pools():
        app._pool = None
        app.amqp._producer_pool = None

    with celery_conf(
        broker_url=f"redis://127.0.0.1:{closed_loopback_port()}/0", task_always_eager=False
    ):
        drop_pools()
        yield
    drop_pools()


def _uses_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def pytest_runtest_setup(item):
    if item.get_closest_marker("redis") and not os.environ.get("REDIS_URL"):
        service_missing("needs a redis-server: REDIS_URL is not set (tests/run.sh starts one)")
    if item.get_closest_marker("postgres") and not _uses_postgres():
        service_missing("needs PostgreSQL: set DATABASE_URL=postgres://… (tests/run.sh does)")
    if item.get_closest_marker("browser") and not (
        os.path.exists(CHROMIUM_PATH) or shutil.which("chromium")
    ):
        service_missing(f"needs Chromium at {CHROMIUM_PATH} (apt-get install chromium)")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test databases, plus the database cache table (log-in throttling uses it)."""
    from django.core.management import call_command

    with django_db_blocker.unblock():
        call_command("createcachetable", verbosity=0)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the loopback redis-server started by tests/run.sh (verified reachable)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        service_missing("needs a redis-server: REDIS_URL is not set (tests/run.sh starts one)")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing(f"redis-server at {url} is not answering: {exc}")
    return url


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = CHROMIUM_PATH if os.path.exists(CHROMIUM_PATH) else shutil.which("chromium")
    if not path:
        service_missing(f"needs Chromium at {CHROMIUM_PATH} (apt-get install chromium)")
    return path
