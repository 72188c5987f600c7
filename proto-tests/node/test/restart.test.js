'use strict';
// A restart in the middle: entries written at every protocol version, the server restarted
// (SIGTERM, then started again with the same arguments and data), every entry back with the same
// value, version and expiration, and the clients working again.
//
// The npm client does not reconnect by itself (io.js has no reconnect path; a request on a dead
// connection is retried on other members only), so new clients are connected after the restart.

const { test, describe, before } = require('node:test');
const assert = require('node:assert/strict');
const { forEachTarget } = require('../lib/suite');
const { VERSIONS, connect, disconnect, key, withTimeout, errorText, clientWorkarounds } = require('../lib/client');
const { sleep } = require('../lib/servers');

const N = 200;
const T = { timeout: 120_000 };

forEachTarget('restart', (server, target) => {
  const written = new Map(); // version -> Map(key -> {value, version, lifespan, maxIdle} | null (removed))
  const allVersions = new Set(); // every version hex seen before the restart
  const oldClients = [];
  let defaultKeys;
  let expiringKey;
  let restartedAt;

  describe(`${target} restart`, () => {
    before(async () => {
      const c = await connect(server, '4.1', 'raw');
      await c.clear();
      await disconnect(c);
    }, { timeout: 30_000 });

    test(`[${target}] write ${N} entries at every protocol version`, T, async () => {
      for (const v of VERSIONS) {
        const c = await connect(server, v, 'raw');
        oldClients.push({ v, c });
        const m = new Map();
        const k = (i) => key('restart', v, String(i));
        await Promise.all(Array.from({ length: N }, (_, i) => {
          const val = `r-${v}-${i}-ö`;
          if (i % 4 === 0) return c.put(k(i), val, { lifespan: '1h' });
          if (i % 4 === 3) return c.put(k(i), val, { maxIdle: '2h' });
          return c.put(k(i), val);
        }));
        // overwrite some twice, remove some
        for (let i = 1; i < N; i += 4) {
          await c.put(k(i), `r-${v}-${i}-second`);
          await c.replace(k(i), `r-${v}-${i}-third`);
        }
        await Promise.all(Array.from({ length: N }, (_, i) => i).filter((i) => i % 4 === 2).map((i) => c.remove(k(i))));
        const metas = await Promise.all(Array.from({ length: N }, (_, i) => c.getWithMetadata(k(i))));
        metas.forEach((meta, i) => {
          if (i % 4 === 2) {
            assert.equal(meta, undefined, `removed ${k(i)}`);
            m.set(k(i), null);
          } else {
            m.set(k(i), { value: meta.value, version: meta.version.toString('hex'), lifespan: meta.lifespan, maxIdle: meta.maxIdle, created: meta.created });
            allVersions.add(meta.version.toString('hex'));
          }
        });
        written.set(v, m);
      }
      // the default cache and the expiring cache too
      const d = await connect(server, '4.1', undefined);
      defaultKeys = [key('restart', 'default', '1'), key('restart', 'default', '2')];
      await d.put(defaultKeys[0], 'in default 1');
      await d.put(defaultKeys[1], 'in default 2');
      oldClients.push({ v: '4.1 default', c: d });
      const e = await connect(server, '4.1', 'expiring');
      expiringKey = key('restart', 'expiring');
      await e.put(expiringKey, 'kept for an hour', { lifespan: '1h' });
      oldClients.push({ v: '4.1 expiring', c: e });
    });

    test(`[${target}] restart the server (SIGTERM, start again with the same arguments)`, { timeout: 15 * 60_000 }, async () => {
      restartedAt = Date.now();
      await server.restart();
    });

    for (const v of VERSIONS) {
      test(`[${target} ${v}] after the restart: all entries back with the same values, versions and expiration`, T, async () => {
        const m = written.get(v);
        assert.ok(m, 'entries were written before the restart');
        const c = await connect(server, v, 'raw');
        try {
          const keys = [...m.keys()];
          const metas = await Promise.all(keys.map((kk) => c.getWithMetadata(kk)));
          keys.forEach((kk, j) => {
            const want = m.get(kk);
            const got = metas[j];
            if (want === null) {
              assert.equal(got, undefined, `${kk} was removed before the restart`);
              return;
            }
            assert.ok(got, `${kk} is back after the restart`);
            assert.equal(got.value, want.value, `${kk}: value`);
            assert.equal(got.version.toString('hex'), want.version, `${kk}: version kept across the restart`);
            assert.equal(got.lifespan, want.lifespan, `${kk}: lifespan`);
            assert.equal(got.maxIdle, want.maxIdle, `${kk}: maxIdle`);
            if (want.lifespan > 0) {
              // the lifespan clock is not restarted: created stays the write time (Infinispan's
              // store keeps it to within a few ms, not exactly)
              assert.ok(Math.abs(got.created - want.created) < 1000 && got.created < restartedAt,
                `${kk}: created timestamp kept (before ${want.created}, after ${got.created}, restart at ${restartedAt})`);
            }
          });
          const gets = await Promise.all(keys.map((kk) => c.get(kk)));
          keys.forEach((kk, j) => {
            const want = m.get(kk);
            assert.equal(gets[j], want === null ? undefined : want.value, `get ${kk}`);
          });

          // conditional writes with the versions read before the restart still work
          const live = keys.filter((kk) => m.get(kk) !== null);
          const k0 = live[0];
          const k1 = live[1];
          assert.equal(await c.replaceWithVersion(k0, 'after restart', Buffer.from(m.get(k0).version, 'hex')), true,
            'replaceWithVersion with the version read before the restart');
          const after0 = await c.getWithMetadata(k0);
          assert.equal(after0.value, 'after restart');
          assert.ok(!allVersions.has(after0.version.toString('hex')), 'a write after the restart gets a version never used before');
          assert.equal(await c.removeWithVersion(k1, Buffer.from(m.get(k0).version, 'hex')), false, 'removeWithVersion with another key\'s version');
          assert.equal(await c.removeWithVersion(k1, Buffer.from(m.get(k1).version, 'hex')), true, 'removeWithVersion with the pre-restart version');
          assert.equal(await c.putIfAbsent(live[2], 'no'), false, 'putIfAbsent on an entry from before the restart');
          const fresh = key('restart', v, 'fresh');
          await c.put(fresh, 'new');
          assert.equal(await c.get(fresh), 'new', 'the server takes new writes');
        } finally {
          await disconnect(c);
        }
      });
    }

    test(`[${target}] after the restart: default and expiring caches, size`, T, async () => {
      const d = await connect(server, '4.1', undefined);
      const e = await connect(server, '4.1', 'expiring');
      const r = await connect(server, 'auto', 'raw');
      try {
        assert.equal(await d.get(defaultKeys[0]), 'in default 1');
        assert.equal(await d.get(defaultKeys[1]), 'in default 2');
        const me = await e.getWithMetadata(expiringKey);
        assert.equal(me && me.value, 'kept for an hour');
        assert.equal(me.lifespan, 3600);
        // per version: N written, N/4 removed, 1 removed by removeWithVersion, 1 fresh
        const expected = VERSIONS.length * (N - N / 4 - 1 + 1);
        assert.equal(await r.size(), expected, 'size of the raw cache after the restart');
      } finally {
        await disconnect(d);
        await disconnect(e);
        await disconnect(r);
      }
    });

    test(`[${target}] SIGTERM while writes are in flight: every acknowledged write survives`, { timeout: 15 * 60_000 }, async (t) => {
      // 4 clients (2.2, 2.9, 4.0, 4.1) keep 16 puts each in flight, every put on a new key, until
      // the server goes away; then the server starts again and every put that was answered with
      // success must be there. Unanswered ones may or may not be (the npm client does not fail
      // requests on a closed connection, hence the per-request timeout).
      const writers = [];
      for (const v of ['2.2', '2.9', '4.0', '4.1']) writers.push({ v, c: await connect(server, v, 'raw') });
      const acked = [];
      let failures = 0;
      const loops = [];
      for (const { v, c } of writers) {
        for (let lane = 0; lane < 16; lane++) {
          loops.push((async () => {
            for (let i = 0; ; i++) {
              const kk = key('inflight', v, String(lane), String(i));
              try {
                await withTimeout(c.put(kk, `acked-${kk}`), 3_000, 'put');
                acked.push(kk);
              } catch (_) {
                failures += 1;
                return; // the server is gone for this connection
              }
            }
          })());
        }
      }
      while (acked.length < 500) await sleep(20);
      await server.stop(); // SIGTERM with requests in flight
      await Promise.all(loops);
      for (const { c } of writers) await disconnect(c);
      await server.start();
      t.diagnostic(`${acked.length} puts acknowledged before the stop, ${failures} lanes ended by it`);
      const r = await connect(server, '4.1', 'raw');
      try {
        for (let off = 0; off < acked.length; off += 500) {
          const batch = acked.slice(off, off + 500);
          const got = await r.getAll(batch);
          const byKey = new Map(got.map((e) => [e.key, e.value]));
          for (const kk of batch) assert.equal(byKey.get(kk), `acked-${kk}`, `acknowledged put of ${kk} survived the stop`);
        }
      } finally {
        await disconnect(r);
      }
    });

    test(`[${target}] clients connected before the restart (no assertion: the npm client does not reconnect)`, T, async (t) => {
      for (const { v, c } of oldClients) {
        let outcome;
        try {
          await withTimeout(c.ping(), 3_000, 'ping');
          outcome = 'works again';
        } catch (err) {
          outcome = `fails: ${errorText(err)}`;
        }
        t.diagnostic(`old client ${v}: ${outcome}`);
        await disconnect(c);
      }
      t.diagnostic(`npm client decodeTimestamp workaround used ${clientWorkarounds.truncatedTimestamp} time(s) in this file`);
    });
  });
});
