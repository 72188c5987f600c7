#!/usr/bin/env bash
# Start a real Infinispan HotRod server (reference target of the proto-tests) in the foreground.
#
#   reference-server.sh <15|16> <port> <data-dir>
#
# Listens on 127.0.0.1:<port>; caches (see proto-tests/README.md): default (""), proto, text, raw,
# expiring, each persisted under <data-dir>, kept across a graceful stop (SIGTERM/SIGINT).
# Prints READY on stdout once it accepts connections; logs go to stderr.
# The first run builds the launcher with Maven (downloads dependencies); later runs are offline.
# Env: REFERENCE_SERVER_STORE=none (no persistence: every cache in memory only),
#      REFERENCE_SERVER_JAVA_OPTS (default "-Xmx1g -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"), JAVA (default: java on PATH / $JAVA_HOME).
set -euo pipefail

if [ $# -ne 3 ] || { [ "$1" != 15 ] && [ "$1" != 16 ]; }; then
  echo "usage: $0 <15|16> <port> <data-dir>" >&2
  exit 2
fi
line=$1 port=$2 data=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module="$here/reference-server/ispn$line"
cp_file="$module/target/classpath.txt"
classes="$module/target/classes"
stamp="$module/target/.launcher-built"

needs_build() {
  [ -f "$stamp" ] && [ -s "$cp_file" ] || return 0
  [ -f "$classes/ferrod/prototests/reference/ReferenceServer.class" ] || return 0
  [ -n "$(find "$here/reference-server/src" "$module/pom.xml" "$here/pom.xml" -newer "$stamp" -type f 2>/dev/null | head -1)" ] && return 0
  # every jar on the classpath must still be in the local repository
  local IFS=:
  for jar in $(cat "$cp_file"); do [ -f "$jar" ] || return 0; done
  return 1
}

if needs_build; then
  mkdir -p "$module/target"
  # serialise concurrent first runs (several harnesses may start servers at once)
  exec 9>"$module/target/.build.lock"
  flock 9
  if needs_build; then
    echo "reference-server: building Infinispan $line launcher with Maven..." >&2
    mvn -B -q -ntp -Dstyle.color=never -f "$module/pom.xml" compile >&2
    touch "$stamp"
  fi
  flock -u 9
  exec 9>&-
fi

if [ -n "${JAVA:-}" ]; then java_bin=$JAVA
elif [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then java_bin=$JAVA_HOME/bin/java
else java_bin=java; fi

mkdir -p "$data"
# shellcheck disable=SC2086
exec "$java_bin" ${REFERENCE_SERVER_JAVA_OPTS:--Xmx1g -XX:TieredStopAtLevel=1 -XX:+UseSerialGC} \
  -Djava.net.preferIPv4Stack=true \
  -Dlog4j2.level=WARN \
  -cp "$classes:$(cat "$cp_file")" \
  ferrod.prototests.reference.ReferenceServer "$port" "$data"
