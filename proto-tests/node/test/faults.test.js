'use strict';
// Faults under load (issue 3): three ferrod replicas on one dedicated PostgreSQL cluster
// (faults-pg.sh, port 5439, so stopping it disturbs no other suite), the npm client writing and
// reading throughout:
//   * one client per replica (a single address; the npm client does not reconnect, so the test
//     connects a new one after its replica went away), and
//   * one client given every replica's address (main server list + one alternative `clusters`
//     entry per replica): it must fail over by itself, it is never replaced.
// Faults: kill -9 of a replica, PostgreSQL stopped and started again, a rolling replacement of
// every replica by a copy of the binary. After each: no acknowledged write lost (read through
// every replica), and every replica's memory (iterated through it) equals the SQL content.
//
// ferrod only (no Infinispan reference: these are ferrod's own replication/durability promises).
// Run: FERROD_BIN=... node --test test/faults.test.js   (as root: it drives pg_ctlcluster)

const F = require('../lib/faults'); // first: it fixes the npm client's failover before the client loads
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { sleep } = F;
const { targets } = require('../lib/servers');

const T = { timeout: 90_000 };
const NAMES = ['f0', 'f1', 'f2'];
const OUTAGE_MS = 33_000; // PostgreSQL down this long: a long outage (many reconnect probes of ferrod's circuit)

/** Starts the writers: one per replica, and the all-replicas one (main server: replicas[first]). */
async function startWriters(replicas, tag, { first = 0, opTimeoutMs = 3_000 } = {}) {
  const writers = replicas.map((r) => new F.Writer({
    name: `w-${r.name}`, tag, reconnect: true, opTimeoutMs, connect: () => F.connectOne(r, 2_000),
  }));
  const all = new F.Writer({
    name: 'w-all', tag, reconnect: false, loops: 4, opTimeoutMs, connect: () => F.connectAll(replicas, first),
  });
  writers.push(all);
  await Promise.all(writers.map((w) => w.start()));
  return { writers, all, perReplica: writers.slice(0, replicas.length) };
}

function log(...args) {
  process.stderr.write(`[faults ${new Date().toISOString().slice(11, 23)}] ${args.join(' ')}\n`);
}

function assertNoReadMismatch(writers) {
  for (const w of writers) {
    assert.deepEqual(w.readMismatches.slice(0, 5), [], `${w.name}: reads through the writing connection return the acknowledged value`);
  }
}

async function assertNothingLost(replicas, writers) {
  const { checked, problems } = await F.checkAcked(replicas, writers);
  log(`checked ${checked} acknowledged keys through ${replicas.length} replicas: ${problems.length} problem(s)`);
  assert.ok(checked > 0, 'some writes were acknowledged');
  assert.deepEqual(problems.slice(0, 10), [], `acknowledged writes lost or wrong (${problems.length} in all)`);
}

function assertAllAlive(replicas) {
  const exits = replicas.flatMap((r) => r.unexpectedExits || []);
  assert.deepEqual(exits, [], 'no replica exited unless the test stopped it');
}

async function assertMemoryEqualsSql(replicas) {
  assertAllAlive(replicas);
  const n = await F.assertMemoryEqualsSql(replicas, 10_000);
  log(`memory == SQL on every replica (${n} entries in cache '${F.CACHE}')`);
}

function skipReason() {
  if (!targets().includes('ferrod')) return 'ferrod only (TARGET excludes ferrod)';
  if (process.getuid && process.getuid() !== 0) return 'needs root: it drives its own PostgreSQL cluster with pg_ctlcluster (faults-pg.sh)';
  if (!require('node:fs').existsSync('/usr/bin/pg_ctlcluster')) return 'PostgreSQL cluster tools (pg_ctlcluster) not installed';
  return false;
}
const skip = skipReason();

describe('faults: 3 replicas, one PostgreSQL, the npm client writing throughout', { skip }, () => {
  let url;
  let bin;
  let replicas;
  let lock;
  const tempBins = []; // copies of the binary (rolling replacement), removed at the end

  before(async () => {
    lock = await F.lockFaultRuns();
    url = await F.pg('fresh');
    bin = F.ferrodBin();
    replicas = NAMES.map((n) => new F.Replica(`faults-${n}`, url, bin));
    // one after another: the first runs the migrations (simultaneous start is another suite's topic)
    for (const r of replicas) await r.start();
    log(`replicas on ports ${replicas.map((r) => r.port).join(', ')}, database ${url}`);
  }, { timeout: 20 * 60_000 }); // includes waiting for another faults run

  after(async () => {
    if (replicas) {
      for (const r of replicas) {
        const p = r.problems(15);
        if (p) log(`${r.name} (${r.logFile}) last warnings/errors:\n${p}`);
      }
      await Promise.all(replicas.map((r) => r.destroy()));
    }
    for (const b of tempBins) require('node:fs').rmSync(require('node:path').dirname(b), { recursive: true, force: true });
    await F.pg('stop').catch(() => {});
    if (lock) lock.release();
  }, { timeout: 60_000 });

  test('kill -9 of one replica mid-load: clients fail over, it rejoins and catches up, no acknowledged write lost', T, async () => {
    const victim = replicas[0]; // the all-replicas client's main server
    const { writers, all, perReplica } = await startWriters(replicas, 'kill9', { first: 0 });
    try {
      await sleep(3_000);
      const tKill = Date.now();
      victim.note('kill -9 mid-load');
      await victim.kill9();
      log(`killed ${victim.name}`);
      await sleep(5_000);
      const tRestart = Date.now();
      victim.note('restart after kill -9');
      await victim.start();
      const tUp = Date.now();
      log(`${victim.name} back after ${tUp - tRestart} ms`);
      await sleep(3_000);
      await Promise.all(writers.map((w) => w.stop()));
      for (const w of writers) log(w.summary());

      // the all-replicas client failed over: errors only for the requests in flight at the kill
      // (at most one per loop), and it kept acknowledging writes while the victim was down
      const lateAll = all.failedPuts.filter((e) => e.t > tKill + 200);
      assert.deepEqual(lateAll, [], 'all-replicas client: no failure for a request sent after the kill');
      assert.ok(all.failedPuts.length <= all.loops, `all-replicas client: at most the in-flight requests failed (${JSON.stringify(all.failedPuts)})`);
      assert.ok(all.events.filter((e) => e.ok && e.t > tKill && e.t < tRestart).length > 0, 'all-replicas client: writes acknowledged while the victim was down');
      // the other replicas' clients did not notice
      for (const w of perReplica.slice(1)) assert.deepEqual(w.failedPuts, [], `${w.name}: no failure`);
      // the victim's own client failed, then wrote through the restarted replica again
      assert.ok(perReplica[0].ackedSince(tUp) > 0, `${perReplica[0].name}: writes acknowledged by the restarted replica`);
      assertNoReadMismatch(writers);
      // the restarted replica serves every key written while it was down (checked through it too)
      await assertNothingLost(replicas, writers);
      await assertMemoryEqualsSql(replicas);
    } finally {
      await Promise.all(writers.map((w) => (w.running ? w.stop() : null)));
    }
  });

  test('PostgreSQL restarted mid-load: writes fail with a database error, reads served from memory, recovery without restarting ferrod', T, async () => {
    const opTimeoutMs = 45_000; // the clients wait this long for an answer
    const { writers } = await startWriters(replicas, 'pgrestart', { first: 1, opTimeoutMs });
    let pgDown = false;
    try {
      await sleep(2_000);
      // "existing keys": acknowledged at least a second before the outage (the feed has carried
      // them to every replica); writes of the last instants may reach the others only after it
      const snapshots = writers.map((w) => w.snapshot());
      await sleep(1_000);
      const tDown = Date.now();
      for (const r of replicas) r.note('PostgreSQL stop');
      await F.pg('stop');
      pgDown = true;
      const tStopped = Date.now();
      log(`PostgreSQL stopped (${tStopped - tDown} ms)`);

      // throughout the outage (a long one): reads of
      // existing keys are served by every replica from its memory (new connections, getAll)
      const during = { checked: 0, problems: [], rounds: 0 };
      await sleep(1_000);
      while (Date.now() < tStopped + OUTAGE_MS - 5_000) {
        const r = await F.checkAcked(replicas, writers, { timeoutMs: 5_000, snapshots });
        during.rounds += 1;
        during.checked = r.checked;
        during.problems.push(...r.problems.map((p) => `${Date.now() - tStopped} ms into the outage: ${p}`));
        await sleep(8_000);
      }
      log(`during the outage: read ${during.checked} existing keys through every replica ${during.rounds} times: ${during.problems.length} problem(s)`);
      while (Date.now() < tStopped + OUTAGE_MS) await sleep(200);
      const tUpStart = Date.now();
      const outageErrors = writers.flatMap((w) => w.failedPuts.filter((e) => e.tEnd >= tDown).map((e) => ({ writer: w.name, ...e })));
      log(`outage ${tUpStart - tDown} ms; ${outageErrors.length} failed puts so far`);
      for (const r of replicas) r.note('PostgreSQL start');
      await F.pg('start');
      pgDown = false;
      const tUp = Date.now();
      log(`PostgreSQL started (${tUp - tUpStart} ms)`);

      // recovery by itself: every writer has a write acknowledged that it sent after PostgreSQL was back
      const recoverDeadline = Date.now() + 30_000;
      while (Date.now() < recoverDeadline && !writers.every((w) => w.ackedSince(tUp) > 0)) await sleep(200);
      const tRecovered = Date.now();
      log(`recovered ${tRecovered - tUp} ms after PostgreSQL was back: ${writers.map((w) => `${w.name} ${w.ackedSince(tUp)}`).join(', ')}`);
      await sleep(2_000);
      await Promise.all(writers.map((w) => w.stop()));
      for (const w of writers) log(w.summary());
      const failed = writers.flatMap((w) => w.failedPuts.filter((e) => e.tEnd >= tDown).map((e) => ({ writer: w.name, ...e })));
      for (const e of failed) {
        log(`  failed put (${e.writer}) sent ${e.t - tDown} ms after the stop began, answered after ${e.tEnd - e.t} ms: ${e.error}`);
      }

      const slowest = writers.flatMap((w) => w.events.filter((e) => e.ok && e.t >= tDown && e.t < tUp).map((e) => e.ms));
      log(`puts sent during the outage and acknowledged after it: ${slowest.length}, longest wait ${Math.max(0, ...slowest)} ms`);

      assert.deepEqual(during.problems.slice(0, 10), [], 'during the outage every replica serves the acknowledged values from memory');
      assert.ok(during.checked > 0, 'keys were acknowledged before the outage');
      for (const w of writers) {
        assert.deepEqual(w.readErrors.filter((e) => e.t >= tDown && e.t <= tUp).slice(0, 5), [], `${w.name}: reads during the outage are served`);
      }
      // nothing else breaks: no replica exits, no client connection is lost (a lost connection
      // makes the npm client fail with "No clusters and no connections left to try")
      assertAllAlive(replicas);
      for (const w of writers) {
        const lost = [...w.readErrors, ...w.failedPuts].filter((e) => !/database/i.test(e.error));
        assert.deepEqual(lost.slice(0, 5), [], `${w.name}: no request fails other than with a database error (outage ${tDown}..${tUp}, PostgreSQL back at ${tUp})`);
      }
      // every write that failed, failed with an error naming the database (none left unanswered
      // for the client's opTimeoutMs), and writes did fail during the outage
      for (const e of failed) {
        assert.match(e.error, /database|postgres|sql/i, `${e.writer}: a write during the outage fails with an error that names the database (sent ${e.t - tDown} ms after the stop began): ${e.error}`);
      }
      // (which write fails depends on the group commit: a write queued behind a failing batch
      // waits for its own batch, and may commit once PostgreSQL is back)
      assert.ok(failed.some((e) => e.tEnd <= tUpStart), 'writes fail while PostgreSQL is down');
      for (const w of writers) assert.ok(w.ackedSince(tUp) > 0, `${w.name}: writes succeed again within 30 s after PostgreSQL is back, without restarting ferrod`);
      assertNoReadMismatch(writers);
      await assertNothingLost(replicas, writers);
      await assertMemoryEqualsSql(replicas);
    } finally {
      if (pgDown) await F.pg('start').catch(() => {});
      await Promise.all(writers.map((w) => (w.running ? w.stop() : null)));
    }
  });

  test('rolling replacement of every replica by a new binary under load: nothing lost, failures only retried', T, async () => {
    const newBin = F.copyBinary(bin); // "the freshly built binary": any build at any path joins the same data
    tempBins.push(newBin);
    const { writers, all, perReplica } = await startWriters(replicas, 'rolling', { first: 0 });
    const windows = [];
    try {
      await sleep(2_000);
      for (const r of replicas) {
        const t0 = Date.now();
        r.note(`rolling replacement: SIGTERM, then ${newBin}`);
        await r.stop();
        const tStopped = Date.now();
        r.bin = newBin;
        await r.start();
        const t1 = Date.now();
        windows.push({ r, t0, t1 });
        log(`replaced ${r.name}: stopped in ${tStopped - t0} ms, new process ready after ${t1 - tStopped} ms`);
        await sleep(2_000);
      }
      // every writer got going again after its replica's replacement (a request caught by one
      // costs its writer the op timeout first), bounded
      const settle = Date.now() + 10_000;
      while (Date.now() < settle && !perReplica.every((w, i) => w.ackedSince(windows[i].t1) > 0)) await sleep(200);
      await Promise.all(writers.map((w) => w.stop()));
      for (const w of writers) log(w.summary());

      for (const w of writers) {
        for (const e of [...w.failedPuts, ...w.readErrors]) {
          const during = windows.map((x) => `${x.r.name} ${e.t - x.t0 >= 0 ? '+' : ''}${e.t - x.t0} ms`).join(', ');
          log(`  ${w.name}: failed op sent at (relative to each SIGTERM) ${during}: ${e.error}`);
        }
      }
      for (const r of replicas) assert.equal(r.proc.spawnargs[0], newBin, `${r.name} runs the new binary`);
      // the all-replicas client (main server: the first replaced) failed over twice; any request
      // caught by a replacement was retried by the client on another replica: no failure surfaced
      assert.deepEqual(all.failedPuts, [], 'all-replicas client: no failed write (only retried ones)');
      assert.deepEqual(all.readErrors, [], 'all-replicas client: no failed read');
      assert.ok(all.ackedSince(windows[windows.length - 1].t1) > 0, 'all-replicas client: still writing at the end');
      // a single-replica client fails only while its own replica is replaced; the test then
      // retries with a new client (the npm client does not reconnect), which writes again
      perReplica.forEach((w, i) => {
        const { t0, t1 } = windows[i];
        // (a request the replacement left unanswered holds its loop for the op timeout)
        const outside = [...w.failedPuts, ...w.readErrors].filter((e) => e.tEnd < t0 || e.t > t1 + w.opTimeoutMs);
        assert.deepEqual(outside, [], `${w.name}: failures only while its replica was being replaced`);
        assert.ok(w.ackedSince(t1) > 0, `${w.name}: writes again through the new process`);
        log(`${w.name}: ${w.failedPuts.length} failed write(s), ${w.readErrors.length} failed read(s) during its replica's replacement; ${w.reconnects} reconnect(s)`);
      });
      assertNoReadMismatch(writers);
      await assertNothingLost(replicas, writers);
      await assertMemoryEqualsSql(replicas);
    } finally {
      await Promise.all(writers.map((w) => (w.running ? w.stop() : null)));
    }
  });
});
