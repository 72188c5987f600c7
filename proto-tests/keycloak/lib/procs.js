'use strict';
// Child processes of the harness (ferrod replicas, Keycloak nodes): each runs in its own process
// group with its output appended to a log file, and every group still alive is killed when the
// harness exits, whatever happened.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');

const live = new Set();
process.on('exit', () => {
  for (const pid of live) {
    try { process.kill(-pid, 'SIGKILL'); } catch (_) { /* gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(130));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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

/** A process started in its own group, output appended to `logFile`. */
class Proc {
  constructor(label, cmd, args, { env, cwd, logFile }) {
    this.label = label;
    fs.appendFileSync(logFile, `\n===== ${new Date().toISOString()} start: ${cmd} ${args.join(' ')}\n`);
    const fd = fs.openSync(logFile, 'a');
    this.child = spawn(cmd, args, { env, cwd, detached: true, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.logFile = logFile;
    this.pid = this.child.pid;
    live.add(this.pid);
    this.exit = null;
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        live.delete(this.pid);
        resolve(this.exit);
      });
    });
  }

  get running() { return this.exit === null; }

  signal(sig) {
    try { process.kill(-this.pid, sig); } catch (_) { /* gone */ }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 30_000) {
    if (!this.running) return this.exit;
    this.signal('SIGTERM');
    let timer;
    const late = new Promise((r) => { timer = setTimeout(() => r('late'), graceMs); });
    const r = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (r === 'late') {
      fs.appendFileSync(this.logFile, `\n===== no exit ${graceMs} ms after SIGTERM: SIGKILL\n`);
      this.signal('SIGKILL');
      await this.exited;
    }
    return this.exit;
  }

  async kill9() {
    if (!this.running) return this.exit;
    this.signal('SIGKILL');
    return this.exited;
  }
}

/** Runs psql against `url` (a postgres:// URL) and returns its stdout; throws on failure. */
function psql(url, sql) {
  const r = spawnSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qtAc', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql ${sql}: ${r.stderr || r.error}`);
  return r.stdout.trim();
}

/** The URL of database `db` on the server of `url`. */
function withDatabase(url, db) {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** Creates a fresh, empty database `db` (dropping any leftover of an earlier run). */
function freshDatabase(url, db) {
  psql(url, `drop database if exists ${db} with (force)`);
  psql(url, `create database ${db}`);
  return withDatabase(url, db);
}

function dropDatabase(url, db) {
  try { psql(url, `drop database if exists ${db} with (force)`); } catch (_) { /* best effort */ }
}

module.exports = { Proc, sleep, freePort, canConnect, psql, freshDatabase, dropDatabase, withDatabase };
