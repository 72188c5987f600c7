'use strict';
// Starting, restarting and stopping the servers under test.
//
//   ferrod      $FERROD_BIN (default <repo>/target/debug/ferrod) on a free loopback port, SQLite in
//               a temporary directory, or $FERROD_DATABASE_URL (postgres://...) when set.
//   infinispan  proto-tests/java/reference-server.sh <line> <port> <data-dir>, a real Infinispan
//               server (release line $REFERENCE_LINE, default 16; a test file may pin one, e.g.
//               query.test.js needs 15: the 16.x reference is built without remote query).
//
// Both declare the same caches: default (""), proto, text, raw, expiring (default lifespan 2 s).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const NODE_DIR = path.resolve(__dirname, '..');
const REPO = path.resolve(NODE_DIR, '..', '..');
const LOG_DIR = path.join(NODE_DIR, 'logs');

const START_TIMEOUT_MS = Number(process.env.SERVER_START_TIMEOUT_MS || 0) || undefined;
const STOP_TIMEOUT_MS = 30_000;

// The caches of the reference server (proto-tests/java/reference-server.sh), declared alike for
// ferrod. Media types mirror the reference exactly, so both targets answer PING the same way.
const FERROD_TOML = `# written by proto-tests/node: the caches of the reference server
[[cache]]
name = "proto"
key_media_type = "application/x-protostream"
value_media_type = "application/x-protostream"

[[cache]]
name = "text"
key_media_type = "text/plain"
value_media_type = "text/plain"

[[cache]]
name = "raw"
key_media_type = "application/octet-stream"
value_media_type = "application/octet-stream"

[[cache]]
name = "expiring"
key_media_type = "application/x-protostream"
value_media_type = "application/x-protostream"
lifespan_ms = 2000
`;

/** Targets selected with TARGET=ferrod|infinispan|both (default both). */
function targets() {
  const t = (process.env.TARGET || 'both').trim().toLowerCase();
  if (t === 'both' || t === '') return ['ferrod', 'infinispan'];
  const list = t.split(',').map((s) => s.trim()).filter(Boolean);
  for (const x of list) {
    if (x !== 'ferrod' && x !== 'infinispan') throw new Error(`TARGET: unknown target '${x}' (ferrod|infinispan|both)`);
  }
  return list;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => { s.destroy(); resolve(false); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Every server process group still alive is killed when this process exits, whatever happened.
const live = new Set();
process.on('exit', () => {
  for (const pid of live) {
    try { process.kill(-pid, 'SIGKILL'); } catch (_) { /* gone */ }
  }
});

class Server {
  /**
   * @param {'ferrod'|'infinispan'} kind
   * @param {string} name short label used for the data directory and the log file
   * @param {{ferrodArgs?: string[], referenceLine?: string}} opts ferrodArgs: extra command-line
   *   arguments for ferrod; referenceLine: the Infinispan release line (15|16) this file needs,
   *   over $REFERENCE_LINE
   */
  constructor(kind, name, opts = {}) {
    this.kind = kind;
    this.name = name;
    /** Extra command-line arguments for ferrod (TLS settings, a credentials file). */
    this.ferrodArgs = opts.ferrodArgs || [];
    this.referenceLine = opts.referenceLine;
    this.port = undefined;
    this.proc = undefined;
    this.dir = undefined;
    this.logFile = undefined;
    this.starts = 0;
  }

  get address() {
    return { host: '127.0.0.1', port: this.port };
  }

  command() {
    if (this.kind === 'ferrod') {
      const bin = process.env.FERROD_BIN || path.join(REPO, 'target', 'debug', 'ferrod');
      if (!fs.existsSync(bin)) {
        throw new Error(`ferrod binary not found at ${bin} (build it with 'cargo build -p ferrod' or set FERROD_BIN)`);
      }
      const dbUrl = process.env.FERROD_DATABASE_URL || `sqlite://${path.join(this.dir, 'ferrod.db')}`;
      return {
        cmd: bin,
        args: ['--listen', `127.0.0.1:${this.port}`, '--database-url', dbUrl,
          '--config', path.join(this.dir, 'ferrod.toml'), ...this.ferrodArgs],
        readyLine: null,
      };
    }
    const script = process.env.REFERENCE_SERVER_SH || path.join(REPO, 'proto-tests', 'java', 'reference-server.sh');
    if (!fs.existsSync(script)) throw new Error(`reference server script not found at ${script}`);
    const line = this.referenceLine || process.env.REFERENCE_LINE || '16';
    return { cmd: 'bash', args: [script, line, String(this.port), path.join(this.dir, 'data')], readyLine: 'READY' };
  }

  async start() {
    if (!this.dir) {
      this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `ferrod-node-${this.kind}-${this.name}-`));
      fs.writeFileSync(path.join(this.dir, 'ferrod.toml'), FERROD_TOML);
      fs.mkdirSync(LOG_DIR, { recursive: true });
      this.logFile = path.join(LOG_DIR, `${this.name}-${this.kind}.log`);
      fs.writeFileSync(this.logFile, '');
    }
    if (!this.port) this.port = await freePort();
    const { cmd, args, readyLine } = this.command();
    this.starts += 1;
    fs.appendFileSync(this.logFile, `\n===== start #${this.starts}: ${cmd} ${args.join(' ')}\n`);
    const log = fs.openSync(this.logFile, 'a');
    const env = { ...process.env };
    if (this.kind === 'ferrod' && !env.FERROD_LOG) env.FERROD_LOG = 'info';
    const proc = spawn(cmd, args, { cwd: this.dir, env, detached: true, stdio: ['ignore', 'pipe', log] });
    fs.closeSync(log);
    this.proc = proc;
    live.add(proc.pid);
    let sawReady = readyLine === null;
    let exited = null;
    proc.stdout.on('data', (d) => {
      fs.appendFileSync(this.logFile, d);
      if (!sawReady && d.toString().includes(readyLine)) sawReady = true;
    });
    proc.once('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(proc.pid);
    });
    this.exitPromise = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve();
      else proc.once('exit', () => resolve());
    });

    // The first reference start may build the launcher with Maven (downloads), so be generous.
    const limit = START_TIMEOUT_MS || (this.kind === 'infinispan' ? 600_000 : 60_000);
    const deadline = Date.now() + limit;
    while (Date.now() < deadline) {
      if (exited) {
        throw new Error(`${this.kind} exited during startup (${JSON.stringify(exited)}); log: ${this.logFile}\n${this.tail()}`);
      }
      if (sawReady && (await canConnect(this.port))) return;
      await sleep(100);
    }
    await this.stop();
    throw new Error(`${this.kind} not ready on port ${this.port} after ${limit} ms; log: ${this.logFile}\n${this.tail()}`);
  }

  /** SIGTERM, wait for the exit (SIGKILL after a grace period). */
  async stop() {
    const proc = this.proc;
    if (!proc) return;
    this.proc = undefined;
    if (proc.exitCode === null && proc.signalCode === null) {
      try { process.kill(-proc.pid, 'SIGTERM'); } catch (_) { /* gone */ }
      let timer;
      const grace = new Promise((resolve) => { timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS); });
      const killed = await Promise.race([this.exitPromise.then(() => false), grace]);
      clearTimeout(timer);
      if (killed) {
        fs.appendFileSync(this.logFile, `\n===== no exit ${STOP_TIMEOUT_MS} ms after SIGTERM: SIGKILL\n`);
        try { process.kill(-proc.pid, 'SIGKILL'); } catch (_) { /* gone */ }
        await this.exitPromise;
      }
    }
    // The port must be free again before a restart binds it.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await canConnect(this.port))) await sleep(100);
  }

  /** Restart = SIGTERM, then start again with the same arguments (same port, same data). */
  async restart() {
    await this.stop();
    await this.start();
  }

  /** Stop and remove the temporary data (the log stays in proto-tests/node/logs). */
  async destroy() {
    await this.stop();
    if (this.dir && !process.env.KEEP_DATA) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** The server's last warnings/errors, to explain a failure the client reports badly. */
  problems(max = 5) {
    try {
      const lines = fs.readFileSync(this.logFile, 'utf8').split('\n').filter((l) => /\b(WARN|ERROR)\b/.test(l));
      return lines.slice(-max).join('\n');
    } catch (_) {
      return '';
    }
  }

  tail(lines = 30) {
    try {
      const all = fs.readFileSync(this.logFile, 'utf8').split('\n');
      return all.slice(-lines).join('\n');
    } catch (_) {
      return '';
    }
  }
}

module.exports = { Server, targets, freePort, sleep, REPO, NODE_DIR };
