"""Real processes for the reliability tests: a live database, Redis, Celery, gunicorn.

pytest-django's test database lives inside one test transaction (or is flushed between
tests), which worker subprocesses cannot see. These tests instead create a database of
their own on the throwaway PostgreSQL cluster, migrate it with ``manage.py migrate`` in a
subprocess, and drive every process (workers, beat, gunicorn, setup scripts) through
environment variables, exactly as production does. Every process is started in its own
session (process group) and the whole group is killed at the end: no orphans.
"""

from __future__ import annotations

import email
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BIN = Path(sys.executable).parent
MAIL_SEPARATOR = b"\n" + b"-" * 79 + b"\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- databases ---------------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def live_database(cluster_url: str, name: str):
    """A new, empty database on the cluster of ``cluster_url``; dropped afterwards."""
    admin = _with_db(cluster_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(cluster_url, name)
    finally:
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass  # the cluster is thrown away by tests/run.sh anyway


def sql(url: str, query: str, params=()) -> list[tuple]:
    """Run one query on the live database (a fresh connection: no shared state)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchall()


def sql_value(url: str, query: str, params=()):
    return sql(url, query, params)[0][0]


class PgCluster:
    """A throwaway PostgreSQL cluster of our own (``tests/services/pg.sh``) that a test
    may stop and start again on the same port — the shared one must stay up for others."""

    def __init__(self):
        # The postgres user (when root) must traverse the parent: mkdtemp + 0755, as run.sh.
        self.parent = Path(tempfile.mkdtemp(prefix="leadcycle-reliability-pg-"))
        self.parent.chmod(0o755)
        self.dir = self.parent / "pg"
        self.url = ""
        self.port = 0

    def start(self) -> str:
        out = subprocess.run(
            ["bash", str(ROOT / "tests/services/pg.sh"), "start", str(self.dir)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.url = out.stdout.strip().splitlines()[-1]
        self.port = int((self.dir / "port").read_text())
        return self.url

    def _pg_ctl(self, *args: str) -> None:
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        cmd = [str(pg_bin / "pg_ctl"), "-D", str(self.dir / "data"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop_server(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c fsync=off -c max_connections=200"
        )
        self._pg_ctl("-l", str(self.dir / "server.log"), "-w", "-t", "60", "-o", opts, "start")

    def destroy(self) -> None:
        subprocess.run(
            ["bash", str(ROOT / "tests/services/pg.sh"), "stop", str(self.dir)],
            check=False,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(["rm", "-rf", str(self.parent)], check=False)


class RedisServer:
    """A redis-server of our own on a fixed loopback port, so it can go away and come back."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.dir),
                "--pidfile",
                str(self.dir / "redis.pid"),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            check=True,
            timeout=30,
        )
        wait_until(self.answers, timeout=10, interval=0.1, what="redis-server to answer")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        pid_file = self.dir / "redis.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the broker "goes away", no graceful shutdown
            wait_until(lambda: not _alive(pid), timeout=10, interval=0.1, what="redis to stop")
            pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# --- the application's processes ---------------------------------------------------------


def app_env(*, database_url: str, broker_url: str, work: Path, **extra: str) -> dict[str, str]:
    """The environment of every process of one live deployment."""
    (work / "var").mkdir(parents=True, exist_ok=True)
    (work / "mail").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "crm.settings",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "LEADCYCLE_VAR_DIR": str(work / "var"),
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(work / "mail"),
        "SITE_URL": "http://127.0.0.1",
        "NURTURE_TICK_SECONDS": "1",
        "DEBUG": "1",
        "SECRET_KEY": "reliability-tests-only-" + "x" * 40,
        "CONN_MAX_AGE": "0",
    }
    env.pop("CELERY_RESULT_BACKEND", None)
    env.update(extra)
    return env


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    out = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def migrate(env: dict) -> None:
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "createcachetable")


def django_script(env: dict, code: str, *, timeout: float = 300):
    """Run ``code`` in ``manage.py shell`` of the live deployment; return ``result``.

    The code assigns a JSON-serialisable ``result``; it is printed on a marked line.
    """
    wrapped = code + "\nimport json as _j\nprint('RESULT:' + _j.dumps(result, default=str))\n"
    out = manage(env, "shell", "-c", wrapped, timeout=timeout)
    for line in out.splitlines():
        if line.startswith("RESULT:"):
            return json.loads(line[len("RESULT:") :])
    raise AssertionError(f"no result from the script:\n{out}")


def live_call(env: dict, name: str, /, **kwargs):
    """Call ``tests.reliability.live_setup.<name>(**kwargs)`` inside the deployment."""
    return django_script(
        env, f"from tests.reliability.live_setup import {name}\nresult = {name}(**{kwargs!r})"
    )


class Processes:
    """Long-running subprocesses, each in its own process group, logged to files."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 — closed with the process
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc._log = log  # type: ignore[attr-defined]
        self.procs[name] = proc
        return proc

    def worker(self, name: str, env: dict, *, concurrency: int = 2) -> subprocess.Popen:
        return self.start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "crm",
                "worker",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
                "-n",
                f"{name}-{os.getpid()}@%h",
            ],
            env,
        )

    def beat(self, env: dict, work: Path) -> subprocess.Popen:
        return self.start(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "crm",
                "beat",
                "--loglevel=INFO",
                "-s",
                str(work / "celerybeat-schedule"),
                "--max-interval=1",
            ],
            env,
        )

    def gunicorn(self, env: dict, port: int, *, workers: int = 2) -> subprocess.Popen:
        return self.start(
            "gunicorn",
            [
                str(BIN / "gunicorn"),
                "crm.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                "4",
                "--timeout",
                "60",
            ],
            env,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        _kill_group(proc, sig)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(
            f"===== {p.name} =====\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def stop_all(self) -> None:
        """Stop every process gracefully: SIGTERM to each leader only (a Celery worker's
        warm shutdown lets its running tasks finish, then stops its own pool — a SIGTERM
        to the whole group killed a busy pool child under it, a WorkerLostError traceback
        in the log), then whatever of the group is left is killed."""
        for name in list(self.procs):
            _kill_group(self.procs.pop(name), signal.SIGTERM, group=False)


def _signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _kill_group(proc: subprocess.Popen, sig: int, *, group: bool = True) -> None:
    if group:
        _signal_group(proc.pid, sig)
    else:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    # Children of a prefork pool are in the same group: make sure none outlives the parent.
    # SIGKILL is delivered asynchronously: a child can still show as running for a moment
    # after kill() returns, so wait for the group to be gone before saying it is.
    _signal_group(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc._log.close()  # type: ignore[attr-defined]


def group_alive(pid: int) -> bool:
    """Whether any process of the group led by ``pid`` still runs (zombies excluded)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid and fields[0] not in "ZX":  # pgrp, state (zombie, dead)
            return True
    return False


# --- the mail the backend accepted -------------------------------------------------------


def delivered(mail_dir: Path) -> list[email.message.Message]:
    """Every complete message the file backend wrote (a killed writer's tail is ignored)."""
    messages = []
    for path in sorted(mail_dir.glob("*.log")):
        chunks = path.read_bytes().split(MAIL_SEPARATOR)
        for chunk in chunks[:-1]:  # the last chunk has no separator yet: incomplete or empty
            messages.append(email.message_from_bytes(chunk.strip(b"\n")))
    return messages


def deliveries_by_recipient_and_subject(mail_dir: Path) -> Counter:
    return Counter((m["To"], m["Subject"]) for m in delivered(mail_dir))
