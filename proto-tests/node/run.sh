#!/usr/bin/env bash
# proto-tests/node: ferrod and a real Infinispan server driven by the npm `infinispan` client.
#
#   proto-tests/node/run.sh [test files...]
#
# Env: TARGET=ferrod|infinispan|both (default both)
#      FERROD_BIN (default <repo>/target/debug/ferrod), FERROD_DATABASE_URL (postgres://...; default SQLite)
#      REFERENCE_LINE=15|16 (default 16), CLIENT_LOG=debug (client wire log), KEEP_DATA=1
# Exits non-zero on any failure. Server logs: proto-tests/node/logs/<file>-<target>.log
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -d node_modules/infinispan ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ $# -eq 0 ]; then
  set -- test/*.test.js
fi
# One file at a time: each file starts its own servers, and the machine has 2 cores.
exec node --test --test-concurrency=1 --test-reporter=spec "$@"
