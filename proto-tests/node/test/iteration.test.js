'use strict';
// Iteration (ITERATION_START/NEXT/END) over 10,000 entries, with and without metadata, at every
// version where the npm client has it (2.5+; the client's 2.2 protocol has no iterator).

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { forEachTarget } = require('../lib/suite');
const { VERSIONS, connect, disconnect, key, features } = require('../lib/client');

const N = 10_000;
const T = { timeout: 180_000 };
const CACHE = 'raw';

const keyOf = (i) => key('iter', String(i).padStart(5, '0'));
const valueOf = (i) => `value-${i}-${'€'.repeat(i % 7)}`;
// every 10th entry has a lifespan, every 10th (offset 5) a maxIdle, the rest are immortal
const lifespanOf = (i) => (i % 10 === 0 ? 3600 : -1);
const maxIdleOf = (i) => (i % 10 === 5 ? 1800 : -1);

async function drain(it) {
  const out = [];
  for (;;) {
    const e = await it.next();
    if (e.done) break;
    out.push(e);
    if (out.length > N * 2) throw new Error('the iteration does not end');
  }
  return out;
}

forEachTarget('iteration', (server, target) => {
  let loader;
  const sampleVersions = new Map(); // key -> version hex of every 50th entry

  before(async () => {
    loader = await connect(server, '4.1', CACHE);
    await loader.clear();
    const groups = { immortal: [], life: [], idle: [] };
    for (let i = 0; i < N; i++) {
      const g = lifespanOf(i) > 0 ? 'life' : maxIdleOf(i) > 0 ? 'idle' : 'immortal';
      groups[g].push({ key: keyOf(i), value: valueOf(i) });
    }
    const opts = { immortal: undefined, life: { lifespan: '1h' }, idle: { maxIdle: '30m' } };
    for (const [g, pairs] of Object.entries(groups)) {
      for (let off = 0; off < pairs.length; off += 500) {
        await loader.putAll(pairs.slice(off, off + 500), opts[g]);
      }
    }
    assert.equal(await loader.size(), N, `${N} entries loaded`);
    const idx = Array.from({ length: N / 50 }, (_, j) => j * 50);
    const metas = await Promise.all(idx.map((i) => loader.getWithMetadata(keyOf(i))));
    idx.forEach((i, j) => sampleVersions.set(keyOf(i), metas[j].version.toString('hex')));
  }, { timeout: 300_000 });
  after(async () => {
    // leave no 10,000 entries behind for the next file (a shared FERROD_DATABASE_URL keeps them)
    try { await loader.clear(); } catch (_) { /* the server may be gone */ }
    await disconnect(loader);
  }, { timeout: 60_000 });

  for (const v of VERSIONS) {
    const tag = `[${target} ${v}]`;
    if (v === '2.2') {
      test.skip(`${tag} iteration: the npm client has no iterator at protocol 2.2`);
      continue;
    }
    describe(`${target} protocol ${v}`, () => {
      let c;
      before(async () => { c = await connect(server, v, CACHE); }, { timeout: 30_000 });
      after(() => disconnect(c));

      test(`${tag} iterate ${N} entries with metadata (batch 1000)`, T, async () => {
        assert.ok(features(c).iterationMetadata);
        const it = await c.iterator(1000, { metadata: true });
        const entries = await drain(it);
        assert.equal(entries.length, N, 'number of entries iterated');
        const seen = new Set();
        for (const e of entries) {
          assert.equal(e.done, false);
          const m = /:iter:(\d{5})$/.exec(e.key);
          assert.ok(m, `unexpected key ${JSON.stringify(e.key)}`);
          const i = Number(m[1]);
          assert.ok(!seen.has(i), `key ${e.key} iterated twice`);
          seen.add(i);
          assert.equal(e.value, valueOf(i), `value of ${e.key}`);
          assert.ok(Buffer.isBuffer(e.version) && e.version.length === 8, `${e.key}: 8-byte version`);
          assert.equal(e.lifespan, lifespanOf(i), `${e.key}: lifespan`);
          assert.equal(e.maxIdle, maxIdleOf(i), `${e.key}: maxIdle`);
          if (lifespanOf(i) > 0) assert.ok(e.created > 0, `${e.key}: created`);
          else assert.equal(e.created, -1, `${e.key}: created of an entry without lifespan`);
          if (maxIdleOf(i) > 0) assert.ok(e.lastUsed > 0, `${e.key}: lastUsed`);
          else assert.equal(e.lastUsed, -1, `${e.key}: lastUsed of an entry without maxIdle`);
          const want = sampleVersions.get(e.key);
          if (want) assert.equal(e.version.toString('hex'), want, `${e.key}: iterated version equals getWithMetadata's`);
        }
        assert.equal(seen.size, N);
      });

      test(`${tag} iterate ${N} entries without metadata (batch 777)`, T, async () => {
        const it = await c.iterator(777);
        const entries = await drain(it);
        assert.equal(entries.length, N, 'number of entries iterated');
        const keys = new Set();
        for (const e of entries) {
          const i = Number(/:iter:(\d{5})$/.exec(e.key)[1]);
          assert.equal(e.value, valueOf(i), `value of ${e.key}`);
          assert.equal(e.version, undefined, 'no metadata requested, none sent');
          keys.add(e.key);
        }
        assert.equal(keys.size, N, 'every key once');
      });

      test(`${tag} close iterations early, two at once`, T, async () => {
        const it = await c.iterator(100);
        for (let i = 0; i < 150; i++) {
          const e = await it.next();
          assert.equal(e.done, false);
        }
        assert.equal(await it.close(), true, 'ITERATION_END of an open iteration succeeds');
        // two iterations open at once on one client: one read to the end, the other closed after
        // its first batch while the first is still running
        const [a, b] = await Promise.all([c.iterator(4000, { metadata: true }), c.iterator(300)]);
        const first = drain(a);
        for (let i = 0; i < 300; i++) assert.equal((await b.next()).done, false);
        assert.equal(await b.close(), true);
        assert.equal((await first).length, N, 'the other iteration still delivers every entry');
        await c.ping();
      });
    });
  }
});
