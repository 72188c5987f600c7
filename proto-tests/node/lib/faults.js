'use strict';
// Helpers for test/faults.test.js: a dedicated PostgreSQL cluster (faults-pg.sh), N ferrod
// replicas sharing it, clients that write and read continuously while faults are injected, and the
// checks (no acknowledged write lost; every replica's memory equals the SQL content).

require('./faults-client-fix'); // before the client is loaded: see there
const { execFile, spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');
const { Server, freePort, sleep, NODE_DIR, REPO } = require('./servers');
const { infinispan, withTimeout, errorText, RUN } = require('./client');

const PG_SCRIPT = path.join(NODE_DIR, 'faults-pg.sh');
const CACHE = 'text';

// ---------------------------------------------------------------- PostgreSQL (dedicated cluster)

/** faults-pg.sh start|fresh|stop|url, asynchronously (the clients keep running meanwhile). */
function pg(cmd) {
  return new Promise((resolve, reject) => {
    execFile('bash', [PG_SCRIPT, cmd], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`faults-pg.sh ${cmd} failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Runs SQL as the postgres superuser on the dedicated cluster's test database; rows as arrays. */
function sql(query) {
  const port = process.env.FAULTS_PG_PORT || '5439';
  const r = spawnSync('su', ['postgres', '-c', `psql -p ${port} -d ferrod_faults -v ON_ERROR_STOP=1 -qtAX -F '\t' -f -`], {
    input: query, encoding: 'utf8', maxBuffer: 512 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`psql failed (${r.status}): ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.length > 0).map((l) => l.split('\t'));
}

/** The cache's content in SQL: Map(key -> value), text keys/values (UTF-8). */
function sqlContent(cache = CACHE) {
  const rows = sql(`SELECT encode(key, 'hex'), encode(value, 'hex') FROM ferrod_entries WHERE cache = '${cache}' `
    + `AND (expires_ms IS NULL OR expires_ms > (extract(epoch from now()) * 1000)::bigint)`);
  const m = new Map();
  for (const [k, v] of rows) m.set(Buffer.from(k, 'hex').toString('utf8'), Buffer.from(v, 'hex').toString('utf8'));
  return m;
}

/**
 * One fault run at a time on this machine (they share the dedicated cluster, its database and the
 * log file names): an exclusive flock(1) held by a child process until release() or this process
 * ends (the child's stdin closes, it exits, the lock goes with it).
 */
async function lockFaultRuns(timeoutMs = 15 * 60_000) {
  const lockFile = path.join(os.tmpdir(), 'ferrod-proto-tests-faults.lock');
  const child = spawn('flock', ['-x', lockFile, '-c', 'echo locked; exec cat >/dev/null'], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.unref();
  child.stdout.unref?.();
  let announced = false;
  const warn = setTimeout(() => { announced = true; process.stderr.write(`waiting for another faults run to release ${lockFile}\n`); }, 2_000);
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${lockFile} still locked after ${timeoutMs} ms`)), timeoutMs);
      child.stdout.on('data', (d) => { if (String(d).includes('locked')) { clearTimeout(timer); resolve(); } });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`flock exited (${code})`)); });
    });
  } catch (e) {
    child.kill();
    throw e;
  } finally {
    clearTimeout(warn);
  }
  if (announced) process.stderr.write('faults lock acquired\n');
  return { release: () => { try { child.stdin.end(); } catch (_) { /* gone */ } } };
}

// ---------------------------------------------------------------- replicas

const FAULTS_TOML = `# written by proto-tests/node/lib/faults.js
[[cache]]
name = "text"
key_media_type = "text/plain"
value_media_type = "text/plain"
`;

/** One ferrod replica on the shared PostgreSQL; `bin` can be changed between starts. */
class Replica extends Server {
  constructor(name, dbUrl, bin) {
    super('ferrod', name);
    this.dbUrl = dbUrl;
    this.bin = bin;
  }

  command() {
    fs.writeFileSync(path.join(this.dir, 'ferrod.toml'), FAULTS_TOML);
    return {
      cmd: this.bin,
      args: ['--listen', `127.0.0.1:${this.port}`, '--database-url', this.dbUrl, '--config', path.join(this.dir, 'ferrod.toml')],
      readyLine: null,
    };
  }

  async start() {
    this.unexpectedExits = this.unexpectedExits || [];
    this.expectingExit = false;
    await super.start();
    const proc = this.proc;
    proc.once('exit', (code, signal) => {
      if (this.expectingExit) return;
      const e = { replica: this.name, pid: proc.pid, code, signal, at: new Date().toISOString() };
      this.unexpectedExits.push(e);
      process.stderr.write(`[faults] ${this.name} EXITED UNEXPECTEDLY: ${JSON.stringify(e)}\n${this.tail(20)}\n`);
    });
  }

  async stop() {
    this.expectingExit = true;
    await super.stop();
  }

  /** SIGKILL the process group (no shutdown at all), wait for the exit. */
  async kill9() {
    const proc = this.proc;
    if (!proc) return;
    this.expectingExit = true;
    this.proc = undefined;
    fs.appendFileSync(this.logFile, `\n===== SIGKILL by the test at ${new Date().toISOString()}\n`);
    try { process.kill(-proc.pid, 'SIGKILL'); } catch (_) { /* gone */ }
    await this.exitPromise;
  }

  note(text) {
    try { fs.appendFileSync(this.logFile, `\n===== test: ${text} at ${new Date().toISOString()}\n`); } catch (_) { /* */ }
  }
}

function ferrodBin() {
  const bin = process.env.FERROD_BIN || path.join(REPO, 'target', 'debug', 'ferrod');
  if (!fs.existsSync(bin)) throw new Error(`ferrod binary not found at ${bin} (cargo build -p ferrod, or set FERROD_BIN)`);
  return bin;
}

/** A copy of the binary at a fresh temporary path (a "newly built" binary for a rolling upgrade). */
function copyBinary(bin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrod-faults-bin-'));
  const dst = path.join(dir, 'ferrod');
  fs.copyFileSync(bin, dst);
  fs.chmodSync(dst, 0o755);
  return dst;
}

// ---------------------------------------------------------------- clients

/**
 * The npm client connected to every replica: the first reachable address is the main "cluster";
 * every replica is also declared as its own alternative cluster (`clusters`), which is what the
 * client fails over to when its connection breaks (without topology from the server, a single
 * server list gives the client no second connection to retry on).
 */
async function connectAll(replicas, first = 0, timeoutMs = 10_000) {
  const order = replicas.map((_, i) => replicas[(first + i) % replicas.length]);
  const opts = {
    version: '4.1',
    cacheName: CACHE,
    clusters: order.map((r) => ({ name: `replica-${r.name}`, servers: [r.address] })),
  };
  return withTimeout(infinispan.client(order.map((r) => r.address), opts), timeoutMs, 'connect (all replicas)');
}

async function connectOne(replica, timeoutMs = 10_000) {
  return withTimeout(infinispan.client(replica.address, { version: '4.1', cacheName: CACHE }), timeoutMs, `connect ${replica.name}`);
}

async function quietDisconnect(c) {
  if (!c) return;
  try { await withTimeout(c.disconnect(), 3_000, 'disconnect'); } catch (_) { /* gone */ }
}

// ---------------------------------------------------------------- load

/** The npm client's failures of the connection itself, and a request left without an answer. */
function isConnectionFailure(e) {
  return /no connections left|Unable to complete request|no answer within|ECONNRESET|EPIPE|ECONNREFUSED|write after end|socket|TypeError/i.test(errorText(e));
}

/**
 * One writer: `loops` sequential loops on one client. Loop j owns the keys `<RUN>:<tag>:<name>:<j>:<n>`;
 * each op puts a new key or overwrites one of the loop's earlier keys, and now and then reads back
 * one of its own acknowledged keys through the same client (read-your-writes on one connection).
 * A key whose write failed (outcome unknown: it may or may not have been applied, and the npm
 * client may still re-send it later) is never written again, so its possible values stay exactly
 * {last acknowledged value, the failed value}.
 *
 * reconnect: the single-replica clients do not reconnect by themselves (npm client), so after a
 * failure such a writer connects a new client; the all-replicas client is never replaced: it must
 * fail over by itself.
 */
class Writer {
  constructor({ name, tag, connect, reconnect, loops = 3, opTimeoutMs = 3_000 }) {
    Object.assign(this, { name, tag, connect, reconnect, loops, opTimeoutMs });
    this.acked = new Map(); // key -> last acknowledged value
    this.history = new Map(); // key -> every acknowledged value, in order
    this.uncertain = new Map(); // key -> the value of its failed (unknown outcome) write
    this.ackedPuts = 0;
    this.failedPuts = [];
    this.reads = 0;
    this.readMismatches = [];
    this.readErrors = [];
    this.events = []; // {t, ok, what}
    this.client = undefined;
    this.reconnects = 0; // new clients connected after a failure (single-replica writers)
    this.running = false;
  }

  async start() {
    this.client = await this.connect();
    this.running = true;
    this.done = Promise.all(Array.from({ length: this.loops }, (_, j) => this.loop(j)));
  }

  async stop() {
    this.running = false;
    await this.done;
    await quietDisconnect(this.client);
    this.client = undefined;
  }

  /** A copy of the acknowledged state now (for checkAcked's `snapshots`). */
  snapshot() { return new Map(this.acked); }

  /** Acknowledged puts since `t`. */
  ackedSince(t) { return this.events.filter((e) => e.ok && e.t >= t).length; }

  errorsBetween(t0, t1) { return this.failedPuts.filter((e) => e.t >= t0 && e.t <= t1); }

  async ensureClient() {
    if (this.client || !this.reconnect) return this.client;
    try {
      this.client = await this.connect();
      this.reconnects += 1;
    } catch (_) {
      await sleep(200);
    }
    return this.client;
  }

  async loop(j) {
    const mine = []; // keys of this loop still writable (acknowledged, never failed)
    let n = 0;
    let op = 0;
    while (this.running) {
      const c = await this.ensureClient();
      if (!c) continue;
      op += 1;
      let k;
      if (mine.length > 4 && op % 4 === 0) {
        k = mine[Math.floor(Math.random() * mine.length)];
      } else {
        k = `${RUN}:${this.tag}:${this.name}:${j}:${n}`;
        n += 1;
      }
      const v = `${this.name}-${j}-${op}-${Date.now()}`;
      const t = Date.now();
      try {
        await withTimeout(c.put(k, v), this.opTimeoutMs, `put ${k}`);
        this.acked.set(k, v);
        if (!this.history.has(k)) this.history.set(k, []);
        this.history.get(k).push(v);
        this.ackedPuts += 1;
        this.events.push({ t, ok: true, ms: Date.now() - t });
        if (!mine.includes(k)) mine.push(k);
      } catch (e) {
        this.uncertain.set(k, v);
        const idx = mine.indexOf(k);
        if (idx >= 0) mine.splice(idx, 1);
        this.failedPuts.push({ t, tEnd: Date.now(), key: k, error: errorText(e) });
        this.events.push({ t, ok: false, ms: Date.now() - t });
        // a new client only when the connection is gone (the npm client's own failure, or no
        // answer): an error the server answered leaves the connection, and the other loops'
        // requests on it, intact
        if (this.reconnect && this.client === c && isConnectionFailure(e)) {
          this.client = undefined;
          quietDisconnect(c);
        }
        await sleep(20);
        continue;
      }
      if (op % 3 === 0 && mine.length > 0) {
        const rk = mine[Math.floor(Math.random() * mine.length)];
        const want = this.acked.get(rk);
        const tGet = Date.now();
        try {
          const got = await withTimeout(c.get(rk), this.opTimeoutMs, `get ${rk}`);
          this.reads += 1;
          // a concurrent loop never writes this loop's keys, so the value is exact
          if (got !== want && this.acked.get(rk) === want) this.readMismatches.push({ key: rk, want, got, t: Date.now() });
        } catch (e) {
          this.readErrors.push({ t: tGet, tEnd: Date.now(), key: rk, error: errorText(e) });
          if (this.reconnect && this.client === c && isConnectionFailure(e)) {
            this.client = undefined;
            quietDisconnect(c);
          }
        }
      }
    }
  }

  summary() {
    return `${this.name}: ${this.ackedPuts} acked puts, ${this.failedPuts.length} failed, ${this.reads} reads `
      + `(${this.readMismatches.length} mismatches, ${this.readErrors.length} errors)`
      + (this.reconnects ? `, ${this.reconnects} reconnect(s)` : '');
  }
}

// ---------------------------------------------------------------- checks

/**
 * Every acknowledged key, read through every replica (new clients): its value is the last
 * acknowledged one, or the value of a later write whose outcome is unknown. Returns problems.
 *
 * snapshots (one per writer, Writer#snapshot()): check only the keys acknowledged at the snapshot,
 * and accept the value acknowledged then or any value written to the key since (a replica may
 * not have heard of the latest writes yet, e.g. while the feed cannot reach the database).
 */
async function checkAcked(replicas, writers, { timeoutMs = 20_000, snapshots } = {}) {
  const expected = new Map(); // key -> [allowed values]
  writers.forEach((w, i) => {
    const base = snapshots ? snapshots[i] : w.acked;
    for (const [k, v] of base) {
      let allowed = [w.acked.get(k)];
      if (snapshots) {
        const h = w.history.get(k);
        allowed = h.slice(h.lastIndexOf(v));
      }
      if (w.uncertain.has(k)) allowed.push(w.uncertain.get(k));
      expected.set(k, allowed);
    }
  });
  const keys = [...expected.keys()];
  const problems = [];
  for (const r of replicas) {
    const c = await connectOne(r);
    try {
      for (let i = 0; i < keys.length; i += 500) {
        const chunk = keys.slice(i, i + 500);
        const got = await withTimeout(c.getAll(chunk), timeoutMs, `getAll via ${r.name}`);
        const byKey = new Map(got.map((e) => [e.key, e.value]));
        for (const k of chunk) {
          const v = byKey.get(k);
          if (!expected.get(k).includes(v)) {
            problems.push(`${r.name}: ${k} = ${JSON.stringify(v)}, acknowledged ${JSON.stringify(expected.get(k))}`);
          }
        }
      }
    } finally {
      await quietDisconnect(c);
    }
  }
  return { checked: keys.length, problems };
}

/** The cache's content as served by one replica's iterator (its memory). */
async function iterateReplica(replica, timeoutMs = 30_000) {
  const c = await connectOne(replica);
  try {
    return await withTimeout((async () => {
      const it = await c.iterator(1000);
      const m = new Map();
      for (;;) {
        const e = await it.next();
        if (e.done) break;
        m.set(e.key, e.value);
      }
      try { await it.close(); } catch (_) { /* already ended by the server */ }
      return m;
    })(), timeoutMs, `iterate ${replica.name}`);
  } finally {
    await quietDisconnect(c);
  }
}

function diffMaps(mem, db, max = 10) {
  const out = [];
  let count = 0;
  for (const [k, v] of db) {
    if (!mem.has(k)) { count += 1; if (out.length < max) out.push(`missing in memory: ${k} (SQL ${JSON.stringify(v)})`); } else if (mem.get(k) !== v) {
      count += 1;
      if (out.length < max) out.push(`differs: ${k} memory ${JSON.stringify(mem.get(k))} SQL ${JSON.stringify(v)}`);
    }
  }
  for (const [k, v] of mem) {
    if (!db.has(k)) { count += 1; if (out.length < max) out.push(`not in SQL: ${k} (memory ${JSON.stringify(v)})`); }
  }
  return { count, sample: out };
}

/**
 * Every replica's memory equals the SQL content (keys and values). The feed may lag, so retry
 * for up to settleMs before failing.
 */
async function assertMemoryEqualsSql(replicas, settleMs = 10_000) {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const db = sqlContent();
    const diffs = [];
    for (const r of replicas) {
      const mem = await iterateReplica(r);
      const d = diffMaps(mem, db);
      if (d.count > 0) diffs.push(`${r.name}: ${d.count} difference(s) among ${mem.size} in memory / ${db.size} in SQL:\n    ${d.sample.join('\n    ')}`);
    }
    if (diffs.length === 0) return db.size;
    if (Date.now() > deadline) {
      assert.fail(`replica memory != SQL content after ${settleMs} ms:\n  ${diffs.join('\n  ')}`);
    }
    await sleep(500);
  }
}

module.exports = {
  lockFaultRuns, pg, sql, sqlContent, Replica, ferrodBin, copyBinary, connectAll, connectOne, quietDisconnect,
  Writer, checkAcked, iterateReplica, assertMemoryEqualsSql, freePort, sleep, CACHE,
};
