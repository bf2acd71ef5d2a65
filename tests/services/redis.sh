#!/usr/bin/env bash
# A throwaway redis-server on a free loopback port (no persistence), for the Redis tests.
#   redis.sh start DIR   start it, print the REDIS_URL on stdout
#   redis.sh stop DIR    stop it and delete DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?directory}
case "$cmd" in
start)
    command -v redis-server >/dev/null || { echo "redis.sh: redis-server not installed" >&2; exit 3; }
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
    for _ in $(seq 50); do
        redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    echo "redis://127.0.0.1:$port"
    ;;
stop)
    if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: redis.sh start|stop DIR" >&2; exit 2 ;;
esac
