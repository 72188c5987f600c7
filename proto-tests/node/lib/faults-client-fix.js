'use strict';
// npm `infinispan` client bug (0.16.x, lib/io.js#findFirstConnection), hit by every failover to an
// alternative cluster (the `clusters` option) when more than one candidate connection remains:
//
//   return _.foldl(lazyConns, function(state, f) {
//     return state.catch(function() { return f(); }).then(connF);
//   }, Promise.reject(...));
//
// `.then(connF)` runs once per remaining candidate: after the first successful connection installed
// its router, connF is called again with `true` (the previous connF's result), which disconnects the
// good router and installs a FixedRouter with an undefined connection. Every later request then
// fails with "TypeError: Cannot read properties of undefined (reading 'getAddress')": the client
// never fails over. (Seen against ferrod with three replicas: kill the first, every put fails.)
//
// The fix does what the function documents ("tries lazy connections in order and applies a callback
// to the first success"): connF runs only on the connection that just succeeded. The client's io.js
// is compiled from its own source with that one expression changed, before the client is loaded.
// Must be required before anything requires 'infinispan'.

const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');

const ioPath = require.resolve('infinispan/lib/io');
const mainPath = require.resolve('infinispan');
if (require.cache[mainPath] && !require.cache[ioPath]?.ferrodFindFirstConnectionFix) {
  throw new Error('lib/faults-client-fix.js must be required before the infinispan client is loaded');
}

if (!require.cache[ioPath]) {
  const src = fs.readFileSync(ioPath, 'utf8');
  const buggy = /return state\s*\.catch\(function\(\) \{ return f\(\); \} \) \/\/ if fails, try next\s*\.then\(connF\);/;
  if (!buggy.test(src)) throw new Error(`npm client io.js changed: findFirstConnection not as expected in ${ioPath}`);
  const fixed = src.replace(buggy, 'return state.catch(function() { return f().then(connF); }); // ferrod proto-tests: connF on the first success only');
  const m = new Module(ioPath, module);
  m.filename = ioPath;
  m.paths = Module._nodeModulePaths(path.dirname(ioPath));
  m._compile(fixed, ioPath);
  m.loaded = true;
  m.ferrodFindFirstConnectionFix = true;
  require.cache[ioPath] = m;
}

module.exports = { patched: true };
