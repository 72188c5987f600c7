#!/usr/bin/env bash
# proto-tests/keycloak: two real Keycloak nodes against two ferrod replicas sharing one PostgreSQL.
#
#   proto-tests/keycloak/run.sh [test files...]
#
# Installs what it needs on a clean checkout: the Keycloak distributions come from Maven Central
# (org.keycloak:keycloak-quarkus-dist:<version>:zip, cached in ~/.m2) and are unpacked and built
# (`kc.sh build`) once per version and mode under proto-tests/keycloak/.cache/ (reused while the
# build options are unchanged).
#
# Env: KC_VERSIONS   Keycloak versions (default "26.4.7 26.7.3")
#      KC_MODES      modes (default "multi-site clusterless"); see lib/modes.js
#      KC_BASELINE   1 (default) also runs the restart step on Keycloak's embedded caches (no ferrod)
#      KC_HOTROD_ROUTE  proxy (default: a TCP round-robin proxy in front of the replicas, standing
#                    in for a Kubernetes Service) or list (HotRod client server_list of both replicas)
#      KC_HOTROD_SECURE  1 (default): TLS (test CA made with openssl) + SASL SCRAM-SHA-512 between
#                    Keycloak and ferrod, as in production; 0: plain (see lib/security.js)
#      KC_HOTROD_ROLE  role of Keycloak's HotRod user (default deployer)
#      FERROD_BIN    (default <repo>/target/debug/ferrod; built with `cargo build -p ferrod` if absent)
#      FERROD_TEST_PG_URL  (default: whatever scripts/pg-start.sh prints)
#      KC_JAVA_HOME  JVM for Keycloak (default: the system java, 17)
# Logs: proto-tests/keycloak/logs/<version>-<mode>/ (Keycloak nodes, ferrod replicas, SMTP).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
HERE=$PWD
REPO=$(cd ../.. && pwd)

KC_VERSIONS=${KC_VERSIONS:-"26.4.7 26.7.3"}
KC_MODES=${KC_MODES:-"multi-site clusterless"}
export KC_VERSIONS KC_MODES
CACHE=$HERE/.cache
mkdir -p "$CACHE/dist"

if [ -z "${FERROD_TEST_PG_URL:-}" ]; then
  FERROD_TEST_PG_URL=$("$REPO/scripts/pg-start.sh")
  export FERROD_TEST_PG_URL
fi
if [ "${KC_HOTROD_SECURE:-1}" = 1 ] && ! command -v openssl > /dev/null; then
  echo "keycloak: openssl makes the test CA and server certificate; install it or set KC_HOTROD_SECURE=0" >&2
  exit 1
fi
export FERROD_BIN=${FERROD_BIN:-$REPO/target/debug/ferrod}
if [ ! -x "$FERROD_BIN" ]; then
  (cd "$REPO" && cargo build -p ferrod)
fi

# Build options per mode (the options `kc.sh build` bakes into the distribution). Runtime options
# live in lib/keycloak.js. Keep in step with lib/modes.js.
build_opts() {
  case "$1" in
    multi-site) echo "--db=postgres --health-enabled=true --features=multi-site" ;;
    clusterless) echo "--db=postgres --health-enabled=true --features=clusterless --features-disabled=persistent-user-sessions" ;;
    # The no-ferrod baseline: Keycloak's own embedded caches (started with --cache=local, no
    # JGroups between test nodes), sessions only in memory (persistent-user-sessions off).
    embedded) echo "--db=postgres --health-enabled=true --features-disabled=persistent-user-sessions" ;;
    *) echo "unknown mode $1" >&2; return 1 ;;
  esac
}

# One download + unpack per version, one `kc.sh build` per version and mode. Concurrent runs are
# serialised with flock (the unpack and build write into the shared cache).
exec 9>"$CACHE/.lock"
flock 9
# `embedded` is always built: it also prepares the migrated template database of each version.
modes_needed="embedded $KC_MODES"
for v in $KC_VERSIONS; do
  zip=$HOME/.m2/repository/org/keycloak/keycloak-quarkus-dist/$v/keycloak-quarkus-dist-$v.zip
  if [ ! -f "$zip" ]; then
    echo "keycloak: downloading keycloak-quarkus-dist $v from Maven Central" >&2
    mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:$v:zip" -Dtransitive=false >&2
  fi
  for mode in $modes_needed; do
    dist=$CACHE/dist/$v-$mode
    opts=$(build_opts "$mode")
    if [ -f "$dist/.built" ] && [ "$(cat "$dist/.built")" = "$opts" ]; then continue; fi
    echo "keycloak: unpacking and building $v ($mode): kc.sh build $opts" >&2
    rm -rf "$dist" "$dist.tmp"
    mkdir -p "$dist.tmp"
    unzip -q "$zip" -d "$dist.tmp"
    mv "$dist.tmp/keycloak-$v" "$dist"
    rmdir "$dist.tmp"
    # shellcheck disable=SC2086
    JAVA_HOME=${KC_JAVA_HOME:-${JAVA_HOME:-}} "$dist/bin/kc.sh" build $opts > "$dist/build.log" 2>&1 \
      || { cat "$dist/build.log" >&2; exit 1; }
    echo "$opts" > "$dist/.built"
  done
done
flock -u 9

if [ $# -eq 0 ]; then
  set -- test/*.test.js
fi
exec node --test --test-concurrency=1 --test-reporter=spec "$@"
