#!/usr/bin/env bash
# The whole suite: unit and integration tests (SQLite and PostgreSQL), then ferrod driven by the
# real clients (Java 15.0.x and 16.0.x, npm `infinispan`), each also against a real Infinispan, and
# real Keycloak nodes end to end. Installs or starts whatever it needs (PostgreSQL, Maven and npm
# dependencies, Keycloak distributions) itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never

step() { printf '\n==== %s ====\n' "$*"; }

step "PostgreSQL"
FERROD_TEST_PG_URL=$(./scripts/pg-start.sh)
export FERROD_TEST_PG_URL
echo "using $FERROD_TEST_PG_URL"

step "build"
cargo build --workspace --all-targets

step "cargo test (unit, codec properties, store and server integration on SQLite and PostgreSQL)"
cargo test --workspace -- --test-threads 2

step "fuzzing: 60 s per target (codec request decoder, whole connection); a crash fails the suite"
./scripts/fuzz.sh "${FERROD_FUZZ_SECONDS:-60}"

export FERROD_BIN="$ROOT/target/debug/ferrod"

step "Java HotRod clients 15.0.x and 16.0.x"
./proto-tests/java/run.sh

step "npm infinispan client"
./proto-tests/node/run.sh

step "Keycloak 26.4.7 and 26.7.3 (two nodes) against two ferrod replicas"
./proto-tests/keycloak/run.sh

step "done"
echo "all suites passed"
