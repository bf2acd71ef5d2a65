#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.
#   pg.sh start DIR   initdb + start in DIR (created), print the DATABASE_URL on stdout
#   pg.sh stop DIR    stop the cluster and delete DIR
# initdb/pg_ctl refuse to run as root, so as root they run as the `postgres` user on a
# directory that user owns (its parent must be traversable, e.g. a `mktemp -d` made 0755).
# fsync is off: the data is thrown away anyway. PG_EXTRA_OPTS adds server settings
# (bench/run.sh sizes the buffers for a benchmark database instead of the tiny defaults).
set -euo pipefail
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
cmd=${1:?start|stop}
dir=${2:?directory}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    [ -x "$PG_BIN/initdb" ] || { echo "pg.sh: PostgreSQL binaries not found (PG_BIN)" >&2; exit 3; }
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 ${PG_EXTRA_OPTS:-}" \
        >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres leadcycle
    echo "$port" >"$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/leadcycle"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: pg.sh start|stop DIR" >&2; exit 2 ;;
esac
