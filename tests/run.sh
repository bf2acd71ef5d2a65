#!/usr/bin/env bash
# The whole suite: once on SQLite, once on PostgreSQL. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
$BIN/pytest "$@"
