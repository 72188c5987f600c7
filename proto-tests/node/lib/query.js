'use strict';
// Remote queries (QUERY, 0x1F) with the npm `infinispan` client, and the facts about them the
// tests lean on (read from node_modules/infinispan/lib/{infinispan,protocols,codec}.js, 0.16.x):
//  * `client.query({queryString, startOffset, maxResults, namedParameters})` encodes that object
//    as-is with protobufjs as org.infinispan.query.remote.client.QueryRequest
//    (lib/protostream/query.proto); a named parameter is `{name, value}` with `value` a
//    WrappedMessage object the caller builds ({wrappedString}, {wrappedInt32}, {wrappedInt64},
//    {wrappedBool}, ...). The op exists at every protocol version (IdsMixin, all of 2.2..4.1).
//  * the answer is decoded as a QueryResponse whose numResults, projectionSize and
//    totalResults(4) are `required`: protobufjs throws "missing required ..." (uncaught, out
//    of the socket handler, and the query never settles) if any of them is absent on the wire.
//    The client returns only the rows: for projections, arrays of projectionSize values (the
//    first field present in each result WrappedMessage, so int64 values come back as `Long`
//    objects); otherwise each result's wrappedBytes unwrapped again as a WrappedMessage and
//    decoded with the root registered by `registerProtostreamRoot` for the type registered with
//    `registerProtostreamType(name, typeId)` (a process-wide table in the client).
//  * the hit count (field 4) is dropped by the client: `queryResponse` below reads it from the
//    raw response, captured on its way into the client's own decoder.
//  * entities are written with dataFormat key/value 'application/x-protostream' from 2.9 (media
//    types in the header): the client wraps a protobufjs message as WrappedMessage{typeId,
//    bytes}, a string as wrappedString, a number as wrappedDouble. Below 2.9 it sends keys and
//    values as plain strings only, so it can query at 2.2/2.5 but not write entities.
//  * a server error comes back as the bare error string (rejection value).

const assert = require('node:assert/strict');
const path = require('node:path');
const protobuf = require('protobufjs');
const codec = require('infinispan/lib/codec');
const { withTimeout, errorText } = require('./client');

const QUERY_TIMEOUT_MS = 20_000;

// The QueryResponse as Infinispan 15/16 defines it (remote-query-client query.proto): field 4 is
// the hit count (the npm client's older copy calls it totalResults, int64: same varint on the
// wire), field 5 whether it is exact. All optional here, so the raw decode shows what was sent.
const RAW = protobuf.parse(`
syntax = "proto2";
package raw;
message QueryResponse {
  optional int32 numResults = 1;
  optional int32 projectionSize = 2;
  repeated bytes results = 3;
  optional int64 hitCount = 4;
  optional bool hitCountExact = 5;
}`).root.lookupType('raw.QueryResponse');

// The WrappedMessage definition the client itself uses, to read projected values exactly.
const WRAPPED = protobuf.loadSync(path.join(path.dirname(require.resolve('infinispan/lib/codec')), 'protostream', 'message-wrapping.proto'))
  .lookupType('org.infinispan.protostream.WrappedMessage');

// Every QueryResponse the client decodes, raw, in arrival order.
const captured = [];
(function captureQueryResponses() {
  const orig = codec.decodeQuery;
  codec.decodeQuery = function capturingDecodeQuery(...args) {
    const decode = orig(...args);
    return function (bytebuf) {
      const start = bytebuf.offset;
      const out = decode(bytebuf);
      captured.push(Buffer.from(bytebuf.buf.subarray(start, bytebuf.offset)));
      return out;
    };
  };
}());

function readVInt(buf) {
  let off = 0;
  let shift = 0;
  let val = 0;
  for (;;) {
    const b = buf[off++];
    val += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return [val, off];
    shift += 7;
  }
}

/**
 * Runs one query and returns what the client returned plus the raw response fields:
 * {rows, numResults, projectionSize, hitCount, hitCountExact, present: {field: bool}, wrapped}
 * (`wrapped`: each result WrappedMessage decoded, for projections: which wrapper field carries
 * the value). Queries on one process must not overlap (the capture is in arrival order).
 */
async function queryResponse(client, q) {
  const before = captured.length;
  const rows = await withTimeout(client.query(q), QUERY_TIMEOUT_MS, `query ${q.queryString}`);
  assert.equal(captured.length, before + 1, 'exactly one QueryResponse decoded for one query');
  const raw = captured[captured.length - 1];
  captured.length = 0;
  const [len, off] = readVInt(raw);
  const msg = RAW.decode(raw.subarray(off, off + len));
  const obj = RAW.toObject(msg, { longs: Number });
  const present = {};
  for (const f of ['numResults', 'projectionSize', 'hitCount', 'hitCountExact']) {
    present[f] = Object.prototype.hasOwnProperty.call(msg, f);
  }
  return {
    rows,
    numResults: obj.numResults,
    projectionSize: obj.projectionSize,
    hitCount: obj.hitCount,
    hitCountExact: obj.hitCountExact,
    present,
    wrapped: (obj.results || []).map((b) => WRAPPED.toObject(WRAPPED.decode(b), { longs: String, bytes: String })),
  };
}

/** Runs a query that must fail; returns the server's error text. */
async function queryError(client, q) {
  let rows;
  try {
    rows = await withTimeout(client.query(q), QUERY_TIMEOUT_MS, `query ${q.queryString}`);
  } catch (e) {
    captured.length = 0;
    return errorText(e);
  }
  throw new assert.AssertionError({ message: `query '${q.queryString}' should fail, returned ${JSON.stringify(rows)}` });
}

/** Named parameters as the client sends them: WrappedMessage objects built by the caller. */
const param = {
  string: (name, v) => ({ name, value: { wrappedString: v } }),
  int: (name, v) => ({ name, value: { wrappedInt32: v } }),
  long: (name, v) => ({ name, value: { wrappedInt64: v } }),
  bool: (name, v) => ({ name, value: { wrappedBool: v } }),
  double: (name, v) => ({ name, value: { wrappedDouble: v } }),
};

/** Plain JS values of a projection row: Long -> Number (the test values are small). */
function plain(v) {
  if (v && typeof v === 'object' && typeof v.toNumber === 'function' && 'low' in v && 'high' in v) return v.toNumber();
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

module.exports = { queryResponse, queryError, param, plain, QUERY_TIMEOUT_MS };
