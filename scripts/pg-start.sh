#!/usr/bin/env bash
# Starts the machine's PostgreSQL 15 cluster if it is not running and makes sure the role and the
# database the tests use exist. Prints the connection URL on stdout (nothing else goes to stdout).
# Idempotent: safe to run again while the cluster is up.
set -euo pipefail

PG_USER=${FERROD_PG_USER:-ferrod}
PG_PASSWORD=${FERROD_PG_PASSWORD:-ferrod}
PG_DB=${FERROD_PG_DB:-ferrod_test}
PG_PORT=${FERROD_PG_PORT:-5432}

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "pg-start: PostgreSQL is not installed; installing postgresql-15" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2
fi
if ! pg_lsclusters -h 2>/dev/null | grep -q '^15 *main'; then
  pg_createcluster 15 main >&2
fi
if ! pg_lsclusters -h | awk '$1==15 && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster 15 main start >&2
fi
for _ in $(seq 1 60); do
  if su postgres -c "psql -p $PG_PORT -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
psql_admin() { su postgres -c "psql -p $PG_PORT -v ON_ERROR_STOP=1 -qtA $*"; }
if [ "$(psql_admin "-c \"select 1 from pg_roles where rolname='$PG_USER'\"")" != "1" ]; then
  psql_admin "-c \"create role $PG_USER login createdb password '$PG_PASSWORD'\"" >&2
fi
if [ "$(psql_admin "-c \"select 1 from pg_database where datname='$PG_DB'\"")" != "1" ]; then
  psql_admin "-c \"create database $PG_DB owner $PG_USER\"" >&2
fi
echo "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
