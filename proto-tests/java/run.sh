#!/usr/bin/env bash
# Runs the Java HotRod suites (15.0.x and 16.0.x clients, every protocol version they speak)
# against ferrod and the Infinispan reference server. Exits non-zero on any failure.
#
# Env: TARGET=ferrod|infinispan|both (default both); FERROD_BIN (default <repo>/target/debug/ferrod,
# built with `cargo build -p ferrod` when missing or stale); FERROD_DATABASE_URL (postgres://... to
# run ferrod on PostgreSQL instead of a SQLite file per server); PROTOCOL_VERSIONS (e.g. "4.0,AUTO");
# MODULES (default "client15,client16"); TESTS (a Surefire -Dtest filter, e.g. "RestartTest").
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$here"

export TARGET=${TARGET:-both}
modules=${MODULES:-client15,client16}
mvn_common=(-B -ntp -Dstyle.color=never)

case ",$TARGET," in
  *,infinispan,*) wants_ferrod=false ;;
  *) wants_ferrod=true ;;
esac
case ",$TARGET," in *,ferrod,*|*,both,*|*,all,*) wants_ferrod=true ;; esac

if $wants_ferrod && [ -z "${FERROD_BIN:-}" ]; then
  if command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo build -p ferrod" >&2
    if ! (cd "$repo" && cargo build -q -p ferrod); then
      echo "run.sh: WARNING: cargo build -p ferrod failed; ferrod tests will fail" >&2
    fi
  fi
fi

echo "run.sh: building (Maven downloads dependencies on the first run)" >&2
if ! mvn "${mvn_common[@]}" -q test-compile; then
  echo "run.sh: build failed" >&2
  exit 1
fi
# the reactor just compiled the reference-server launchers: tell reference-server.sh so
touch reference-server/ispn15/target/.launcher-built reference-server/ispn16/target/.launcher-built

rm -rf client15/target/surefire-reports client16/target/surefire-reports
test_args=()
[ -n "${TESTS:-}" ] && test_args+=("-Dtest=${TESTS}" -Dsurefire.failIfNoSpecifiedTests=false)
mvn "${mvn_common[@]}" -pl "$modules" -Dmaven.test.failure.ignore=true "${test_args[@]}" surefire:test \
  | grep -v -E '^\[INFO\] (Download|Building|---|$)|^\[INFO\] -{20,}'
mvn_status=${PIPESTATUS[0]}

# Totals over every Surefire report, failures listed by test and case.
python3 - "$modules" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
total = failed = skipped = 0
lines = []
for module in sys.argv[1].split(","):
    for f in sorted(glob.glob(f"{module}/target/surefire-reports/TEST-*.xml")):
        for tc in ET.parse(f).getroot().iter("testcase"):
            total += 1
            bad = tc.find("failure")
            if bad is None:
                bad = tc.find("error")
            if tc.find("skipped") is not None:
                skipped += 1
            elif bad is not None:
                failed += 1
                msg = (bad.get("message") or bad.get("type") or "").strip().splitlines()
                lines.append(f"  [{module}] {tc.get('classname').rsplit('.',1)[-1]}.{tc.get('name')}: "
                             f"{bad.get('type','')}: {msg[0][:300] if msg else ''}")
print()
print("==== proto-tests/java summary ====")
for l in lines:
    print(l)
passed = total - failed - skipped
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or total == 0 else 0)
PY
summary_status=$?

if [ "$mvn_status" -ne 0 ]; then
  echo "run.sh: Maven exited with status $mvn_status" >&2
  exit "$mvn_status"
fi
exit "$summary_status"
