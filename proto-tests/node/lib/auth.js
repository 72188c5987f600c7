'use strict';
// Shared by the SASL tests: users written with `ferrod user add`, the client's authentication options.

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const PASSWORD = 's3cret-pässword';
const BIN = process.env.FERROD_BIN || path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'ferrod');

/** `ferrod user add NAME --password PASSWORD --roles ROLES --file FILE`, which must succeed. */
function addUser(file, name, roles, password = PASSWORD) {
  const r = spawnSync(BIN, ['user', 'add', name, '--password', password, '--roles', roles, '--file', file],
    { encoding: 'utf8' });
  assert.equal(r.status, 0, `ferrod user add ${name}: ${r.stderr}`);
}

/** The npm client's options for SASL `mech` as `userName`. */
function sasl(mech, userName, password) {
  return { authentication: { enabled: true, saslMechanism: mech, userName, password } };
}

module.exports = { PASSWORD, addUser, sasl };
