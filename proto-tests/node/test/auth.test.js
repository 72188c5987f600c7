'use strict';
// SASL with the npm client: SCRAM-SHA-256 and PLAIN at every version it has SASL in (2.9+), a wrong password and an
// unknown user refused, an observer refused a write. Users are written with `ferrod user add`.
// ferrod only: the reference server runs without security.

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Server, targets } = require('../lib/servers');
const { VERSIONS, connect, disconnect, disconnectAll, key, errorText } = require('../lib/client');
const { PASSWORD, addUser, sasl } = require('../lib/auth');

const T = { timeout: 60_000 };
// The npm client speaks SASL from 2.9 on (protocols.js: SASLMixin is not in Protocol22/25, whose
// AUTH_MECH_LIST decoder is missing, so it reports "supported server mechanisms: undefined").
const SASL_VERSIONS = VERSIONS.filter((v) => v !== '2.2' && v !== '2.5');

if (targets().includes('ferrod')) {
  describe('ferrod', () => {
    const server = new Server('ferrod', 'auth');
    let dir;
    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrod-node-auth-'));
      const file = path.join(dir, 'users');
      addUser(file, 'app', 'application');
      addUser(file, 'reader', 'observer');
      server.ferrodArgs = ['--credentials-file', file];
      await server.start();
    }, { timeout: 120_000 });
    after(async () => {
      await disconnectAll();
      await server.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    }, { timeout: 60_000 });

    for (const v of SASL_VERSIONS) {
      const tag = `[ferrod ${v}]`;
      for (const mech of ['SCRAM-SHA-256', 'PLAIN']) {
        test(`${tag} ${mech} authenticates, then put/get/remove`, T, async () => {
          const c = await connect(server, v, 'raw', sasl(mech, 'app', PASSWORD));
          try {
            const k = key(`auth-${mech}`, v);
            await c.put(k, mech);
            assert.equal(await c.get(k), mech);
            assert.equal(await c.remove(k), true);
            assert.equal(await c.get(k), undefined);
          } finally {
            await disconnect(c);
          }
        });

        test(`${tag} ${mech} with a wrong password or an unknown user is refused`, T, async () => {
          for (const [user, pw] of [['app', 'wrong'], ['ghost', PASSWORD]]) {
            await assert.rejects(
              connect(server, v, 'raw', { ...sasl(mech, user, pw), maxRetries: 0 }),
              (e) => {
                assert.match(errorText(e), /authentication failed/, `${user}: ${errorText(e)}`);
                return true;
              },
            );
          }
        });
      }

      test(`${tag} an observer reads but may not write`, T, async () => {
        const writer = await connect(server, v, 'raw', sasl('SCRAM-SHA-256', 'app', PASSWORD));
        const reader = await connect(server, v, 'raw', sasl('SCRAM-SHA-256', 'reader', PASSWORD));
        try {
          const k = key('auth-observer', v);
          await writer.put(k, 'v');
          assert.equal(await reader.get(k), 'v');
          await assert.rejects(reader.put(k, 'w'), (e) => {
            assert.match(errorText(e), /lacks 'WRITE' permission/, errorText(e));
            return true;
          });
          assert.equal(await reader.get(k), 'v', 'still usable after a refusal');
        } finally {
          await disconnect(writer);
          await disconnect(reader);
        }
      });
    }
  });
}
