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

const T = { timeout: 90_000 };
const NAMES = ['f0', 'f1', 'f2'];

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

async function assertMemoryEqualsSql(replicas) {
  const n = await F.assertMemoryEqualsSql(replicas, 10_000);
  log(`memory == SQL on every replica (${n} entries in cache '${F.CACHE}')`);
}

describe('faults: 3 replicas, one PostgreSQL, the npm client writing throughout', () => {
  let url;
  let bin;
  let replicas;

  before(async () => {
    url = await F.pg('fresh');
    bin = F.ferrodBin();
    replicas = NAMES.map((n) => new F.Replica(`faults-${n}`, url, bin));
    // one after another: the first runs the migrations (simultaneous start is another suite's topic)
    for (const r of replicas) await r.start();
    log(`replicas on ports ${replicas.map((r) => r.port).join(', ')}, database ${url}`);
  }, { timeout: 120_000 });

  after(async () => {
    if (replicas) await Promise.all(replicas.map((r) => r.destroy()));
    await F.pg('stop').catch(() => {});
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
});
