#!/usr/bin/env bash
# `make bench`: a throwaway PostgreSQL on loopback, migrated and seeded with
# BENCH_CONTACTS contacts (default 100,000; the full target is 1,000,000), then
# bench/runner.py runs every bench/bench_*.py and appends to BENCHMARKS.md.
#   BENCH_CONTACTS=1000000 make bench
#   BENCH_ONLY="healthz" make bench      (names of benchmarks or modules)
# Seeding 1M contacts takes the better part of an hour, so it can be split in two stages
# that share a cluster kept running in BENCH_WORK (stopped and deleted after `run`):
#   BENCH_WORK=/tmp/lc-bench BENCH_STAGE=seed BENCH_CONTACTS=1000000 bash bench/run.sh
#   BENCH_WORK=/tmp/lc-bench BENCH_STAGE=run bash bench/run.sh   (migrates again first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export BENCH_CONTACTS=${BENCH_CONTACTS:-100000}
export BENCH_SEED=${BENCH_SEED:-42}
STAGE=${BENCH_STAGE:-all}

if [ -n "${BENCH_WORK:-}" ]; then
    WORK=$BENCH_WORK
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d -t leadcycle-bench-XXXXXX)
fi
chmod 755 "$WORK"   # the postgres user must reach its cluster directory below
if [ "$STAGE" != seed ]; then
    trap 'bash tests/services/pg.sh stop "$WORK/pg" || true; rm -rf "$WORK"' EXIT
fi
trap 'exit 130' INT TERM

export LEADCYCLE_VAR_DIR="$WORK/var" DEBUG=1 CELERY_TASK_ALWAYS_EAGER=0
# A database server sized for its data, as production would be (PostgreSQL's defaults —
# 128 MB of shared buffers — fit a laptop, not 20M activities): a quarter of this
# machine's RAM for buffers, the rest counted as OS cache.
export PG_EXTRA_OPTS=${PG_EXTRA_OPTS:-"-c shared_buffers=4GB -c effective_cache_size=12GB -c work_mem=32MB -c maintenance_work_mem=1GB -c max_wal_size=8GB"}
export ALLOWED_HOSTS="testserver,127.0.0.1,localhost"   # django test Client's host
if [ "$STAGE" = run ]; then
    DATABASE_URL="postgres://postgres@127.0.0.1:$(cat "$WORK/pg/port")/leadcycle"
    export DATABASE_URL
    $PY manage.py migrate --noinput -v 0   # migrations added since the seed stage
else
    DATABASE_URL=$(bash tests/services/pg.sh start "$WORK/pg")
    export DATABASE_URL
    mkdir -p "$LEADCYCLE_VAR_DIR/broker/out" "$LEADCYCLE_VAR_DIR/broker/processed" "$LEADCYCLE_VAR_DIR/staticfiles"
    echo "bench: PostgreSQL at $DATABASE_URL, $BENCH_CONTACTS contacts"

    $PY manage.py migrate --noinput -v 0
    $PY manage.py createcachetable
    start=$(date +%s)
    # --no-history: the week-by-week replay of scores and segments reads the activities ~50
    # times (seed_demo skips it above 20,000 contacts anyway; said here for any BENCH_CONTACTS).
    $PY manage.py seed_demo --contacts "$BENCH_CONTACTS" --seed "$BENCH_SEED" --no-history
    echo "bench: seeded in $(( $(date +%s) - start )) s"
    [ "$STAGE" = seed ] && { echo "bench: seeded; cluster left running in $WORK/pg"; exit 0; }
fi
$PY manage.py shell -c "from django.db import connection; connection.cursor().execute('VACUUM ANALYZE')" \
    || true
# shellcheck disable=SC2086
$PY bench/runner.py ${BENCH_ONLY:+--only $BENCH_ONLY}
# The bounded load test (gunicorn + 16 clients, its own database on this cluster); skipped
# when BENCH_ONLY picks other benchmarks. Standalone: .venv/bin/python bench/load_test.py
if [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" load_test "* ]]; then
    $PY bench/load_test.py
fi
