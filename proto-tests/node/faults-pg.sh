#!/usr/bin/env bash
# A dedicated PostgreSQL 15 cluster for proto-tests/node/test/faults.test.js, so the fault tests can
# stop and restart PostgreSQL without disturbing other suites that share the machine's main cluster.
#
#   faults-pg.sh [start]   create the cluster if absent, start it, ensure role+database; print the URL
#   faults-pg.sh fresh     as start, but drop and recreate the database first (empty schema)
#   faults-pg.sh stop      stop the cluster (fast shutdown: open connections are terminated)
#   faults-pg.sh url       print the URL only
#
# Idempotent. Only the URL goes to stdout. Env: FAULTS_PG_PORT (5439), FAULTS_PG_CLUSTER (ferrodfaults).
set -euo pipefail

VER=15
NAME=${FAULTS_PG_CLUSTER:-ferrodfaults}
PORT=${FAULTS_PG_PORT:-5439}
PG_USER=ferrod
PG_PASSWORD=ferrod
PG_DB=ferrod_faults
URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
cmd=${1:-start}

psql_admin() { su postgres -c "psql -p $PORT -v ON_ERROR_STOP=1 -qtA $*"; }
is_online() { pg_lsclusters -h | awk -v v=$VER -v n="$NAME" '$1==v && $2==n {print $4}' | grep -q online; }

case "$cmd" in
  url) echo "$URL"; exit 0 ;;
  stop)
    if is_online; then pg_ctlcluster $VER "$NAME" stop -m fast >&2; fi
    exit 0 ;;
  start|fresh) ;;
  *) echo "usage: $0 [start|fresh|stop|url]" >&2; exit 2 ;;
esac

if ! pg_lsclusters -h | awk -v v=$VER -v n="$NAME" '$1==v && $2==n' | grep -q .; then
  pg_createcluster $VER "$NAME" --port "$PORT" >&2
fi
if ! is_online; then pg_ctlcluster $VER "$NAME" start >&2; fi
for _ in $(seq 1 60); do
  if su postgres -c "psql -p $PORT -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
if [ "$(psql_admin "-c \"select 1 from pg_roles where rolname='$PG_USER'\"")" != "1" ]; then
  psql_admin "-c \"create role $PG_USER login createdb password '$PG_PASSWORD'\"" >&2
fi
if [ "$cmd" = fresh ]; then
  psql_admin "-c \"drop database if exists $PG_DB with (force)\"" >&2
fi
if [ "$(psql_admin "-c \"select 1 from pg_database where datname='$PG_DB'\"")" != "1" ]; then
  psql_admin "-c \"create database $PG_DB owner $PG_USER\"" >&2
fi
echo "$URL"
