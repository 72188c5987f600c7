'use strict';
// Remote queries (QUERY 0x1F, Ickle) through the npm client's `client.query()`, at every protocol
// version the client speaks (the op exists in all of them), against ferrod and a real Infinispan
// 15.0 (the 16.x reference is built without remote query, so this file pins line 15).
//
// A .proto schema is registered by a put into ___protobuf_metadata; entities are written as the
// client writes them with dataFormat application/x-protostream (protobufjs messages wrapped as
// WrappedMessage{typeId, bytes}, by a 4.1 client: below 2.9 the client cannot send protostream
// values). Every expected answer below is a literal, the same for both targets: where Infinispan
// is deterministic (ORDER BY with distinct keys, counts, hit counts) both must give exactly it.
// See lib/query.js for how the client encodes the request and decodes the response.

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const protobuf = require('protobufjs');
const { forEachTarget } = require('../lib/suite');
const { VERSIONS, connect, disconnect, withTimeout, RUN } = require('../lib/client');
const { queryResponse, queryError, param, plain } = require('../lib/query');

const T = { timeout: 60_000 };
const PROTO = { dataFormat: { keyType: 'application/x-protostream', valueType: 'application/x-protostream' } };
const TEXT = { dataFormat: { keyType: 'text/plain', valueType: 'text/plain' } };

// One package per run (repeated runs against one PostgreSQL database never share types), and type
// ids picked per run for the same reason (a registry refuses two types with one id).
const PKG = `npmq_${RUN}`;
const ID_BASE = 1_000_000 + 2 * Math.floor(Math.random() * 400_000);
const BOOK = `${PKG}.Book`;
const TICKET = `${PKG}.Ticket`;
const SCHEMA_FILE = `${PKG}.proto`;
// proto2, so an unset optional field is absent on the wire (null in queries) and `false`/0 are
// real values.
const SCHEMA = `syntax = "proto2";
package ${PKG};

/** @TypeId(${ID_BASE}) */
message Book {
  required string title = 1;
  optional string author = 2;
  optional int32 year = 3;
  optional int64 copies = 4;
  optional bool available = 5;
  optional double price = 6;
  optional string genre = 7;
}

/** @TypeId(${ID_BASE + 1}) */
message Ticket {
  required string id = 1;
  required string batch = 2;
  optional string state = 3;
  optional int32 priority = 4;
}
`;
const root = protobuf.parse(SCHEMA).root;
const Book = root.lookupType(`.${BOOK}`);
const Ticket = root.lookupType(`.${TICKET}`);

// The client's protobuf root and type-id table are process-wide (whichever client registers
// them): once for both targets.
let typesRegistered = false;
function registerTypes(client) {
  if (typesRegistered) return;
  client.registerProtostreamRoot(root);
  client.registerProtostreamType(`.${BOOK}`, ID_BASE);
  client.registerProtostreamType(`.${TICKET}`, ID_BASE + 1);
  typesRegistered = true;
}

// The library. Anonymous Diaries leaves author, copies, price and genre unset (nulls).
const BOOKS = [
  { title: 'Dune', author: 'Herbert', year: 1965, copies: 120, available: true, price: 9.99, genre: 'scifi' },
  { title: 'Emma', author: 'Austen', year: 1815, copies: 45, available: false, price: 5.5, genre: 'classic' },
  { title: 'Ulysses', author: 'Joyce', year: 1922, copies: 30, available: true, price: 12.0, genre: 'classic' },
  { title: 'Neuromancer', author: 'Gibson', year: 1984, copies: 80, available: true, price: 8.75, genre: 'scifi' },
  { title: 'Persuasion', author: 'Austen', year: 1817, copies: 25, available: true, price: 6.25, genre: 'classic' },
  { title: 'Hyperion', author: 'Simmons', year: 1989, copies: 5_000_000_000, available: false, price: 10.5, genre: 'scifi' },
  { title: 'Dracula', author: 'Stoker', year: 1897, copies: 55, available: true, price: 7.0, genre: 'horror' },
  { title: 'Carrie', author: 'King', year: 1974, copies: 70, available: false, price: 8.0, genre: 'horror' },
  { title: 'Foundation', author: 'Asimov', year: 1951, copies: 100, available: true, price: 9.0, genre: 'scifi' },
  { title: 'Sense and Sensibility', author: 'Austen', year: 1811, copies: 40, available: true, price: 6.0, genre: 'classic' },
  { title: 'Anonymous Diaries', year: 2020, available: false },
];
const bookKey = (b) => `${PKG}:book:${b.title}`;
const byTitle = Object.fromEntries(BOOKS.map((b) => [b.title, b]));

const titles = (rows) => rows.map((r) => r.title);
const asObject = (type, msg) => type.toObject(msg, { longs: Number });

forEachTarget('query', (server, target) => {
  let meta; // ___protobuf_metadata, text/plain
  let writer; // the proto cache at 4.1, application/x-protostream

  before(async () => {
    meta = await connect(server, '4.1', '___protobuf_metadata', TEXT);
    await meta.put(SCHEMA_FILE, SCHEMA);
    assert.equal(await meta.get(`${SCHEMA_FILE}.errors`), undefined, 'the schema registers without errors');
    writer = await connect(server, '4.1', 'proto', PROTO);
    registerTypes(writer);
    for (const b of BOOKS) await writer.put(bookKey(b), Book.create(b));
  }, { timeout: 60_000 });
  after(async () => {
    await disconnect(writer);
    await disconnect(meta);
  });

  test(`[${target}] entities round-trip through get as written`, T, async () => {
    const got = await writer.get(bookKey(byTitle.Hyperion));
    assert.deepEqual(asObject(Book, got), byTitle.Hyperion);
  });

  for (const v of VERSIONS) {
    describe(`${target} protocol ${v}`, () => {
      let c;
      const tag = `[${target} ${v}]`;
      const q = (queryString, more = {}) => queryResponse(c, { queryString, ...more });
      const fromBooks = `FROM ${BOOK} b`;

      before(async () => { c = await connect(server, v, 'proto', PROTO); }, { timeout: 30_000 });
      after(() => disconnect(c));

      test(`${tag} equality on string, int and bool fields; entities decoded whole`, T, async () => {
        const austen = await q(`${fromBooks} WHERE b.author = 'Austen' ORDER BY b.year`);
        assert.deepEqual(titles(austen.rows), ['Sense and Sensibility', 'Emma', 'Persuasion']);
        assert.deepEqual(austen.rows.map((r) => asObject(Book, r)), [byTitle['Sense and Sensibility'], byTitle.Emma, byTitle.Persuasion],
          'entities come back as stored');
        assert.equal(austen.projectionSize, 0);
        assert.equal(austen.numResults, 3);
        assert.equal(austen.hitCount, 3);

        const y1984 = await q(`${fromBooks} WHERE b.year = 1984`);
        assert.deepEqual(titles(y1984.rows), ['Neuromancer']);

        const out = await q(`${fromBooks} WHERE b.available = false ORDER BY b.title`);
        assert.deepEqual(titles(out.rows), ['Anonymous Diaries', 'Carrie', 'Emma', 'Hyperion']);

        const none = await q(`${fromBooks} WHERE b.title = 'Moby Dick'`);
        assert.deepEqual(none.rows, []);
        assert.deepEqual([none.numResults, none.projectionSize, none.hitCount], [0, 0, 0]);
        // The client decodes only a response with every required field (lib/query.js).
        assert.deepEqual(none.present, { numResults: true, projectionSize: true, hitCount: true, hitCountExact: true });
      });

      test(`${tag} ranges: < <= > >=, BETWEEN, int64 beyond 2^32`, T, async () => {
        const r = await q(`${fromBooks} WHERE b.year >= 1900 AND b.year < 1970 ORDER BY b.year`);
        assert.deepEqual(titles(r.rows), ['Ulysses', 'Foundation', 'Dune']);
        const between = await q(`${fromBooks} WHERE b.price BETWEEN 7.0 AND 9.0 ORDER BY b.price`);
        assert.deepEqual(titles(between.rows), ['Dracula', 'Carrie', 'Neuromancer', 'Foundation']);
        const big = await q(`${fromBooks} WHERE b.copies > 4294967296`);
        assert.deepEqual(titles(big.rows), ['Hyperion']);
        const le = await q(`${fromBooks} WHERE b.copies <= 40 ORDER BY b.copies DESC`);
        assert.deepEqual(titles(le.rows), ['Sense and Sensibility', 'Ulysses', 'Persuasion']);
      });

      test(`${tag} IN, NOT IN and LIKE (% and _)`, T, async () => {
        const inq = await q(`${fromBooks} WHERE b.genre IN ('horror', 'classic') ORDER BY b.title`);
        assert.deepEqual(titles(inq.rows), ['Carrie', 'Dracula', 'Emma', 'Persuasion', 'Sense and Sensibility', 'Ulysses']);
        const years = await q(`${fromBooks} WHERE b.year IN (1815, 1984, 1999) ORDER BY b.year`);
        assert.deepEqual(titles(years.rows), ['Emma', 'Neuromancer']);
        const notIn = await q(`${fromBooks} WHERE b.genre NOT IN ('scifi', 'classic') ORDER BY b.title`);
        assert.deepEqual(titles(notIn.rows), ['Anonymous Diaries', 'Carrie', 'Dracula']);
        const prefix = await q(`${fromBooks} WHERE b.title LIKE 'D%' ORDER BY b.title`);
        assert.deepEqual(titles(prefix.rows), ['Dracula', 'Dune']);
        const suffix = await q(`${fromBooks} WHERE b.title LIKE '%ion' ORDER BY b.title`);
        assert.deepEqual(titles(suffix.rows), ['Foundation', 'Hyperion', 'Persuasion']);
        const one = await q(`${fromBooks} WHERE b.author LIKE 'K_ng'`);
        assert.deepEqual(titles(one.rows), ['Carrie']);
        const notLike = await q(`${fromBooks} WHERE b.genre = 'classic' AND b.title NOT LIKE '%s%' ORDER BY b.title`);
        assert.deepEqual(titles(notLike.rows), ['Emma']);
      });

      test(`${tag} AND / OR / NOT, nested, with nulls`, T, async () => {
        const r = await q(`${fromBooks} WHERE (b.genre = 'scifi' AND b.year > 1980) OR (b.author = 'Austen' AND NOT b.available = true) ORDER BY b.title`);
        assert.deepEqual(titles(r.rows), ['Emma', 'Hyperion', 'Neuromancer']);
        const not = await q(`${fromBooks} WHERE NOT (b.genre = 'scifi' OR b.genre = 'classic') ORDER BY b.title`);
        assert.deepEqual(titles(not.rows), ['Anonymous Diaries', 'Carrie', 'Dracula']);
        const ne = await q(`${fromBooks} WHERE b.author != 'Austen' AND b.year > 1960 ORDER BY b.title`);
        assert.deepEqual(titles(ne.rows), ['Anonymous Diaries', 'Carrie', 'Dune', 'Hyperion', 'Neuromancer']);
        const isNull = await q(`${fromBooks} WHERE b.genre IS NULL`);
        assert.deepEqual(titles(isNull.rows), ['Anonymous Diaries']);
        // && and || (as Keycloak writes them) bind like AND and OR
        const symbols = await q(`${fromBooks} WHERE b.genre = 'horror' && NOT (b.available = true) || b.year = 1965 ORDER BY b.title`);
        assert.deepEqual(titles(symbols.rows), ['Carrie', 'Dune']);
      });

      test(`${tag} named parameters: string, int, long, bool, double`, T, async () => {
        const r = await q(`${fromBooks} WHERE b.author = :author AND b.year > :year AND b.copies < :copies AND b.available = :avail`, {
          namedParameters: [param.string('author', 'Austen'), param.int('year', 1812), param.long('copies', 44), param.bool('avail', true)],
        });
        assert.deepEqual(titles(r.rows), ['Persuasion']);
        const big = await q(`${fromBooks} WHERE b.copies >= :copies`, { namedParameters: [param.long('copies', '5000000000')] });
        assert.deepEqual(titles(big.rows), ['Hyperion'], 'an int64 parameter beyond 2^32 (sent as a decimal string)');
        const unavailable = await q(`${fromBooks} WHERE b.available = :a ORDER BY b.year DESC`, { namedParameters: [param.bool('a', false)] });
        assert.deepEqual(titles(unavailable.rows), ['Anonymous Diaries', 'Hyperion', 'Carrie', 'Emma']);
        const price = await q(`${fromBooks} WHERE b.price > :p ORDER BY b.price`, { namedParameters: [param.double('p', 9.5)] });
        assert.deepEqual(titles(price.rows), ['Dune', 'Hyperion', 'Ulysses']);
        const inParams = await q(`${fromBooks} WHERE b.title IN (:t1, :t2) ORDER BY b.title`, {
          namedParameters: [param.string('t1', 'Emma'), param.string('t2', 'Dune')],
        });
        assert.deepEqual(titles(inParams.rows), ['Dune', 'Emma']);
        // the same parameter used twice
        const twice = await q(`${fromBooks} WHERE b.year > :y AND b.year < :y2 OR b.year = :y ORDER BY b.year`, {
          namedParameters: [param.int('y', 1951), param.int('y2', 1970)],
        });
        assert.deepEqual(titles(twice.rows), ['Foundation', 'Dune']);
      });

      test(`${tag} parameters and quoted literals converted to the field's type`, T, async () => {
        // A JS number wrapped as the client wraps numbers (wrappedDouble) for int/long fields:
        // converted as Java's Number.intValue/longValue would (truncated).
        const year = `SELECT b.title FROM ${BOOK} b WHERE b.year = :y`;
        assert.deepEqual((await q(year, { namedParameters: [param.double('y', 1984)] })).rows, [['Neuromancer']]);
        assert.deepEqual((await q(year, { namedParameters: [param.double('y', 1984.7)] })).rows, [['Neuromancer']]);
        const copies = await q(`SELECT b.title FROM ${BOOK} b WHERE b.copies > :c ORDER BY b.copies`, { namedParameters: [param.double('c', 99.5)] });
        assert.deepEqual(copies.rows, [['Foundation'], ['Dune'], ['Hyperion']]);
        // an int for a double field, a long for an int field, an int for a long field
        assert.deepEqual((await q(`SELECT b.title FROM ${BOOK} b WHERE b.price = :p`, { namedParameters: [param.int('p', 8)] })).rows, [['Carrie']]);
        assert.deepEqual((await q(year, { namedParameters: [param.long('y', 1965)] })).rows, [['Dune']]);
        assert.deepEqual((await q(`SELECT b.title FROM ${BOOK} b WHERE b.copies = :c`, { namedParameters: [param.int('c', 120)] })).rows, [['Dune']]);
        // strings parsed as the field's type
        assert.deepEqual((await q(year, { namedParameters: [param.string('y', '1922')] })).rows, [['Ulysses']]);
        const cheap = await q(`SELECT b.title FROM ${BOOK} b WHERE b.price < :p ORDER BY b.price`, { namedParameters: [param.string('p', '6.1')] });
        assert.deepEqual(cheap.rows, [['Emma'], ['Sense and Sensibility']]);
        const avail = await q(`SELECT count(b) FROM ${BOOK} b WHERE b.available = :a`, { namedParameters: [param.string('a', 'true')] });
        assert.deepEqual(avail.rows.map(plain), [[7]]);
        // quoted literals likewise
        assert.deepEqual((await q(`SELECT b.title FROM ${BOOK} b WHERE b.year = '1897'`)).rows, [['Dracula']]);
        assert.deepEqual((await q(`SELECT count(b) FROM ${BOOK} b WHERE b.available = 'false'`)).rows.map(plain), [[4]]);
      });

      test(`${tag} projections: every field type, wrapped as Infinispan wraps them; nulls`, T, async () => {
        const r = await q(`SELECT b.title, b.author, b.year, b.copies, b.available, b.price FROM ${BOOK} b WHERE b.genre = 'horror' OR b.copies > 1000 ORDER BY b.year`);
        assert.equal(r.projectionSize, 6);
        assert.equal(r.numResults, 3);
        assert.deepEqual(r.rows.map(plain), [
          ['Dracula', 'Stoker', 1897, 55, true, 7.0],
          ['Carrie', 'King', 1974, 70, false, 8.0],
          ['Hyperion', 'Simmons', 1989, 5_000_000_000, false, 10.5],
        ]);
        // which WrappedMessage field carries each value (the Java type of the field)
        assert.deepEqual(r.wrapped.slice(0, 6), [
          { wrappedString: 'Dracula' }, { wrappedString: 'Stoker' }, { wrappedInt32: 1897 },
          { wrappedInt64: '55' }, { wrappedBool: true }, { wrappedDouble: 7 },
        ]);
        const nulls = await q(`SELECT b.title, b.author, b.copies FROM ${BOOK} b WHERE b.year = 2020`);
        assert.deepEqual(nulls.rows.map(plain), [['Anonymous Diaries', undefined, undefined]], 'unset fields project as empty wrappers');
        assert.deepEqual(nulls.wrapped.slice(1), [{}, {}]);
      });

      test(`${tag} count(), count(field), GROUP BY with counts`, T, async () => {
        const all = await q(`SELECT count(b) FROM ${BOOK} b`);
        assert.deepEqual(all.rows.map(plain), [[11]]);
        assert.deepEqual(all.wrapped, [{ wrappedInt64: '11' }], 'count() is a long');
        assert.equal(all.hitCount, 1, 'a count query has one row');
        const scifi = await q(`SELECT count(b) FROM ${BOOK} b WHERE b.genre = :g`, { namedParameters: [param.string('g', 'scifi')] });
        assert.deepEqual(scifi.rows.map(plain), [[4]]);
        const authors = await q(`SELECT count(b.author) FROM ${BOOK} b`);
        assert.deepEqual(authors.rows.map(plain), [[10]], 'count(field) skips nulls');
        const none = await q(`SELECT count(b) FROM ${BOOK} b WHERE b.year > 3000`);
        assert.deepEqual(none.rows.map(plain), [[0]]);
        const groups = await q(`SELECT b.genre, count(b) FROM ${BOOK} b WHERE b.genre IS NOT NULL GROUP BY b.genre ORDER BY b.genre`);
        assert.deepEqual(groups.rows.map(plain), [['classic', 4], ['horror', 2], ['scifi', 4]]);
      });

      test(`${tag} ORDER BY several keys, ASC and DESC`, T, async () => {
        const r = await q(`SELECT b.author, b.year, b.title FROM ${BOOK} b WHERE b.genre = 'classic' OR b.genre = 'scifi' ORDER BY b.author ASC, b.year DESC`);
        assert.deepEqual(r.rows.map(plain), [
          ['Asimov', 1951, 'Foundation'],
          ['Austen', 1817, 'Persuasion'],
          ['Austen', 1815, 'Emma'],
          ['Austen', 1811, 'Sense and Sensibility'],
          ['Gibson', 1984, 'Neuromancer'],
          ['Herbert', 1965, 'Dune'],
          ['Joyce', 1922, 'Ulysses'],
          ['Simmons', 1989, 'Hyperion'],
        ]);
        const r2 = await q(`SELECT b.title FROM ${BOOK} b WHERE b.price IS NOT NULL ORDER BY b.available DESC, b.price ASC`);
        assert.deepEqual(r2.rows.map((row) => row[0]), [
          'Sense and Sensibility', 'Persuasion', 'Dracula', 'Neuromancer', 'Foundation', 'Dune', 'Ulysses',
          'Emma', 'Carrie', 'Hyperion',
        ]);
        const r3 = await q(`${fromBooks} WHERE b.author = 'Austen' ORDER BY b.available ASC, b.title DESC`);
        assert.deepEqual(titles(r3.rows), ['Emma', 'Sense and Sensibility', 'Persuasion']);
      });

      test(`${tag} paging: startOffset / maxResults, with the hit count of every match`, T, async () => {
        const ordered = `${fromBooks} ORDER BY b.year`;
        const page = await q(ordered, { startOffset: 2, maxResults: 3 });
        assert.deepEqual(titles(page.rows), ['Persuasion', 'Dracula', 'Ulysses']);
        assert.equal(page.numResults, 3);
        assert.equal(page.hitCount, 11, 'the hit count counts every match, not the page');
        assert.equal(page.hitCountExact, true);
        const first = await q(ordered, { maxResults: 2 });
        assert.deepEqual(titles(first.rows), ['Sense and Sensibility', 'Emma']);
        assert.equal(first.hitCount, 11);
        const last = await q(ordered, { startOffset: 9, maxResults: 5 });
        assert.deepEqual(titles(last.rows), ['Hyperion', 'Anonymous Diaries']);
        const beyond = await q(ordered, { startOffset: 20, maxResults: 5 });
        assert.deepEqual(beyond.rows, []);
        assert.equal(beyond.hitCount, 11);
        const projected = await q(`SELECT b.title FROM ${BOOK} b WHERE b.genre = 'scifi' ORDER BY b.year DESC`, { startOffset: 1, maxResults: 2 });
        assert.deepEqual(projected.rows, [['Neuromancer'], ['Dune']]);
        assert.equal(projected.hitCount, 4);
        const filtered = await q(`${fromBooks} WHERE b.available = true ORDER BY b.price DESC`, { startOffset: 0, maxResults: 100 });
        assert.equal(filtered.hitCount, 7);
        assert.equal(filtered.numResults, 7);
      });

      test(`${tag} DELETE FROM ... WHERE removes exactly the matches`, T, async () => {
        const batch = `b-${v}`;
        const tickets = [
          { id: 't1', batch, state: 'closed', priority: 1 },
          { id: 't2', batch, state: 'open', priority: 5 },
          { id: 't3', batch, state: 'closed', priority: 9 },
          { id: 't4', batch, state: 'open', priority: 0 },
          { id: 't5', batch, priority: 3 },
        ];
        const tk = (t) => `${PKG}:ticket:${batch}:${t.id}`;
        for (const t of tickets) await writer.put(tk(t), Ticket.create(t));
        const del = await q(`DELETE FROM ${TICKET} t WHERE t.batch = :batch AND (t.state = 'closed' OR t.priority < :p)`, {
          namedParameters: [param.string('batch', batch), param.int('p', 1)],
        });
        assert.deepEqual(del.rows, []);
        assert.equal(del.hitCount, 3, 'the hit count of a DELETE is the number of entries removed');
        for (const t of tickets) {
          const got = await writer.get(tk(t));
          if (['t1', 't3', 't4'].includes(t.id)) assert.equal(got, undefined, `${t.id} deleted`);
          else assert.deepEqual(asObject(Ticket, got), t, `${t.id} kept`);
        }
        const left = await q(`SELECT t.id FROM ${TICKET} t WHERE t.batch = :batch ORDER BY t.id`, { namedParameters: [param.string('batch', batch)] });
        assert.deepEqual(left.rows, [['t2'], ['t5']]);
        const again = await q(`DELETE FROM ${TICKET} t WHERE t.batch = :batch AND t.state = 'closed'`, { namedParameters: [param.string('batch', batch)] });
        assert.equal(again.hitCount, 0, 'nothing left to delete');
        // the library is another type: untouched
        const books = await q(`SELECT count(b) FROM ${BOOK} b`);
        assert.deepEqual(books.rows.map(plain), [[11]]);
      });

      test(`${tag} bad queries fail with a clear error, change nothing, and the connection goes on`, T, async () => {
        // Each target's own words for the same class of error (a server error naming the cause).
        const expect = {
          unknownEntity: { ferrod: /unknown entity 'npmq_\w+\.Nope'/, infinispan: /Unknown type name : npmq_\w+\.Nope/ },
          unknownField: { ferrod: /has no field 'nope'/, infinispan: /ISPN028501: .* does not have an accessible property named 'nope'/ },
          syntax: { ferrod: /ParsingException: syntax error at column \d+/, infinispan: /ParsingException: ISPN028526: Invalid query/ },
          fullText: {
            ferrod: /ParsingException: not supported at column \d+: full-text queries \(field : term\) are not supported/,
            infinispan: /ParsingException: ISPN028521: Full-text queries cannot be applied to property 'title'/,
          },
          paramType: { ferrod: /parameter ':y' is string but field year is integer/, infinispan: /NumberFormatException: For input string: "x"/ },
          paramMissing: { ferrod: /parameter ':y' was not set/, infinispan: /ISPN014825: Query parameter 'y' was not set/ },
        };
        const cases = [
          ['unknownEntity', { queryString: `FROM ${PKG}.Nope n` }],
          ['unknownEntity', { queryString: `DELETE FROM ${PKG}.Nope n WHERE n.x = 1` }],
          ['unknownField', { queryString: `SELECT b.nope FROM ${BOOK} b` }],
          ['syntax', { queryString: `${fromBooks} WHERE b.year = ` }],
          ['syntax', { queryString: `SELEC b.title FROM ${BOOK} b` }],
          ['fullText', { queryString: `SELECT b.title FROM ${BOOK} b WHERE b.title : 'dune'` }],
          ['paramType', { queryString: `SELECT b.title FROM ${BOOK} b WHERE b.year = :y`, namedParameters: [param.string('y', 'x')] }],
          ['paramMissing', { queryString: `SELECT b.title FROM ${BOOK} b WHERE b.year = :y` }],
        ];
        for (const [kind, req] of cases) {
          const err = await queryError(c, req);
          assert.match(err, expect[kind][target], `${kind}: ${req.queryString} -> ${err}`);
        }
        // nothing was removed, and the connection still answers
        const books = await q(`SELECT count(b) FROM ${BOOK} b`);
        assert.deepEqual(books.rows.map(plain), [[11]]);
        await withTimeout(c.ping(), 10_000, 'ping after the errors');
      });
    });
  }
}, { referenceLine: '15' });
