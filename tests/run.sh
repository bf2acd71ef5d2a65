#!/usr/bin/env bash
# The whole suite, called by `make test` (and by .ci/run with CI=true):
#   1. installs the system packages the tests need (redis-server, chromium) when root;
#   2. starts a loopback redis-server (REDIS_URL) and a throwaway PostgreSQL (DATABASE_URL);
#   3. runs pytest on SQLite (everything but `postgres`-marked tests, two xdist workers),
#      then on PostgreSQL (everything but the `browser` and `redis` tests, which ran once —
#      except the tests marked both `redis` and `postgres`, which run only here);
#   4. stops and deletes both services on exit.
# Extra arguments go to both pytest runs, e.g. `tests/run.sh tests/crm -k health`.
# LEADCYCLE_TEST_DBS="sqlite" (or "postgres") runs one pass only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DBS=${LEADCYCLE_TEST_DBS:-sqlite postgres}
WORKERS=${PYTEST_WORKERS:-2}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "tests/run.sh: installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends redis-server chromium >/dev/null
    else
        echo "tests/run.sh: missing ${missing[*]}; the tests needing them will skip (fail in CI)" >&2
    fi
fi

SERVICES=$(mktemp -d -t leadcycle-test-XXXXXX)
chmod 755 "$SERVICES"   # the postgres user must reach its cluster directory below
cleanup() {
    bash tests/services/redis.sh stop "$SERVICES/redis" || true
    bash tests/services/pg.sh stop "$SERVICES/pg" || true
    rm -rf "$SERVICES"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Django's settings must not fall back to the developer's var/ (secret key, SQLite file).
export LEADCYCLE_VAR_DIR="$SERVICES/var"
mkdir -p "$LEADCYCLE_VAR_DIR"
unset DATABASE_URL CELERY_BROKER_URL CELERY_RESULT_BACKEND

if command -v redis-server >/dev/null; then
    REDIS_URL=$(bash tests/services/redis.sh start "$SERVICES/redis")
    export REDIS_URL
    echo "tests/run.sh: redis-server at $REDIS_URL"
fi

# pytest exits 5 when it ran nothing: a failure for the full suite, fine for a subset that
# happens to have no tests in one pass (e.g. only browser tests asked for).
run_pytest() {
    local rc=0
    "$BIN/pytest" "$@" || rc=$?
    if [ "$rc" = 5 ] && [ "$USER_ARGS" -gt 0 ]; then rc=0; fi
    return "$rc"
}
USER_ARGS=$#
status=0

for db in $DBS; do
    case "$db" in
    sqlite)
        echo "=== tests on SQLite ==="
        run_pytest -n "$WORKERS" -m "not postgres" "$@" || status=$?
        ;;
    postgres)
        echo "=== tests on PostgreSQL ==="
        DATABASE_URL=$(bash tests/services/pg.sh start "$SERVICES/pg")
        echo "tests/run.sh: PostgreSQL at $DATABASE_URL"
        # Redis tests ran in the SQLite pass, except those that need both services (the
        # scale-out and fault tests in tests/reliability): they run here, Redis still up.
        DATABASE_URL=$DATABASE_URL run_pytest -n "$WORKERS" \
            -m "not browser and (not redis or postgres)" "$@" \
            || status=$?
        bash tests/services/pg.sh stop "$SERVICES/pg"
        ;;
    *)
        echo "tests/run.sh: unknown database '$db' in LEADCYCLE_TEST_DBS" >&2
        exit 2
        ;;
    esac
done
exit "$status"
