#!/usr/bin/env bash
# Feed lag between two ferrod replicas sharing one PostgreSQL: starts replicas A and B on a fresh
# database, runs `feed_lag` (writes through A, a client listener on B), prints its report, stops
# everything and drops the database.
#
#   benches/feed-lag.sh [feed_lag options...]     e.g. --connections 16 --duration 20s
#
# Env: FERROD_BIN (default target/release/ferrod, built if missing; PROFILE=debug for
# target/debug), PG_URL (admin URL, default: scripts/pg-start.sh).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
profile=${PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build -q $flag -p ferrod -p ferrod-bench
bin=${FERROD_BIN:-target/$profile/ferrod}
lag=target/$profile/feed_lag
admin=${PG_URL:-$(scripts/pg-start.sh)}
db="bench_feedlag_$$"
url="${admin%/*}/$db"
psql "$admin" -qtAX -c "CREATE DATABASE $db" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pa=$(free_port); pb=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$admin" -qtAX -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" --listen 127.0.0.1:$pa --database-url "$url" >"$work/a.log" 2>&1 & pids+=($!)
sleep 1 # A runs the migrations first
"$bin" --listen 127.0.0.1:$pb --database-url "$url" >"$work/b.log" 2>&1 & pids+=($!)
for p in $pa $pb; do
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
echo "feed-lag: $bin ($profile), A :$pa, B :$pb, database $db; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$lag" --writer 127.0.0.1:$pa --listener 127.0.0.1:$pb "$@"
