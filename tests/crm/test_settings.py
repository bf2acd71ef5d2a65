"""crm/settings.py is configured from the environment, with laptop-safe defaults.

Each case runs a fresh interpreter, because settings are read once per process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
from django.conf import settings
from crm.celery import app
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST"),
    "port": db.get("PORT"), "user": db.get("USER"),
    "broker": settings.CELERY_BROKER_URL, "celery_broker": app.conf.broker_url,
    "debug": settings.DEBUG, "secret": settings.SECRET_KEY,
    "hosts": settings.ALLOWED_HOSTS, "tz": settings.TIME_ZONE, "site": settings.SITE_URL,
    "hsts": settings.SECURE_HSTS_SECONDS, "secure_cookie": settings.SESSION_COOKIE_SECURE,
}))
"""
# Variables of the developer's shell that would change the answers.
CLEARED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "TIME_ZONE",
    "SITE_URL",
    "SECURE_HTTPS",
)


def _run(var_dir: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    base.update(DJANGO_SETTINGS_MODULE="crm.settings", LEADCYCLE_VAR_DIR=str(var_dir), **env)
    code = f"import django; django.setup()\n{PROBE}"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def _settings(var_dir: Path, **env: str) -> dict:
    return json.loads(_run(var_dir, **env).stdout.strip().splitlines()[-1])


def test_the_defaults_suit_a_laptop(tmp_path):
    s = _settings(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"] == str(tmp_path / "leadcycle.sqlite3")
    assert s["broker"] == s["celery_broker"] == "filesystem://"
    assert s["debug"] is True
    assert s["tz"] == "UTC"
    assert "127.0.0.1" in s["hosts"]
    assert s["hsts"] == 0


def test_debug_generates_a_secret_key_once_into_the_var_dir(tmp_path):
    first = _settings(tmp_path)["secret"]
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == first
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert len(first) >= 50
    assert _settings(tmp_path)["secret"] == first


def test_a_secret_key_from_the_environment_wins_and_nothing_is_written(tmp_path):
    assert _settings(tmp_path, SECRET_KEY="from-the-env")["secret"] == "from-the-env"
    assert not (tmp_path / "secret_key").exists()


def test_debug_off_without_a_secret_key_is_refused(tmp_path):
    result = _run(tmp_path, check=False, DEBUG="0", ALLOWED_HOSTS="crm.example.com")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY must be set" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_debug_off_without_a_site_url_is_refused(tmp_path):
    """Review finding: with DEBUG=0 SITE_URL fell back to http://127.0.0.1:8000, so every
    email's unsubscribe and tracking links pointed at the recipient's own machine."""
    result = _run(
        tmp_path, check=False, DEBUG="0", SECRET_KEY="x" * 60, ALLOWED_HOSTS="crm.example.com"
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SITE_URL must be set" in result.stderr


def test_debug_on_links_emails_to_the_local_server(tmp_path):
    assert _settings(tmp_path)["site"] == "http://127.0.0.1:8000"


def test_the_filesystem_broker_gets_its_folders_in_any_var_dir(tmp_path):
    """Review finding: only the Makefile created var/broker/…; under any other
    LEADCYCLE_VAR_DIR every task send failed (FileNotFoundError)."""
    var_dir = tmp_path / "elsewhere" / "var"
    code = "import django; django.setup()\nfrom crm.celery import app\napp.send_task('crm.ping')\n"
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(DJANGO_SETTINGS_MODULE="crm.settings", LEADCYCLE_VAR_DIR=str(var_dir))
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60
    )
    for folder in ("out", "processed", "control"):
        assert (var_dir / "broker" / folder).is_dir(), folder
    assert len(list((var_dir / "broker" / "out").iterdir())) == 1, "the task message"


def test_database_url_selects_postgresql(tmp_path):
    s = _settings(tmp_path, DATABASE_URL="postgres://crm:pw@db.internal:6543/leads")
    assert s["engine"] == "django.db.backends.postgresql"
    assert (s["name"], s["host"], s["port"], s["user"]) == ("leads", "db.internal", 6543, "crm")


def test_celery_broker_url_reaches_the_celery_app(tmp_path):
    s = _settings(tmp_path, CELERY_BROKER_URL="redis://redis.internal:6379/2")
    assert s["broker"] == s["celery_broker"] == "redis://redis.internal:6379/2"


def test_time_zone_allowed_hosts_and_site_url_come_from_the_environment(tmp_path):
    s = _settings(
        tmp_path,
        TIME_ZONE="Europe/Berlin",
        ALLOWED_HOSTS="crm.example.com, www.crm.example.com",
        SITE_URL="https://crm.example.com/",
    )
    assert s["tz"] == "Europe/Berlin"
    assert s["hosts"] == ["crm.example.com", "www.crm.example.com"]
    assert s["site"] == "https://crm.example.com"


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_debug_off_turns_on_https_protections(tmp_path, value):
    s = _settings(
        tmp_path,
        DEBUG=value,
        SECRET_KEY="x" * 60,
        ALLOWED_HOSTS="crm.example.com",
        SITE_URL="https://crm.example.com",
    )
    assert s["debug"] is False
    assert s["hsts"] > 0
    assert s["secure_cookie"] is True
    assert s["hosts"] == ["crm.example.com"]
