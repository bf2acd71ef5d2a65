#!/usr/bin/env bash
# `make bench`: a throwaway PostgreSQL on loopback, migrated and seeded with
# BENCH_CONTACTS contacts (default 100,000; the full target is 1,000,000), then
# bench/runner.py runs every bench/bench_*.py and appends to BENCHMARKS.md.
#   BENCH_CONTACTS=1000000 make bench
#   BENCH_ONLY="healthz" make bench      (names of benchmarks or modules)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export BENCH_CONTACTS=${BENCH_CONTACTS:-100000}
export BENCH_SEED=${BENCH_SEED:-42}

WORK=$(mktemp -d -t leadcycle-bench-XXXXXX)
chmod 755 "$WORK"   # the postgres user must reach its cluster directory below
trap 'bash tests/services/pg.sh stop "$WORK/pg" || true; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

DATABASE_URL=$(bash tests/services/pg.sh start "$WORK/pg")
export DATABASE_URL
export LEADCYCLE_VAR_DIR="$WORK/var" DEBUG=1 CELERY_TASK_ALWAYS_EAGER=0
export ALLOWED_HOSTS="testserver,127.0.0.1,localhost"   # django test Client's host
mkdir -p "$LEADCYCLE_VAR_DIR/broker/out" "$LEADCYCLE_VAR_DIR/broker/processed" "$LEADCYCLE_VAR_DIR/staticfiles"
echo "bench: PostgreSQL at $DATABASE_URL, $BENCH_CONTACTS contacts"

$PY manage.py migrate --noinput -v 0
$PY manage.py createcachetable
start=$(date +%s)
$PY manage.py seed_demo --contacts "$BENCH_CONTACTS" --seed "$BENCH_SEED"
echo "bench: seeded in $(( $(date +%s) - start )) s"
$PY manage.py shell -c "from django.db import connection; connection.cursor().execute('VACUUM ANALYZE')" \
    || true
# shellcheck disable=SC2086
$PY bench/runner.py ${BENCH_ONLY:+--only $BENCH_ONLY}
