'use strict';
// ferrod replicas for Keycloak and the address Keycloak's HotRod client uses to reach them.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { Proc, sleep, freePort, canConnect } = require('./procs');

const START_TIMEOUT_MS = 60_000;

/** One ferrod replica: a fixed port and database, restartable with any binary. */
class Replica {
  /** `args`: further arguments (TLS and credentials, lib/security.js). */
  constructor(name, { bin, databaseUrl, dir, logFile, args = [] }) {
    this.name = name;
    this.args = args;
    this.bin = bin;
    this.databaseUrl = databaseUrl;
    this.dir = dir;
    this.logFile = logFile;
    this.port = undefined;
    this.proc = undefined;
  }

  async start(bin = this.bin) {
    if (!this.port) this.port = await freePort();
    fs.mkdirSync(this.dir, { recursive: true });
    const args = ['--listen', `127.0.0.1:${this.port}`, '--database-url', this.databaseUrl, ...this.args];
    const env = { ...process.env, FERROD_LOG: process.env.FERROD_LOG || 'info' };
    this.proc = new Proc(this.name, bin, args, { env, cwd: this.dir, logFile: this.logFile });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (!this.proc.running) {
        throw new Error(`ferrod ${this.name} exited during startup (${JSON.stringify(this.proc.exit)}); log: ${this.logFile}`);
      }
      // ferrod binds its port only after it has loaded its caches from SQL.
      if (await canConnect(this.port)) return;
      await sleep(100);
    }
    await this.proc.kill9();
    throw new Error(`ferrod ${this.name} not listening on ${this.port} after ${START_TIMEOUT_MS} ms; log: ${this.logFile}`);
  }

  /** Graceful stop (SIGTERM: ferrod answers the requests it started, closes every connection, exits). */
  async stop() {
    if (this.proc) await this.proc.stop();
    await this.waitPortFree();
  }

  async kill9() {
    if (this.proc) await this.proc.kill9();
    await this.waitPortFree();
  }

  async waitPortFree() {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await canConnect(this.port))) await sleep(50);
  }
}

/**
 * A TCP round-robin proxy in front of the replicas: what a Kubernetes Service gives Keycloak.
 * Each new connection goes to the next replica that accepts it; when a replica is down its
 * connections close and the client's reconnects land on the others. No HotRod parsing.
 */
class RoundRobinProxy {
  constructor(backends /* () => number[] ports */, tap /* optional (Buffer) => void, client->server bytes */) {
    this.backends = backends;
    this.tap = tap;
    this.next = 0;
    this.server = undefined;
    this.port = undefined;
    this.sockets = new Set();
    this.refused = 0; // client connections closed because no replica accepted them
  }

  async start() {
    this.port = await freePort();
    this.server = net.createServer((client) => this.accept(client));
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', resolve);
    });
  }

  accept(client) {
    client.pause();
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    client.on('error', () => {});
    const ports = this.backends();
    const tryFrom = (i) => {
      if (i >= ports.length) {
        this.refused += 1;
        client.destroy();
        return;
      }
      const port = ports[(this.next + i) % ports.length];
      const upstream = net.connect({ host: '127.0.0.1', port });
      upstream.once('error', () => {
        if (!upstream.connectedOnce) tryFrom(i + 1);
      });
      upstream.once('connect', () => {
        upstream.connectedOnce = true;
        this.next = (this.next + i + 1) % ports.length;
        this.sockets.add(upstream);
        upstream.once('close', () => { this.sockets.delete(upstream); client.destroy(); });
        upstream.on('error', () => upstream.destroy());
        client.once('close', () => upstream.destroy());
        if (this.tap) client.on('data', (d) => this.tap(d));
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    tryFrom(0);
  }

  async stop() {
    for (const s of this.sockets) s.destroy();
    if (this.server) await new Promise((r) => this.server.close(() => r()));
  }
}

/**
 * Diagnostics only: finds HotRod QUERY (0x1F) requests in a chunk of client bytes and returns
 * their cache and Ickle text, so the report can say which query on which cache ferrod refused.
 * A heuristic scan (request magic 0xA0, message id vLong, version 3.1/4.0/4.1, opcode 0x1F, cache
 * name; the query string is the first Ickle-looking text after it), not a frame parser: a query
 * split across TCP reads is missed.
 */
function sniffQueries(chunk) {
  const s = chunk.toString('latin1');
  const found = [];
  const head = /\xA0[\x80-\xFF]{0,9}[\x00-\x7F][\x1F\x28\x29]\x1F([\x01-\x7F])/g;
  let m;
  while ((m = head.exec(s)) !== null) {
    const len = m[1].charCodeAt(0);
    const start = m.index + m[0].length;
    const cache = s.slice(start, start + len);
    const rest = s.slice(start + len, start + len + 4096);
    const q = rest.match(/(?:DELETE FROM|SELECT|FROM) [\x20-\x7E]+/);
    found.push({ cache, query: q ? q[0] : '(query text not found in this read)' });
  }
  return found;
}

/**
 * How Keycloak reaches the replicas (KC_HOTROD_ROUTE):
 *   proxy  one address, a round-robin TCP proxy (the default; see README.md)
 *   list   the HotRod client's own server list: cache-remote-host/port name replica 1, and a
 *          properties file (spi-cache-remote--default--properties-file, Keycloak 26.3+) adds
 *          replica 2 as infinispan.client.hotrod.server_list
 */
class HotRodRoute {
  constructor(kind, replicas, dir) {
    if (kind !== 'proxy' && kind !== 'list') throw new Error(`KC_HOTROD_ROUTE: unknown route '${kind}' (proxy|list)`);
    this.kind = kind;
    this.replicas = replicas;
    this.dir = dir;
    this.proxy = undefined;
  }

  async start() {
    if (this.kind === 'proxy') {
      const log = path.join(this.dir, 'hotrod-queries.log');
      this.proxy = new RoundRobinProxy(() => this.replicas.map((r) => r.port), (d) => {
        for (const q of sniffQueries(d)) fs.appendFileSync(log, `${new Date().toISOString()} ${q.cache}: ${q.query}\n`);
      });
      await this.proxy.start();
    }
  }

  /** Keycloak runtime options for this route. */
  keycloakOptions() {
    if (this.kind === 'proxy') {
      return [`--cache-remote-host=127.0.0.1`, `--cache-remote-port=${this.hotrodPort()}`];
    }
    const file = path.join(this.dir, 'hotrod-client.properties');
    const others = this.replicas.slice(1).map((r) => `127.0.0.1:${r.port}`).join(';');
    fs.writeFileSync(file, `# written by proto-tests/keycloak: the other replicas (replica 1 is cache-remote-host)\n`
      + `infinispan.client.hotrod.server_list=${others}\n`);
    return [`--cache-remote-host=127.0.0.1`, `--cache-remote-port=${this.hotrodPort()}`,
      `--spi-cache-remote--default--properties-file=${file}`];
  }

  /** The port Keycloak's cache-remote-port names. */
  hotrodPort() {
    return this.kind === 'proxy' ? this.proxy.port : this.replicas[0].port;
  }

  async stop() {
    if (this.proxy) await this.proxy.stop();
  }
}

module.exports = { Replica, RoundRobinProxy, HotRodRoute, sniffQueries };
