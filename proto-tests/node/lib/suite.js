'use strict';
// One server per target per test file: describe(<target>) starts it before its tests and stops it
// (and removes its data) after them.

const { describe, before, after } = require('node:test');
const { Server, targets } = require('./servers');
const { disconnectAll } = require('./client');

const START_HOOK_TIMEOUT_MS = 15 * 60_000; // a first reference start may build it with Maven

/**
 * @param {string} file short name of the test file (data directory and log names)
 * @param {(server: Server, target: string) => void} body declares the tests for one target
 * @param {{concurrency?: boolean, referenceLine?: string}} opts concurrency: run the target's
 *   suites at the same time; referenceLine: the Infinispan release line the file needs (see servers.js)
 */
function forEachTarget(file, body, opts = {}) {
  for (const target of targets()) {
    describe(target, { concurrency: opts.concurrency || false }, () => {
      const server = new Server(target, file, { referenceLine: opts.referenceLine });
      before(() => server.start(), { timeout: START_HOOK_TIMEOUT_MS });
      after(async () => {
        await disconnectAll();
        await server.destroy();
      }, { timeout: 60_000 });
      body(server, target);
    });
  }
}

module.exports = { forEachTarget };
