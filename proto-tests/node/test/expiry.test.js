'use strict';
// Expiration at every protocol version: lifespan in seconds and in milliseconds, maxIdle (and its
// extension by access), the `expiring` cache's default lifespan (2000 ms) versus explicit and
// infinite expirations. The versions run at the same time (each has its own keys), so the waits
// overlap.

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { forEachTarget } = require('../lib/suite');
const { sleep } = require('../lib/servers');
const { VERSIONS, AUTO_EXPECTED, connect, disconnect, key, numeric, features } = require('../lib/client');

const T = { timeout: 60_000 };

forEachTarget('expiry', (server, target) => {
  for (const v of VERSIONS) {
    describe(`${target} protocol ${v}`, { concurrency: true }, () => {
      let c; // cache raw
      let e; // cache expiring
      const k = (...p) => key('expiry', v, ...p);
      const tag = `[${target} ${v}]`;

      before(async () => {
        c = await connect(server, v, 'raw');
        e = await connect(server, v, 'expiring');
      }, { timeout: 30_000 });
      after(async () => {
        await disconnect(c);
        await disconnect(e);
      });

      test(`${tag} lifespan in seconds ('1s')`, T, async (t) => {
        const a = k('life-s');
        await c.put(a, 'short');
        const t0 = Date.now();
        await c.put(a, 'short', { lifespan: '1s' });
        const got = await c.get(a);
        const m = await c.getWithMetadata(a);
        const took = Date.now() - t0;
        if (took > 700) {
          // too slow to be sure the entry was still alive (a loaded machine): only its expiry counts
          t.diagnostic(`inconclusive: put+get+getWithMetadata took ${took} ms of the 1000 ms lifespan; presence not asserted`);
        } else {
          assert.equal(got, 'short', 'present right after the put');
          assert.equal(m.lifespan, 1, 'lifespan 1 s');
          assert.equal(m.maxIdle, -1);
          assert.ok(m.created > 0, 'created is set for a mortal entry');
        }
        await sleep(1600);
        assert.equal(await c.get(a), undefined, 'gone after its lifespan');
        assert.equal(await c.containsKey(a), false, 'containsKey after its lifespan');
        assert.equal(await c.getWithMetadata(a), undefined, 'getWithMetadata after its lifespan');
        assert.deepEqual(await c.getAll([a]), [], 'getAll after its lifespan');
        if (features(c).iteration) {
          const it = await c.iterator(100);
          for (;;) {
            const e = await it.next();
            if (e.done) break;
            assert.notEqual(e.key, a, 'an expired entry is not iterated');
          }
        }
        assert.equal(await c.putIfAbsent(a, 'reborn'), true, 'putIfAbsent on an expired key stores');
        assert.equal(await c.get(a), 'reborn');
        const m2 = await c.getWithMetadata(a);
        assert.equal(m2.lifespan, -1, 'the new entry is immortal');
        await c.remove(a);
      });

      test(`${tag} lifespan in milliseconds ('800ms')`, T, async (t) => {
        const a = k('life-ms');
        const t0 = Date.now();
        await c.put(a, 'very short', { lifespan: '800ms' });
        const got = await c.get(a);
        const m = await c.getWithMetadata(a);
        const took = Date.now() - t0;
        if (took > 500) {
          t.diagnostic(`inconclusive: put+get+getWithMetadata took ${took} ms of the 800 ms lifespan; presence not asserted`);
        } else {
          assert.equal(got, 'very short', 'present right after the put');
          // The metadata block carries whole seconds: 800 ms is reported as 0, but as finite.
          assert.equal(m.lifespan, 0, 'lifespan reported in whole seconds');
          assert.ok(m.created > 0, 'created is set for a mortal entry');
        }
        await sleep(1300);
        assert.equal(await c.get(a), undefined, 'gone after 800 ms');
        assert.equal(await c.containsKey(a), false);
        assert.equal(await c.replace(a, 'x'), false, 'replace on an expired key does nothing');
        assert.equal(await c.get(a), undefined);
      });

      test(`${tag} maxIdle: gone after idling`, T, async () => {
        const a = k('idle');
        await c.put(a, 'idle', { maxIdle: '1s' });
        const m = await c.getWithMetadata(a);
        assert.equal(m.maxIdle, 1, 'maxIdle 1 s');
        assert.equal(m.lifespan, -1);
        assert.ok(m.lastUsed > 0, 'lastUsed is set');
        await sleep(1700);
        assert.equal(await c.get(a), undefined, 'gone after 1 s without access');
        assert.equal(await c.containsKey(a), false);
      });

      test(`${tag} maxIdle: extended by access`, T, async () => {
        const a = k('idle-touch');
        await c.put(a, 'touched', { maxIdle: '1500ms' });
        // 4 reads 700 ms apart: 2.8 s in all, well past 1.5 s, never idle 1.5 s
        for (let i = 0; i < 4; i++) {
          await sleep(700);
          assert.equal(await c.get(a), 'touched', `present at read ${i + 1} (each read resets the idle time)`);
        }
        await sleep(2300);
        assert.equal(await c.get(a), undefined, 'gone once idle for longer than maxIdle');
      });

      test(`${tag} overwrite without lifespan makes an entry immortal`, T, async () => {
        const a = k('overwrite');
        await c.put(a, 'mortal', { lifespan: '1s' });
        await c.put(a, 'immortal');
        await sleep(1500);
        assert.equal(await c.get(a), 'immortal', 'the second put dropped the lifespan');
        await c.remove(a);
      });

      test(`${tag} expirations over 30 days: Unix time below 3.0, literal from 3.0`, T, async () => {
        const unixTime = numeric(v === 'auto' ? AUTO_EXPECTED : v) < 30;
        const d31 = k('31d');
        const abs = k('absolute');
        const idle = k('idle-31d');
        const at = Math.floor(Date.now() / 1000) + 120; // 2 minutes from now, as Unix seconds
        await c.put(d31, 'x', { lifespan: '31d' });
        await c.put(abs, 'x', { lifespan: `${at}s` });
        await c.put(idle, 'x', { maxIdle: '31d' });
        const m31 = await c.getWithMetadata(d31);
        const mAbs = await c.getWithMetadata(abs);
        const mIdle = await c.getWithMetadata(idle);
        if (unixTime) {
          // 31 days (> 30 days) is read as a Unix time: early 1970, long past
          assert.equal(m31, undefined, 'lifespan 31d below 3.0 is a Unix time in the past: expired at once');
          assert.equal(mIdle, undefined, 'maxIdle 31d below 3.0 is a Unix time in the past: expired at once');
          assert.ok(mAbs && mAbs.lifespan >= 110 && mAbs.lifespan <= 120, `an absolute Unix time 120 s ahead leaves ~120 s (got ${mAbs && mAbs.lifespan})`);
        } else {
          assert.equal(m31 && m31.lifespan, 31 * 86400, 'lifespan 31d taken literally from 3.0');
          assert.equal(mIdle && mIdle.maxIdle, 31 * 86400, 'maxIdle 31d taken literally from 3.0');
          assert.equal(mAbs && mAbs.lifespan, at, 'a large lifespan in seconds is taken literally from 3.0');
        }
        await Promise.all([c.remove(d31), c.remove(abs), c.remove(idle)]);
      });

      test(`${tag} cache default lifespan (expiring: 2000 ms) vs explicit and infinite`, T, async () => {
        const dflt = k('default-life');
        const hour = k('hour');
        const inf = k('infinite');
        await e.put(dflt, 'default');
        await e.put(hour, 'explicit', { lifespan: '1h' });
        await e.put(inf, 'forever', { lifespan: -1 });
        const md = await e.getWithMetadata(dflt);
        assert.equal(md.lifespan, 2, 'the default lifespan applies to a put without one');
        const mh = await e.getWithMetadata(hour);
        assert.equal(mh.lifespan, 3600, 'an explicit lifespan overrides the default');
        const mi = await e.getWithMetadata(inf);
        assert.equal(mi.lifespan, -1, 'an infinite lifespan overrides the default');
        assert.equal(await e.get(dflt), 'default');
        await sleep(2600);
        assert.equal(await e.get(dflt), undefined, 'gone after the default lifespan');
        assert.equal(await e.containsKey(dflt), false);
        assert.equal(await e.get(hour), 'explicit', 'explicit lifespan: still there');
        assert.equal(await e.get(inf), 'forever', 'infinite lifespan: still there');
        await e.remove(hour);
        await e.remove(inf);
      });
    });
  }
}, { concurrency: true });
