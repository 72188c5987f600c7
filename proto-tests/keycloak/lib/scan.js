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
    // client's retries. Only during that step. With TLS (the default) the proxy still accepts the
    // TCP connection and closes it when no replica does, so the client sees the close during its
    // TLS handshake (ClosedChannelException, "Connection closed while SSL/TLS handshake was in
    // progress"), which the 16.0.x client reports as ISPN004077 "error in unknown operation" and
    // the 15.0.x client as the bare ClosedChannelException; plain connections see ISPN004071 or,
    // on the list route, connection refused.
    re: /ISPN004007: Exception encountered\. Retry \d+ out of \d+: .*TransportException.*(ISPN004071: Connection to .* was closed while waiting for response|Connection refused|ISPN004077: Closing channel .* due to error in unknown operation|java\.nio\.channels\.ClosedChannelException$)/,
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
    // Keycloak 26.7 (client 16.0.x) opens ___protobuf_metadata to upload its schema; a real
    // Infinispan server draws the same warning, so ferrod announces what Infinispan announces.
    // Infinispan 15.0.19 and 16.0.14 both declare that cache with key and value media type
    // application/x-java-object (ProtobufMetadataManagerImpl#getProtobufMetadataCacheConfig) and
    // send the cache's declared types in the PING response (Encoder2x#writeHeader). The 16.0.x
    // client's RemoteCacheImpl#resolveStorage logs ISPN004116 whenever its marshaller registry has
    // nothing for the server's key type (bytes, text/plain, Java serialization, ProtoStream: not
    // x-java-object). The 15.0.x client skips the internal caches there (ISPN-16337,
    // InternalCacheNames.GLOBAL_STATE_INTERNAL_CACHES); that exemption was lost when the new client
    // became the default in 16.0 (ISPN-16803) and is still absent on 16.0.x/16.1.x/16.2.x/main.
    // Keycloak still writes and reads the schema as ProtoStream-wrapped strings, which the server
    // transcodes (ferrod reads them as written): the schema and every query afterwards work.
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
