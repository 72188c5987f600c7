'use strict';
// Client listeners (ADD_CLIENT_LISTENER / REMOVE_CLIENT_LISTENER and the event frames) at every
// protocol version: create/modify/remove events with the entries' versions, expiry events,
// includeState, removeListener, SKIP_LISTENER_NOTIFICATION (3.0+). Writes come from a second
// client, so the events are the server's, not an echo of the listening connection's own requests.
// Note: at 2.2/2.5 the npm client also sends the listener-interests byte (a 2.6 field); the
// reference accepts that request as the client sends it.

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { forEachTarget } = require('../lib/suite');
const { sleep } = require('../lib/servers');
const { infinispan, VERSIONS, connect, disconnect, key, numeric, withTimeout, errorText } = require('../lib/client');

const T = { timeout: 60_000 };
const EVENT_WAIT_MS = 10_000;

async function addListener(server, c, event, fn, opts) {
  try {
    return await withTimeout(c.addListener(event, fn, opts), 10_000, 'addListener');
  } catch (e) {
    // When ADD_CLIENT_LISTENER fails, the npm client hides the cause behind its own error
    // (e.g. "listeners is not defined"), so add what the server logged.
    throw new Error(`addListener failed: ${errorText(e)}; server warnings/errors:\n${server.problems()}`);
  }
}

/** Registers one listener for all four events; returns {id, events}. */
async function listenAll(server, c, opts) {
  const events = [];
  const push = (type) => (k, version) => events.push({ type, key: k, version: Buffer.isBuffer(version) ? version.toString('hex') : undefined });
  const id = await addListener(server, c, 'create', push('create'), opts);
  assert.equal(typeof id, 'string', `addListener answers with the listener id (got ${JSON.stringify(id)})`);
  await c.addListener('modify', push('modify'), { listenerId: id });
  await c.addListener('remove', push('remove'), { listenerId: id });
  await c.addListener('expiry', push('expiry'), { listenerId: id });
  return { id, events };
}

/** Waits until pred(events) holds; on failure shows the events of `keys` (or the last 30). */
async function waitFor(events, pred, what, keys) {
  const deadline = Date.now() + EVENT_WAIT_MS;
  while (Date.now() < deadline) {
    if (pred(events)) return;
    await sleep(50);
  }
  const shown = keys ? events.filter((e) => keys.includes(e.key)) : events.slice(-30);
  assert.fail(`${what}: not received within ${EVENT_WAIT_MS} ms; ${events.length} events in all, ${keys ? 'those of the keys concerned' : 'the last 30'}: ${JSON.stringify(shown)}`);
}

const ofKey = (events, k) => events.filter((e) => e.key === k);

forEachTarget('listeners', (server, target) => {
  for (const v of VERSIONS) {
    describe(`${target} protocol ${v}`, { concurrency: true }, () => {
      let c; // listens
      let w; // writes
      const k = (...p) => key('listen', v, ...p);
      const tag = `[${target} ${v}]`;

      before(async () => {
        c = await connect(server, v, 'raw');
        w = await connect(server, v, 'raw');
      }, { timeout: 30_000 });
      after(async () => {
        await disconnect(c);
        await disconnect(w);
      });

      test(`${tag} create/modify/remove events carry the key and the entry's version`, T, async () => {
        const { id, events } = await listenAll(server, c);
        const a = k('events', 'a');
        await w.put(a, '1');
        const v1 = (await w.getWithMetadata(a)).version.toString('hex');
        await w.put(a, '2');
        const v2 = (await w.getWithMetadata(a)).version.toString('hex');
        await w.replace(a, '3');
        const v3 = (await w.getWithMetadata(a)).version.toString('hex');
        await w.remove(a);
        await waitFor(events, (ev) => ofKey(ev, a).length >= 4, 'create, modify, modify, remove events', [a]);
        await sleep(200); // nothing more may come
        assert.deepEqual(ofKey(events, a), [
          { type: 'create', key: a, version: v1 },
          { type: 'modify', key: a, version: v2 },
          { type: 'modify', key: a, version: v3 },
          { type: 'remove', key: a, version: undefined },
        ], 'events of one key, in write order');
        // conditional writes: only the executed ones raise events
        const b = k('events', 'b');
        assert.equal(await w.putIfAbsent(b, 'x'), true);
        assert.equal(await w.putIfAbsent(b, 'y'), false);
        assert.equal(await w.replace(k('events', 'never'), 'z'), false);
        const vb = await w.getWithMetadata(b);
        assert.equal(await w.replaceWithVersion(b, 'w', Buffer.alloc(8, 7)), false);
        assert.equal(await w.replaceWithVersion(b, 'w', vb.version), true);
        const vb2 = (await w.getWithMetadata(b)).version.toString('hex');
        assert.equal(await w.removeWithVersion(b, vb.version), false);
        assert.equal(await w.removeWithVersion(b, Buffer.from(vb2, 'hex')), true);
        await waitFor(events, (ev) => ofKey(ev, b).length >= 3, 'events of the executed conditional writes', [b]);
        await sleep(200);
        assert.deepEqual(ofKey(events, b).map((e) => e.type), ['create', 'modify', 'remove'], 'no events for conditional writes that did nothing');
        assert.equal(ofKey(events, b)[0].version, vb.version.toString('hex'));
        assert.equal(ofKey(events, b)[1].version, vb2);
        assert.deepEqual(ofKey(events, k('events', 'never')), []);
        // the listening client's own writes raise events too
        const own = k('events', 'own');
        await c.put(own, 'mine');
        await waitFor(events, (ev) => ofKey(ev, own).length >= 1, 'event of a write on the listening connection', [own]);
        await c.remove(own);
        assert.equal(await c.removeListener(id), true);
      });

      test(`${tag} putAll raises create events`, T, async () => {
        const { id, events } = await listenAll(server, c);
        const pairs = [1, 2, 3].map((i) => ({ key: k('bulk', String(i)), value: String(i) }));
        await w.putAll(pairs);
        await waitFor(events, (ev) => pairs.every((p) => ofKey(ev, p.key).some((e) => e.type === 'create')), 'create events of putAll', pairs.map((p) => p.key));
        assert.equal(await c.removeListener(id), true);
      });

      test(`${tag} expiry event`, T, async () => {
        const { id, events } = await listenAll(server, c);
        const e = k('expiry');
        await w.put(e, 'short', { lifespan: '1s' });
        await sleep(1500);
        assert.equal(await w.get(e), undefined, 'expired');
        await waitFor(events, (ev) => ofKey(ev, e).some((x) => x.type === 'expiry'), 'expiry event', [e]);
        assert.deepEqual(ofKey(events, e).map((x) => x.type), ['create', 'expiry']);
        assert.equal(await c.removeListener(id), true);
      });

      test(`${tag} no events for writes acknowledged before the listener was added`, T, async () => {
        const before = [1, 2, 3].map((i) => k('before', String(i)));
        for (const kk of before) await w.put(kk, 'earlier');
        await w.put(before[0], 'modified earlier');
        const { id, events } = await listenAll(server, c);
        const marker = k('before', 'marker');
        await w.put(marker, 'after');
        await waitFor(events, (ev) => ofKey(ev, marker).length === 1, 'event of the write after addListener', [marker]);
        await sleep(500);
        const stale = events.filter((e) => before.includes(e.key));
        assert.deepEqual(stale, [], 'events for writes that were acknowledged before addListener');
        assert.equal(await c.removeListener(id), true);
      });

      test(`${tag} includeState: existing entries as create events`, T, async () => {
        const keys = [1, 2, 3].map((i) => k('state', String(i)));
        for (const kk of keys) await w.put(kk, 'there');
        const events = [];
        const id = await addListener(server, c, 'create', (kk, version) => events.push({ key: kk, version: version && version.toString('hex') }), { includeState: true });
        await waitFor(events, (ev) => keys.every((kk) => ofKey(ev, kk).length >= 1), 'a create event for every existing entry', keys);
        await sleep(500); // a late duplicate would show now
        for (const kk of keys) {
          assert.equal(ofKey(events, kk).length, 1, `exactly one create event for ${kk}, written before the listener: ${JSON.stringify(ofKey(events, kk))}`);
        }
        for (const kk of keys) {
          const m = await w.getWithMetadata(kk);
          assert.equal(ofKey(events, kk)[0].version, m.version.toString('hex'), `${kk}: version in the state event`);
        }
        assert.equal(await c.removeListener(id), true);
      });

      test(`${tag} removeListener: no events afterwards`, T, async () => {
        const { id, events } = await listenAll(server, c);
        const a = k('removed', 'a');
        await w.put(a, 'before');
        await waitFor(events, (ev) => ofKey(ev, a).length === 1, 'event before removeListener', [a]);
        assert.equal(await c.removeListener(id), true, 'removeListener of a registered listener');
        await w.put(a, 'after');
        await w.remove(a);
        await sleep(800);
        assert.equal(ofKey(events, a).length, 1, `no events after removeListener: ${JSON.stringify(events)}`);
        await c.ping();
      });

      test(`${tag} near cache: another client's writes invalidate it`, T, async () => {
        // The client's near cache registers a listener on connect and drops a key on its events.
        let n;
        try {
          n = await connect(server, v, 'raw', { nearCache: { maxEntries: 100 } });
        } catch (e) {
          throw new Error(`connect with a near cache failed: ${errorText(e)}; server warnings/errors:\n${server.problems()}`);
        }
        try {
          const a = k('near', 'a');
          await w.put(a, '1');
          assert.equal(await withTimeout(n.get(a), 5_000, 'near-cache client get'), '1');
          assert.ok(n.nearCacheSize() >= 1, 'the value is in the near cache');
          await w.put(a, '2');
          const until = async (want, what) => {
            const deadline = Date.now() + EVENT_WAIT_MS;
            let got;
            while (Date.now() < deadline) {
              got = await withTimeout(n.get(a), 5_000, 'near-cache client get');
              if (got === want) return;
              await sleep(50);
            }
            assert.fail(`${what}: near-cached get still answers ${JSON.stringify(got)} after ${EVENT_WAIT_MS} ms`);
          };
          await until('2', 'modify invalidates');
          await w.remove(a);
          await until(undefined, 'remove invalidates');
        } finally {
          await disconnect(n);
        }
      });

      const skipFlag = numeric(v === 'auto' ? '4.1' : v) < 30 && 'SKIP_LISTENER_NOTIFICATION exists from 3.0';
      test(`${tag} SKIP_LISTENER_NOTIFICATION: no event for that write`, { ...T, skip: skipFlag }, async () => {
        const { id, events } = await listenAll(server, c);
        const a = k('skip', 'a');
        const b = k('skip', 'b');
        await w.put(a, 'quiet', { flags: infinispan.flags.SKIP_LISTENER_NOTIFICATION });
        await w.put(b, 'loud');
        await waitFor(events, (ev) => ofKey(ev, b).length === 1, 'event of the write without the flag', [b]);
        await sleep(300);
        assert.deepEqual(ofKey(events, a), [], 'no event for the write with SKIP_LISTENER_NOTIFICATION');
        assert.equal(await w.get(a), 'quiet', 'the write itself happened');
        assert.equal(await c.removeListener(id), true);
      });
    });
  }
}, { concurrency: true });
