'use strict';
// Scans Keycloak's logs for WARN/ERROR lines of its remote-cache layer: categories
// org.keycloak.*infinispan* and org.infinispan.*. Each allowed line is listed in ALLOWED with the
// reason it is expected; everything else fails the stage.

const fs = require('node:fs');

const LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (WARN|ERROR)\s+\[([^\]]+)\]\s+\(([^)]*)\)\s?(.*)$/;

function isRemoteCacheCategory(category) {
  return category.startsWith('org.infinispan') || (category.startsWith('org.keycloak') && /infinispan/i.test(category));
}

/**
 * Expected lines. `when` names the step during which it may appear ('always' = any time): the
 * scenario records the time window of each step that deliberately breaks connections.
 */
const ALLOWED = [
  {
    // 26.4+ creates its caches itself: the HotRod client PINGs each cache first, logs the
    // server's CacheNotFoundException at WARN, then runs @@cache@getorcreate (keycloak-contract
    // §2.3). Appears once per cache on a fresh ferrod database.
    re: /ISPN004005: Error received from the server: .*CacheNotFoundException: Cache with name '(work|loginFailures|authenticationSessions|actionTokens|sessions|clientSessions|offlineSessions|offlineClientSessions)' not found/,
    when: 'always',
  },
  {
    // kill -9 of *both* replicas is a real outage: requests Keycloak sends in the second before
    // the replicas are back (its own background pings, listener re-registration) fail after the
    // client's retries. Only during that step.
    re: /ISPN004007: Exception encountered\. Retry \d+ out of \d+: .*TransportException.*(ISPN004071: Connection to .* was closed while waiting for response|Connection refused)/,
    when: 'kill9',
  },
  {
    // Same outage, 15.x client: a pooled connection reset while no request was pending on it
    // (the replica behind it was killed) is logged as an error "in unknown operation".
    re: /ISPN004098: Closing connection .* due to transport error: .*TransportException:: ISPN004077: Closing channel .* due to error in unknown operation/,
    when: 'kill9',
  },
  {
    // Same outage, Keycloak 26.7 (client 16.0.x): the client's first attempt to move a client
    // listener (work-cache invalidation, session-expiration hash) to another server fails while no
    // replica is up, and it logs this. The step after the crash checks that node 2 still sees
    // node 1's realm changes, i.e. the work-cache listener is registered again.
    re: /Error encountered trying to add listener org\.keycloak\.(cluster\.infinispan\.remote\.RemoteInfinispanNotificationManager|models\.sessions\.infinispan\.expiration\.ConsistentHash|models\.sessions\.infinispan\.listeners\.RemoteUserSessionExpirationListener)@/,
    when: 'kill9',
  },
  {
    // Keycloak 26.7 (client 16.0.x) gets ___protobuf_metadata and reads its declared storage
    // type, application/x-java-object, as Infinispan declares that cache (its schema registry
    // stores Java strings); the ProtoStream client then logs this performance hint once per node.
    // Keycloak still writes and reads the schema with protostream-wrapped strings, which ferrod
    // (like Infinispan) accepts: the schema steps and every query afterwards pass.
    re: /ISPN004116: Client cannot marshall the server's key media type \('application\/x-java-object'\)/,
    when: 'always',
  },
  {
    // A Keycloak node shutting down removes its client listeners while ferrod may already have
    // queued an event for one of them on that connection; the client drops the event and logs
    // it. Only while the Keycloak nodes restart.
    re: /ISPN004079: Unexpected listenerId/,
    when: 'kcRestart',
  },
];

// Log timestamps are the JVM's local time, as is Date parsing without a zone here.
const lineTime = (line) => new Date(line.slice(0, 23).replace(' ', 'T').replace(',', '.')).getTime();
const SLACK_MS = 2000;

/**
 * Returns the disallowed lines of `file` (from byte `from` on), each { level, category, text }.
 * `windows`: [{ name, from, to }] (epoch ms) of the steps named in ALLOWED.when.
 */
function scanLog(file, { from = 0, windows = [] } = {}) {
  const text = fs.readFileSync(file, 'utf8').slice(from);
  const bad = [];
  for (const line of text.split('\n')) {
    const m = line.match(LINE);
    if (!m) continue;
    const [, level, category, , msg] = m;
    if (!isRemoteCacheCategory(category)) continue;
    const t = lineTime(line);
    const during = (name) => windows.some((w) => w.name === name && t >= w.from - SLACK_MS && t <= w.to + SLACK_MS);
    const allowed = ALLOWED.some((a) => a.re.test(msg) && (a.when === 'always' || during(a.when)));
    if (!allowed) bad.push({ level, category, text: line.slice(0, 600) });
  }
  return bad;
}

module.exports = { scanLog, ALLOWED };
