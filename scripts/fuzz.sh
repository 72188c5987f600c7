#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target: the codec's request decoder and a whole server
# connection. Each target runs for SECONDS (default 60) from its committed seeds; any crash,
# leak, timeout or out-of-memory ends the script with a non-zero status and leaves the input
# in crates/*/fuzz/artifacts/<target>/ (turn it into a regression test, see the fuzz READMEs).
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs cargo-fuzz (installed here if absent) and a nightly toolchain; without nightly it builds
# with the stable compiler and RUSTC_BOOTSTRAP=1. New corpus entries go to a temporary
# directory: the committed seeds stay small.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-60}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if cargo +nightly --version >/dev/null 2>&1; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The connection target's SQLite database, removed with the rest.
export FERROD_FUZZ_DB_DIR="$WORK/db"
mkdir -p "$FERROD_FUZZ_DB_DIR"

run_target() {
  local dir=$1 target=$2
  echo "-- $dir: $target for ${SECONDS_PER_TARGET}s"
  mkdir -p "$WORK/$target"
  (cd "$ROOT/$dir" &&
    nice -n 19 "${FUZZ[@]}" run "$target" "$WORK/$target" "corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=60 -max_len=4096 -print_final_stats=1)
}

run_target crates/codec/fuzz request_decoder
run_target crates/server/fuzz connection
echo "fuzzing: no crash"
