#!/usr/bin/env bash
# ferrod side by side with its anchors, in one run on this machine:
#   ferrod on SQLite and on PostgreSQL: GET, PUT and the Keycloak-like mix (ferrod-load),
#   redis in memory and redis with appendfsync always (redis-benchmark),
#   PostgreSQL's own upsert ceiling: 100-row INSERT ... ON CONFLICT DO UPDATE, and single-row
#   upserts from 16 clients (pgbench),
#   Infinispan 16 (the HotRod server ferrod replaces), in memory and with its file store, through
#   the same ferrod-load runs (proto-tests/java/reference-server.sh).
# Then prints the figures and the ratios the targets are about, and writes them to
# $BENCH_OUT/{results.jsonl,summary.md}.
#
# Usage: benches/run.sh            (as root on a dev machine; about 6-8 minutes)
# Env:   BENCH_DURATION=15 BENCH_WARMUP=3 BENCH_CONNECTIONS=64 BENCH_VALUE_SIZE=1024
#        BENCH_KEYS=100000 BENCH_PG_CLIENTS=16 BENCH_PG_BATCH=100
#        BENCH_PG_MULTI_CLIENTS="4 8 16"  (client counts tried for the multi-row ceiling; the best counts)
#        BENCH_PARTS="ferrod-sqlite ferrod-pg redis redis-aof pgbench infinispan infinispan-store"
#          (any subset)
#        BENCH_ISPN_LINE=16  BENCH_ISPN_WARMUP=10  (JIT warm-up, s)
#        BENCH_ISPN_JAVA_OPTS="-Xmx2g"  (heap as keycloak-benchmark gives Infinispan: 2 GiB)
#        FERROD_BENCH_PG_URL=postgres://...  (use this database for ferrod instead of creating
#        one; the pgbench anchors then run there too, in table ferrod_bench_kv)
#        BENCH_OUT=target/bench/<timestamp>   BENCH_SKIP_BUILD=1
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

DURATION=${BENCH_DURATION:-15}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNECTIONS:-64}
VALUE=${BENCH_VALUE_SIZE:-1024}
KEYS=${BENCH_KEYS:-100000}
PG_CLIENTS=${BENCH_PG_CLIENTS:-16}
PG_MULTI_CLIENTS=${BENCH_PG_MULTI_CLIENTS:-"4 8 16"}
PG_BATCH=${BENCH_PG_BATCH:-100}
PARTS=${BENCH_PARTS:-"ferrod-sqlite ferrod-pg redis redis-aof pgbench infinispan infinispan-store"}
ISPN_LINE=${BENCH_ISPN_LINE:-16}
ISPN_WARMUP=${BENCH_ISPN_WARMUP:-10}
OUT=${BENCH_OUT:-$root/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$RESULTS"
WORK=$(mktemp -d "$root/target/bench-work.XXXXXX")

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
want() { [[ " $PARTS " == *" $1 "* ]]; }

# Servers this script started, stopped on exit (by pid, never by name).
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port pid seconds
  local port=$1 pid=$2 secs=${3:-60}
  for _ in $(seq 1 $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Registers a server just started in the background and waits until its port accepts; if it
# never does, says so and stops it.
await_server() { # pid port seconds label log-file
  PIDS+=("$1")
  wait_port "$2" "$1" "$3" && return 0
  log "$4 did not start (see $5)"
  stop_pid "$1"
  return 1
}

peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo null; }

record() { # name system op json-object
  printf '{"name":"%s","system":"%s","op":"%s","data":%s}\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
}

# ---------------------------------------------------------------- tools and builds
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
command -v pgbench >/dev/null || need_apt+=(postgresql-client)
command -v python3 >/dev/null || need_apt+=(python3)
if ((${#need_apt[@]})) && { want redis || want redis-aof || want pgbench; }; then
  log "installing ${need_apt[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi

LOAD=$root/target/release/ferrod-load
FERROD=$root/target/release/ferrod
FERROD_OK=1
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building ferrod-load (release)"
  cargo build --release -p ferrod-bench >&2
  if want ferrod-sqlite || want ferrod-pg; then
    log "building ferrod (release)"
    if ! cargo build --release -p ferrod >"$OUT/ferrod-build.log" 2>&1; then
      log "ferrod does not build (see $OUT/ferrod-build.log): its runs are skipped"
      FERROD_OK=0
    fi
  fi
fi
[ -x "$FERROD" ] || FERROD_OK=0
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)

# ---------------------------------------------------------------- PostgreSQL
PG_URL=${FERROD_BENCH_PG_URL:-}
PG_BENCH_URL=
PG_OWN_DB=0
PG_POSTMASTER=
pg_admin() { su postgres -c "psql -p ${PG_PORT:-5432} -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
if want ferrod-pg || want pgbench; then
  if [ -n "$PG_URL" ]; then
    PG_BENCH_URL=$PG_URL
  else
    PG_PORT=5432
    if ! command -v pg_lsclusters >/dev/null; then
      log "installing postgresql-15"
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2
    fi
    pg_lsclusters -h | grep -q '^15 *main' || pg_createcluster 15 main >&2
    if ! pg_lsclusters -h | awk '$1==15 && $2=="main" {print $4}' | grep -q online; then
      log "starting PostgreSQL 15"
      pg_ctlcluster 15 main start >&2
    fi
    PG_PORT=$(pg_lsclusters -h | awk '$1==15 && $2=="main" {print $3}')
    for _ in $(seq 1 60); do
      pg_admin "select 1" >/dev/null 2>&1 && break
      sleep 0.5
    done
    if [ "$(pg_admin "select 1 from pg_roles where rolname='ferrod_bench'")" != 1 ]; then
      pg_admin "create role ferrod_bench login createdb password 'ferrod_bench'" >&2
    fi
    # a fresh database per run for ferrod, one kept for the pgbench table
    pg_admin "drop database if exists ferrod_bench with (force)" >&2
    pg_admin "create database ferrod_bench owner ferrod_bench" >&2
    if [ "$(pg_admin "select 1 from pg_database where datname='ferrod_pgbench'")" != 1 ]; then
      pg_admin "create database ferrod_pgbench owner ferrod_bench" >&2
    fi
    # the postmaster, whose backends' CPU time is counted per operation (cpu_run.py)
    PG_DATA=$(pg_lsclusters -h | awk '$1==15 && $2=="main" {print $6}')
    PG_POSTMASTER=$(head -1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
    PG_URL="postgres://ferrod_bench:ferrod_bench@127.0.0.1:$PG_PORT/ferrod_bench"
    PG_BENCH_URL="postgres://ferrod_bench:ferrod_bench@127.0.0.1:$PG_PORT/ferrod_pgbench"
    PG_OWN_DB=1
  fi
fi

# ---------------------------------------------------------------- ferrod
# The three ferrod-load runs (GET after a preload, PUT, Keycloak mix) against a HotRod server.
hotrod_runs() { # name-prefix system-label port pid warmup-s cache [db-pid]
  local prefix=$1 system=$2 port=$3 pid=$4 warmup=$5 cache=$6 db_pid=${7:-}
  local common=(--addr "127.0.0.1:$port" --cache "$cache" --connections "$CONNS" --pipeline 1 --keys "$KEYS"
    --value-size "$VALUE" --duration "${DURATION}s" --warmup "${warmup}s" --server-pid "$pid"
    --json)
  [ -n "$db_pid" ] && common+=(--db-pid "$db_pid")
  local json
  for spec in "get:GET:--preload" "put:PUT:" "keycloak:Keycloak mix:"; do
    local mix=${spec%%:*} rest=${spec#*:}
    local op=${rest%%:*} extra=${rest#*:}
    log "  $system $op"
    # shellcheck disable=SC2086
    if json=$("$LOAD" "${common[@]}" --mix "$mix" $extra 2>>"$OUT/load-$prefix.log"); then
      record "$prefix-$mix" "$system" "$op" "$json"
    else
      log "  ferrod-load failed (see $OUT/load-$prefix.log)"
    fi
    kill -0 "$pid" 2>/dev/null || { log "$system died"; break; }
  done
}

ferrod_runs() { # label database-url [db-pid]
  local label=$1 url=$2 db_pid=${3:-} port pid
  port=$(free_port)
  log "ferrod ($label) on 127.0.0.1:$port"
  FERROD_LOG=${FERROD_LOG:-warn} "$FERROD" --listen "127.0.0.1:$port" --database-url "$url" \
    >"$OUT/ferrod-$label.log" 2>&1 &
  pid=$!
  await_server "$pid" "$port" 120 "ferrod ($label)" "$OUT/ferrod-$label.log" || return 0
  hotrod_runs "ferrod-$label" "ferrod ($label)" "$port" "$pid" "$WARMUP" "" "$db_pid"
  stop_pid "$pid"
}

if ((FERROD_OK)); then
  if want ferrod-sqlite; then
    mkdir -p "$WORK/sqlite"
    ferrod_runs SQLite "sqlite://$WORK/sqlite/ferrod.db"
  fi
  if want ferrod-pg; then
    ferrod_runs PostgreSQL "$PG_URL" "$PG_POSTMASTER"
  fi
elif want ferrod-sqlite || want ferrod-pg; then
  log "ferrod is not runnable: only the anchors are measured"
fi

# ---------------------------------------------------------------- Infinispan
# The reference server of the proto-tests (an Infinispan HotRod server from Maven artifacts,
# LOCAL caches; reference-server.sh execs the JVM, so $! is the server process), with a JIT
# warm-up before each measured window. "infinispan": memory only, as Keycloak's external
# Infinispan keeps sessions; "infinispan-store": with its write-through file store (not synced
# to disk per write, unlike ferrod's commits).
infinispan_runs() { # name store(none|file) label
  local name=$1 store=$2 label=$3 port pid
  port=$(free_port)
  log "Infinispan $ISPN_LINE ($label) on 127.0.0.1:$port"
  REFERENCE_SERVER_STORE=$store REFERENCE_SERVER_JAVA_OPTS=${BENCH_ISPN_JAVA_OPTS:--Xmx2g} \
    "$root/proto-tests/java/reference-server.sh" "$ISPN_LINE" "$port" "$WORK/$name" \
    >"$OUT/$name.log" 2>&1 &
  pid=$!
  # The first start builds the launcher with Maven.
  await_server "$pid" "$port" 900 "Infinispan ($label)" "$OUT/$name.log" || return 0
  # Cache "raw" (application/octet-stream): the bytes ferrod-load sends are stored as they are,
  # like ferrod's default cache (Infinispan 16's unencoded default cache parses keys as
  # protostream).
  hotrod_runs "$name" "Infinispan $ISPN_LINE ($label)" "$port" "$pid" "$ISPN_WARMUP" raw
  stop_pid "$pid"
}
if want infinispan || want infinispan-store; then
  if command -v java >/dev/null && command -v mvn >/dev/null; then
    want infinispan && infinispan_runs infinispan none "in memory"
    want infinispan-store && infinispan_runs infinispan-store file "file store"
  else
    log "java or mvn missing: Infinispan is not measured"
  fi
fi

# ---------------------------------------------------------------- redis
redis_bench() { # label system port pid test
  local label=$1 system=$2 port=$3 pid=$4 test=$5 n csv
  # calibrate the request count so the run lasts about $DURATION seconds
  csv=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNS" -d "$VALUE" -r "$KEYS" -n 20000 \
    -t "$test" --csv 2>/dev/null | tail -1)
  n=$(python3 -c 'import csv,sys; r=next(csv.reader([sys.argv[1]])); print(max(20000, int(float(r[1]) * float(sys.argv[2]))))' "$csv" "$DURATION")
  csv=$(python3 "$here/cpu_run.py" "$WORK/cpu.json" --pid "$pid" -- \
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNS" -d "$VALUE" -r "$KEYS" -n "$n" \
    -t "$test" --csv 2>/dev/null | tail -1)
  local json
  json=$(python3 - "$csv" "$n" "$(peak_rss_kib "$pid")" "$WORK/cpu.json" <<'EOF'
import csv, json, sys
r = next(csv.reader([sys.argv[1]]))
rss = sys.argv[3]
cpu = json.load(open(sys.argv[4]))
n = int(sys.argv[2])
per = lambda s: None if s is None else round(s * 1e6 / n, 1)
ms = lambda i: round(float(r[i]) * 1000)
print(json.dumps({"ops_per_sec": float(r[1]), "requests": n,
                  "latency": {"mean_us": ms(2), "p50_us": ms(4), "p99_us": ms(6), "max_us": ms(7)},
                  "errors": 0, "server_peak_rss_kib": int(rss) if rss.isdigit() else None,
                  "cpu_us_per_op": {"server": per(cpu["pid_cpu_s"]), "db": None,
                                    "client": per(cpu["client_cpu_s"])}}))
EOF
  )
  record "$label-${test}" "$system" "${test^^}" "$json"
}

redis_runs() { # label system extra-args...
  local label=$1 system=$2 port pid
  shift 2
  port=$(free_port)
  mkdir -p "$WORK/$label"
  log "$label on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$WORK/$label" --save '' "$@" \
    >"$OUT/$label.log" 2>&1 &
  pid=$!
  await_server "$pid" "$port" 30 "$label" "$OUT/$label.log" || return 0
  log "  $label SET"
  redis_bench "$label" "$system" "$port" "$pid" set
  log "  $label GET"
  redis_bench "$label" "$system" "$port" "$pid" get
  stop_pid "$pid"
}

want redis && redis_runs redis "redis" --appendonly no
want redis-aof && redis_runs redis-aof "redis appendfsync always" --appendonly yes --appendfsync always

# ---------------------------------------------------------------- pgbench
if want pgbench; then
  log "pgbench: preparing ferrod_bench_kv ($KEYS rows of $VALUE B)"
  psql -q -v ON_ERROR_STOP=1 "$PG_BENCH_URL" >&2 <<EOF
DROP TABLE IF EXISTS ferrod_bench_kv;
CREATE TABLE ferrod_bench_kv (k bytea PRIMARY KEY, v bytea NOT NULL);
INSERT INTO ferrod_bench_kv
  SELECT int8send(g), convert_to(repeat('v', $VALUE), 'UTF8') FROM generate_series(0, $KEYS - 1) g;
VACUUM ANALYZE ferrod_bench_kv;
EOF
  # start the measurement with a clean WAL (needs superuser or pg_checkpoint: best effort)
  if ((PG_OWN_DB)); then
    pg_admin "checkpoint" >&2 || true
  else
    psql -q "$PG_BENCH_URL" -c "CHECKPOINT" >/dev/null 2>&1 || true
  fi
  cat >"$WORK/multi.sql" <<EOF
\set base random(0, $KEYS - $PG_BATCH)
INSERT INTO ferrod_bench_kv (k, v)
  SELECT int8send(g::int8), convert_to(repeat('w', $VALUE), 'UTF8')
  FROM generate_series(:base, :base + $PG_BATCH - 1) g
  ON CONFLICT (k) DO UPDATE SET v = excluded.v;
EOF
  cat >"$WORK/single.sql" <<EOF
\set k random(0, $KEYS - 1)
INSERT INTO ferrod_bench_kv (k, v) VALUES (int8send(:k::int8), convert_to(repeat('s', $VALUE), 'UTF8'))
  ON CONFLICT (k) DO UPDATE SET v = excluded.v;
EOF
  pg_run() { # name script clients rows-per-tx op
    local name=$1 script=$2 clients=$3 rows=$4 op=$5 out json
    log "  pgbench $op"
    local watch=()
    [ -n "$PG_POSTMASTER" ] && watch=(--tree "$PG_POSTMASTER")
    if ! out=$(python3 "$here/cpu_run.py" "$WORK/cpu.json" "${watch[@]}" -- \
      pgbench -n -M prepared -c "$clients" -j 2 -T "$DURATION" --max-tries=20 \
      -f "$script" "$PG_BENCH_URL" 2>&1); then
      echo "$out" >"$OUT/$name.log"
      log "  pgbench failed (see $OUT/$name.log)"
      return 0
    fi
    echo "$out" >"$OUT/$name.log"
    json=$(python3 - "$rows" "$clients" "$WORK/cpu.json" <<EOF
import json, re, sys
out = open("$OUT/$name.log").read()
cpu = json.load(open(sys.argv[3]))
tps = float(re.search(r"^tps = ([0-9.]+)", out, re.M).group(1))
processed = re.search(r"number of transactions actually processed: (\\d+)", out)
total_rows = int(processed.group(1)) * int(sys.argv[1]) if processed else None
per = lambda s: None if s is None or not total_rows else round(s * 1e6 / total_rows, 1)
lat = re.search(r"^latency average = ([0-9.]+) ms", out, re.M)
failed = re.search(r"number of failed transactions: (\d+)", out)
rows = int(sys.argv[1])
print(json.dumps({"tps": tps, "ops_per_sec": tps, "rows_per_sec": round(tps * rows, 1),
                  "rows_per_tx": rows, "clients": int(sys.argv[2]),
                  "latency": {"mean_us": round(float(lat.group(1)) * 1000) if lat else None},
                  "errors": int(failed.group(1)) if failed else 0,
                  "cpu_us_per_op": {"server": None, "db": per(cpu["tree_cpu_s"]),
                                    "client": per(cpu["client_cpu_s"])}}))
EOF
    )
    record "$name" "PostgreSQL (pgbench)" "$op" "$json"
  }
  for c in $PG_MULTI_CLIENTS; do
    pg_run "pg-multi-upsert-c$c" "$WORK/multi.sql" "$c" "$PG_BATCH" \
      "upsert ${PG_BATCH} rows/stmt, $c clients"
  done
  pg_run pg-single-upsert "$WORK/single.sql" "$PG_CLIENTS" 1 \
    "upsert 1 row/stmt, $PG_CLIENTS clients"
  psql -q "$PG_BENCH_URL" -c "DROP TABLE IF EXISTS ferrod_bench_kv" >&2 || true
fi
if ((PG_OWN_DB)); then
  pg_admin "drop database if exists ferrod_bench with (force)" >&2 || true
fi

# ---------------------------------------------------------------- summary
python3 - "$RESULTS" "$OUT/summary.md" "$COMMIT$DIRTY" "$DURATION" "$CONNS" "$VALUE" "$KEYS" \
  "$PG_CLIENTS" "$PG_MULTI_CLIENTS" "$PG_BATCH" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, os, platform, subprocess, sys, time
(results_path, summary_path, commit, duration, conns, value, keys, pgc, pgmc, batch, load_start,
 load_end) = sys.argv[1:]
runs = {}
for line in open(results_path):
    r = json.loads(line)
    runs[r["name"]] = r

def fig(name, key="ops_per_sec"):
    r = runs.get(name)
    return r["data"].get(key) if r else None

def fmt(x, unit=""):
    if x is None:
        return "-"
    if isinstance(x, float) and x >= 100:
        x = round(x)
    return f"{x:,}{unit}" if isinstance(x, int) else f"{x:,.2f}{unit}"

cpu = "?"
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
except OSError:
    pass
lines = []
lines.append(f"ferrod bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}, "
             f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
             f"load average {load_start} at start, {load_end} at end")
lines.append(f"{conns} connections, {value} B values, {keys} keys, no pipelining, {duration} s per run; "
             f"pgbench: {batch}-row upserts from {pgmc} clients (best counts), single-row upserts from {pgc} clients")
lines.append("")
lines.append("| run | op | ops/s | rows/s | mean µs | p50 µs | p99 µs | p99.9 µs | errors | server peak RSS |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs.values():
    d = r["data"]
    lat = d.get("latency") or {}
    rows = d.get("rows_per_sec")
    if rows is None and r["name"].startswith("ferrod") and r["op"] in ("PUT",):
        rows = d.get("ops_per_sec")
    rss = d.get("server_peak_rss_kib")
    extra = ""
    rep = d.get("replace")
    if rep:
        extra = f" (replace: {rep['success']} ok, {rep['version_conflict']} conflicts)"
    lines.append("| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        r["system"], r["op"], extra, fmt(d.get("ops_per_sec")), fmt(rows),
        fmt(lat.get("mean_us")), fmt(lat.get("p50_us")), fmt(lat.get("p99_us")),
        fmt(lat.get("p999_us")), fmt(d.get("errors")),
        "-" if rss is None else f"{rss / 1024:.0f} MiB"))
lines.append("")

def ratio(label, a, b, target=None):
    if a is None or b is None or not b:
        val = "-"
        verdict = "not measured"
    else:
        v = a / b
        val = f"{v:.2f}"
        verdict = "" if target is None else ("meets" if v >= target else "below") + f" target >= {target}"
    lines.append(f"| {label} | {val} | {verdict} |")

lines.append("| ratio | value | target |")
lines.append("|---|---:|---|")
redis_get = fig("redis-get")
multi = max((r["data"]["rows_per_sec"] for n, r in runs.items() if n.startswith("pg-multi-upsert")),
            default=None)
single = fig("pg-single-upsert", "rows_per_sec")
for label, name in (("SQLite", "ferrod-SQLite"), ("PostgreSQL", "ferrod-PostgreSQL")):
    ratio(f"ferrod ({label}) GET / redis GET", fig(f"{name}-get"), redis_get)
for label, name in (("PostgreSQL", "ferrod-PostgreSQL"), ("SQLite", "ferrod-SQLite")):
    put = fig(f"{name}-put")
    ratio(f"ferrod ({label}) PUT / PG {batch}-row upsert rows/s", put, multi, 0.5)
    ratio(f"ferrod ({label}) PUT / PG single-row upsert rows/s ({pgc} clients)", put, single, 5)
ratio("ferrod (PostgreSQL) PUT / redis appendfsync-always SET", fig("ferrod-PostgreSQL-put"), fig("redis-aof-set"))
ratio("ferrod (SQLite) PUT / redis appendfsync-always SET", fig("ferrod-SQLite-put"), fig("redis-aof-set"))
for ispn, what in (("infinispan", "in memory"), ("infinispan-store", "file store")):
    for label, name in (("PostgreSQL", "ferrod-PostgreSQL"), ("SQLite", "ferrod-SQLite")):
        for mix, op in (("get", "GET"), ("put", "PUT"), ("keycloak", "Keycloak mix")):
            ratio(f"ferrod ({label}) {op} / Infinispan ({what}) {op}", fig(f"{name}-{mix}"),
                  fig(f"{ispn}-{mix}"))
        rss = fig(f"{name}-keycloak", "server_peak_rss_kib")
        ispn_rss = fig(f"{ispn}-keycloak", "server_peak_rss_kib")
        ratio(f"ferrod ({label}) peak RSS / Infinispan ({what}) peak RSS", rss, ispn_rss)

# CPU per operation: what each system costs the machine per op, whatever else runs on it.
lines.append("")
lines.append("CPU time per operation (user + system, µs), measured over the same windows:")
lines.append("")
lines.append("| run | op | server | database | server + database | load generator |")
lines.append("|---|---|---:|---:|---:|---:|")
def cpu_total(d):
    c = d.get("cpu_us_per_op") or {}
    parts = [c.get("server"), c.get("db")]
    if all(p is None for p in parts):
        return None
    return round(sum(p for p in parts if p is not None), 1)
for r in runs.values():
    d = r["data"]
    c = d.get("cpu_us_per_op")
    if not c:
        continue
    unit = " (per row)" if "rows_per_tx" in d else ""
    lines.append("| {} | {}{} | {} | {} | {} | {} |".format(
        r["system"], r["op"], unit, fmt(c.get("server")), fmt(c.get("db")),
        fmt(cpu_total(d)), fmt(c.get("client"))))
lines.append("")
lines.append("| CPU cost ratio (durable writes per CPU-second of server + database) | value | throughput target |")
lines.append("|---|---:|---|")
best_multi = max((r for n, r in runs.items() if n.startswith("pg-multi-upsert")),
                 key=lambda r: r["data"]["rows_per_sec"], default=None)
def per_cpu(d):
    t = cpu_total(d) if d else None
    return 1e6 / t if t else None
multi_eff = per_cpu(best_multi["data"]) if best_multi else None
single_eff = per_cpu(runs["pg-single-upsert"]["data"]) if "pg-single-upsert" in runs else None
for label, name in (("PostgreSQL", "ferrod-PostgreSQL"),):
    d = runs.get(f"{name}-put", {}).get("data")
    eff = per_cpu(d)
    for what, anchor, target in ((f"PG {batch}-row upsert", multi_eff, 0.5),
                                 (f"PG single-row upsert ({pgc} clients)", single_eff, 5)):
        if eff is None or anchor is None:
            lines.append(f"| ferrod ({label}) PUT / {what} | - | >= {target} |")
        else:
            lines.append(f"| ferrod ({label}) PUT / {what} | {eff / anchor:.2f} | >= {target} |")
text = "\n".join(lines) + "\n"
open(summary_path, "w").write(text)
print(text)
EOF
log "results in $OUT (results.jsonl, summary.md, logs)"
