//! SQL access, one small function per statement shape, in both dialects.
//!
//! The two backends differ where it matters for speed: SQLite runs in-process, so per-row
//! prepared statements are cheapest there; PostgreSQL is a network round trip away, so the
//! batch statements send whole arrays (`UNNEST`/`ANY`) and cost one round trip per statement
//! shape rather than per key.

pub(crate) mod migrations;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Postgres, Row as _, Sqlite, Transaction};

use crate::entry::{Row, RowMeta};
use crate::{CacheDef, StoreConfig, StoreError};

/// How many keys go into one `ANY($n)` array. Bounds statement size; PostgreSQL has no hard
/// limit, but huge arrays make slow plans and big messages.
pub(crate) const PG_CHUNK: usize = 1000;

/// SQLite: rows per multi-row statement. Each statement is a hop to sqlx's SQLite worker
/// thread (a thread wake-up, costly on a busy machine), so a batch sends a few multi-row
/// statements rather than one per key. Row lists are sent in power-of-two sizes, so a
/// connection prepares (and caches) only a few distinct statement texts.
const SQLITE_CHUNK: usize = 128;

/// `?, ?, ...` (n placeholders).
fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// `(?, ?), (?, ?), ...` (rows x cols placeholders).
fn value_rows(rows: usize, cols: usize) -> String {
    let one = format!("({})", placeholders(cols));
    vec![one; rows].join(", ")
}

/// Splits `n` items into power-of-two parts of at most `SQLITE_CHUNK` (largest first), for
/// statements that must not repeat a row.
fn pow2_parts(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let part = if n >= SQLITE_CHUNK {
            SQLITE_CHUNK
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        out.push(part);
        n -= part;
    }
    out
}

/// Writes `rows` of `cache` to SQLite as multi-row `INSERT ... ON CONFLICT (cache, key)
/// <on_conflict>` statements, one per chunk of at most `SQLITE_CHUNK` rows padded to a power of
/// two by repeating the last row (so each connection caches few statement texts). Returns the
/// rows affected.
async fn sqlite_write_rows(
    t: &mut SqliteTx,
    cache: &str,
    rows: &[(&Bytes, &Row)],
    on_conflict: &str,
) -> Result<u64, sqlx::Error> {
    let mut n = 0;
    for chunk in rows.chunks(SQLITE_CHUNK) {
        let m = padded(chunk.len());
        let sql = format!(
            "INSERT INTO ferrod_entries (cache, key, value, version, created_ms, lifespan_ms, \
             last_used_ms, max_idle_ms, expires_ms) VALUES {} ON CONFLICT (cache, key) {on_conflict}",
            value_rows(m, 9)
        );
        let mut q = sqlx::query(&sql);
        for i in 0..m {
            let (k, r) = chunk[i.min(chunk.len() - 1)];
            q = q
                .bind(cache)
                .bind(k.as_ref())
                .bind(r.value.as_ref())
                .bind(r.version)
                .bind(r.created_ms)
                .bind(r.lifespan_ms)
                .bind(r.last_used_ms)
                .bind(r.max_idle_ms)
                .bind(r.expires_at());
        }
        n += q.execute(&mut **t).await?.rows_affected();
    }
    Ok(n)
}

/// The `ON CONFLICT (cache, key)` action that rewrites an entry row with the proposed one, in
/// both dialects' upserts (SQLite's `update_rows` and PostgreSQL's, and the batch statement of
/// [`Tx::write_one_cache_pg`]); a macro so it can be spliced into literal statements.
macro_rules! rewrite_row {
    () => {
        "DO UPDATE SET value = excluded.value, version = excluded.version, \
         created_ms = excluded.created_ms, lifespan_ms = excluded.lifespan_ms, \
         last_used_ms = excluded.last_used_ms, max_idle_ms = excluded.max_idle_ms, \
         expires_ms = excluded.expires_ms"
    };
}

/// The padded size of a list of `n` (1..=SQLITE_CHUNK) items where repeating an item is
/// harmless (IN lists, rows whose repeat is a no-op).
fn padded(n: usize) -> usize {
    n.next_power_of_two().min(SQLITE_CHUNK)
}

/// Binds the keys of `chunk` to an `IN` list of `n` (= `padded(chunk.len())`) placeholders,
/// repeating the last key to fill it.
fn bind_padded_keys<'q>(
    mut q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    chunk: &'q [Bytes],
    n: usize,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for i in 0..n {
        q = q.bind(chunk[i.min(chunk.len() - 1)].as_ref());
    }
    q
}

/// Cloning shares the pool.
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    /// The pool and how write transactions begin (see [`PgWrites`]).
    Postgres(PgPool, std::sync::Arc<PgWrites>),
}

/// How many milliseconds a new PostgreSQL connection may take (connection refused is retried
/// with backoff inside this bound) before the attempt counts as "database unreachable".
/// Also bounds the wait for a free pooled connection: the pool has a connection per writer
/// lane plus spares, so a healthy database never makes an acquire wait that long.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// While the database is unreachable, how often the background probe tries to connect.
const PG_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// PostgreSQL write transactions: the statement that begins one, and a circuit that knows the
/// database is unreachable.
///
/// Without the circuit every write during an outage would wait for a connection attempt's full
/// timeout (sqlx retries "connection refused" until the acquire deadline) before failing, so
/// clients would see their writes hang rather than fail. Once one attempt to get a connection
/// timed out or was refused, the circuit opens: BEGIN fails at once with "database unreachable"
/// while one background probe keeps trying to connect, and the first successful probe closes
/// the circuit again. Reads are not affected (they are served from memory).
pub(crate) struct PgWrites {
    /// `BEGIN` plus the `SET LOCAL` timeouts that bound how long a transaction can hold
    /// change-log sequence numbers uncommitted.
    begin: String,
    /// `begin` for a write batch's transaction, whose statements also run on generic plans,
    /// with sequential scans ruled out. Their cost hardly depends on the parameters (every keyed
    /// lookup is a primary-key probe per key, see `entries_by_key!`, and deletes go by TID), but
    /// the array parameters make PostgreSQL's plan cache keep choosing custom plans for small
    /// batches: about 0.5 ms of planning per transaction of one write, more than the
    /// statements' execution. A generic plan is kept for the connection's life, so it must not
    /// depend on the table's size when it was made: planned while the table was small, the
    /// delete by TID became a scan of the whole table (4x the statement's time at 10,000 rows).
    begin_batch: String,
    /// Why the database is considered unreachable; `None` while the circuit is closed.
    down: std::sync::Mutex<Option<String>>,
    probing: std::sync::atomic::AtomicBool,
}

impl PgWrites {
    fn down_reason(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_down(&self, reason: Option<String>) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Opens the circuit and starts the probe that closes it (one probe at a time).
    fn open(self: &std::sync::Arc<Self>, pool: &PgPool, why: &sqlx::Error) {
        use std::sync::atomic::Ordering;
        if self.down_reason().is_none() {
            tracing::warn!("PostgreSQL unreachable ({why}): writes fail at once until it is back");
        }
        self.set_down(Some(why.to_string()));
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                if pool.is_closed() {
                    break;
                }
                // A fresh connection, not a pooled one: idle pooled connections are not
                // tested on acquire, so one that died with the database would look healthy.
                let opts = pool.connect_options();
                let attempt = tokio::time::timeout(
                    PG_ACQUIRE_TIMEOUT,
                    sqlx::PgConnection::connect_with(&opts),
                )
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
                match attempt {
                    Ok(conn) => {
                        let _ = conn.close().await;
                        this.set_down(None);
                        tracing::info!("PostgreSQL reachable again: writes resume");
                        break;
                    }
                    Err(e) => this.set_down(Some(e.to_string())),
                }
                tokio::time::sleep(PG_PROBE_INTERVAL).await;
            }
            this.probing.store(false, Ordering::Release);
        });
    }
}

/// Errors that mean no connection to the database could be had at all (as opposed to a pooled
/// connection that broke, which the writer's retry replaces with a fresh one).
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

pub(crate) enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

/// An SQLite write transaction on a pooled connection, begun and ended with plain statements.
///
/// Not sqlx's `Transaction`: when a COMMIT fails with SQLITE_FULL or SQLITE_IOERR, SQLite has
/// already rolled the transaction back, the ROLLBACK that sqlx then sends fails ("no transaction
/// is active"), and sqlx's transaction-depth counter stays at one. The connection goes back to
/// the pool that way and every later BEGIN on it fails ("attempted to call begin_with at
/// non-zero transaction depth"), so writes never recover after the disk has space again. Here
/// SQLite's own state is the only state: a transaction that does not end in a successful COMMIT
/// is rolled back, "no transaction is active" included, and a connection whose ROLLBACK fails
/// otherwise is closed (closing rolls back whatever is open; the pool opens a fresh one).
pub(crate) struct SqliteTx {
    conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
}

impl SqliteTx {
    async fn begin(pool: &SqlitePool) -> Result<SqliteTx, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        // IMMEDIATE: take the write lock now, so what we read is what we write over. A failed
        // BEGIN leaves no transaction open: the connection stays usable.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        Ok(SqliteTx { conn: Some(conn) })
    }

    async fn commit(mut self) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.take().expect("transaction already ended");
        match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => {
                rollback_or_close(conn).await;
                Err(e)
            }
        }
    }
}

async fn rollback_or_close(mut conn: sqlx::pool::PoolConnection<Sqlite>) {
    match sqlx::query("ROLLBACK").execute(&mut *conn).await {
        Ok(_) => {}
        // SQLite rolled back by itself (SQLITE_FULL, SQLITE_IOERR, ... at COMMIT).
        Err(e) if e.to_string().contains("no transaction is active") => {}
        Err(_) => conn.close_on_drop(),
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("transaction already ended")
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("transaction already ended")
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // Ended without a COMMIT (an error on the way, or the future was dropped): roll back
        // before the connection goes back to the pool.
        if let Some(mut conn) = self.conn.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(rollback_or_close(conn));
                }
                Err(_) => conn.close_on_drop(),
            }
        }
    }
}

/// One row of `ferrod_changes` to write. `kind` is one of `created`, `modified`, `removed`,
/// `expired`, `clear` (rows written before migration 2 may say `put` or `remove`).
pub(crate) struct Change {
    pub cache: String,
    pub key: Option<Bytes>,
    pub kind: &'static str,
    /// New version (created/modified), removed/expired version, or the CLEAR's version.
    pub version: Option<i64>,
    /// Version the change replaced (modified/removed), so followers can tell whether the
    /// value they hold is the previous one.
    pub prev_version: Option<i64>,
    /// Only for `expired`: the expired value (the row is gone, followers cannot read it).
    pub value: Option<Bytes>,
    /// False when the write asked not to raise client-listener events (HotRod
    /// SKIP_LISTENER_NOTIFICATION): followers still apply it to memory, but publish nothing.
    pub notify: bool,
}

/// One row of `ferrod_changes` as the follower reads it (not validated yet).
#[allow(dead_code)]
pub(crate) struct ChangeRow {
    pub seq: i64,
    pub cache: Option<String>,
    pub key: Option<Bytes>,
    pub kind: Option<String>,
    pub version: Option<i64>,
    pub prev_version: Option<i64>,
    pub origin: Option<String>,
    pub value: Option<Bytes>,
    /// Whether to publish an event (rows written before migration 3 say true).
    pub notify: bool,
}

/// What [`Tx::write_one_cache_pg`] did.
pub(crate) struct OneCacheWrite {
    /// Rows inserted (fewer than asked: another process inserted one of these keys first).
    pub inserted: u64,
    /// How many of the keys read as absent have a row on the statement's snapshot.
    pub absent_found: u64,
    /// The change rows' seqs, in the order of the changes.
    pub seqs: Vec<i64>,
}

/// What [`Tx::lock_read_pg`] found.
#[derive(Default)]
pub(crate) struct LockedRead {
    pub rows: Vec<(Bytes, RowMeta)>,
    pub versions: Vec<i64>,
}

/// The advisory lock (two-int4 form, so it cannot collide with the single-bigint migration
/// lock) that every write batch on PostgreSQL holds for a key while it decides and writes it.
/// Part of the protocol between replicas: every ferrod version must compute the same value, so
/// this is a fixed function (64-bit FNV-1a over the cache name's length, the name and the key),
/// never a std hasher whose output may change between Rust releases.
pub(crate) fn key_lock(cache: &str, key: &[u8]) -> (i32, i32) {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let len = u32::try_from(cache.len()).unwrap_or(u32::MAX).to_le_bytes();
    for b in len.iter().chain(cache.as_bytes()).chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    ((h >> 32) as u32 as i32, h as u32 as i32)
}

/// The name of the expiration lease in `ferrod_leases`.
pub(crate) const EXPIRATION_LEASE: &str = "expiration";

/// A max-idle touch to persist: only applied if the row still has `version`, so a touch that
/// was queued before an overwrite cannot stretch the new entry's lifetime.
pub(crate) struct Touch {
    pub key: Bytes,
    pub version: i64,
    pub last_used_ms: i64,
    pub expires_ms: Option<i64>,
}

/// A row deleted by the expiration sweep.
pub(crate) struct Swept {
    pub cache: String,
    pub key: Bytes,
    pub version: i64,
    pub value: Bytes,
}

pub(crate) async fn connect(cfg: &StoreConfig) -> Result<Backend, StoreError> {
    let url = cfg.database_url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Writer lanes, follower, notifier, and read-through / maintenance reads.
        let lanes = u32::try_from(cfg.writer_lanes.clamp(1, 64)).unwrap_or(4);
        let pool = PgPoolOptions::new()
            .max_connections(6 + lanes)
            // No ping round trip before every write transaction: a connection that died is
            // found by BEGIN itself, which the writer retries (nothing was sent on it yet).
            .test_before_acquire(false)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        // Every statement of a write transaction, and every pause between them, is bounded, so
        // a change-log seq taken by a transaction is committed or rolled back within
        // 2 x write_timeout (plus the COMMIT itself); the follower's gap bound derives from it.
        let ms = cfg.write_timeout.as_millis().clamp(1, i32::MAX as u128);
        let begin = format!(
            "BEGIN; SET LOCAL statement_timeout = {ms}; \
             SET LOCAL idle_in_transaction_session_timeout = {ms}"
        );
        let begin_batch = format!(
            "{begin}; SET LOCAL plan_cache_mode = force_generic_plan; \
             SET LOCAL enable_seqscan = off"
        );
        let writes = PgWrites {
            begin,
            begin_batch,
            down: std::sync::Mutex::new(None),
            probing: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Backend::Postgres(pool, std::sync::Arc::new(writes)))
    } else if url.starts_with("sqlite:") {
        connect_sqlite(url, cfg.busy_timeout).await
    } else {
        Err(StoreError::Database(format!(
            "unsupported database URL (expected sqlite:, postgres:// or postgresql://): {url}"
        )))
    }
}

async fn connect_sqlite(url: &str, busy_timeout: Duration) -> Result<Backend, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let opts = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(busy_timeout)
        // FULL: a commit is on disk before we acknowledge it, so kill -9 loses nothing acked.
        .synchronous(SqliteSynchronous::Full);
    if in_memory {
        // Every connection to `:memory:` is a separate database: keep exactly one forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        return Ok(Backend::Sqlite(pool));
    }
    if let Some(parent) = opts.get_filename().parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
    }
    // Switching to WAL needs an exclusive lock that SQLite does not wait for (busy_timeout does
    // not apply), so processes starting together can get SQLITE_BUSY here. WAL is persistent in
    // the file, so one connection retries it and pool connections don't ask for it again.
    let mut attempt = 0;
    loop {
        let res = async {
            let c =
                SqliteConnection::connect_with(&opts.clone().journal_mode(SqliteJournalMode::Wal))
                    .await?;
            c.close().await
        }
        .await;
        match res {
            Ok(()) => break,
            Err(e) if attempt < 100 && is_sqlite_busy(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 + 5 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await?;
    Ok(Backend::Sqlite(pool))
}

fn is_sqlite_busy(e: &sqlx::Error) -> bool {
    match e.as_database_error().and_then(|d| d.code()) {
        // SQLITE_BUSY (5) and its extended codes (x + 256*k).
        Some(code) => code.parse::<i64>().map(|c| c & 0xff == 5).unwrap_or(false),
        None => false,
    }
}

/// PostgreSQL errors after which re-running the whole batch is the correct response.
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("40001") | Some("40P01")
    )
}

/// Whether the database refused the data of a statement (as opposed to failing as a whole:
/// unreachable, shutting down, out of resources): PostgreSQL's data exceptions (class 22),
/// integrity violations (23), program limits such as a key too large for its index (54) and
/// errors raised by triggers or functions (P0, 38, 39); SQLite's too-big, constraint (also a
/// trigger's RAISE) and type-mismatch results. Such an error belongs to one op of a batch.
pub(crate) fn is_refused_write(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return matches!(code.get(..2), Some("22" | "23" | "54" | "P0" | "38" | "39"));
    }
    // SQLite: SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH (primary codes, the low byte
    // of an extended code).
    code.parse::<i32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 18..=20))
}

/// PostgreSQL cannot index a long key: a btree row holds at most 2704 bytes (cache name
/// included). A key longer than this (or one that starts with [`LONG_KEY_TAG`], so the mapping
/// stays one-to-one) is therefore stored with `key` = the tag followed by the SHA-256 of the
/// key, and the key itself in `long_key`; every other key is stored as itself with `long_key`
/// NULL, exactly as ferrod versions before `long_key` existed wrote and read it. Rows are read
/// back as `COALESCE(long_key, key)`. SQLite has no such limit and stores every key as is.
pub(crate) const PG_INLINE_KEY_MAX: usize = 1024;
/// Starts the stored form of a long key (a protobuf or Java-serialized key never starts with a
/// zero byte followed by this text).
pub(crate) const LONG_KEY_TAG: &[u8] = b"\0ferrod-long-key-sha256:";
/// The entry key column as read on PostgreSQL (see [`PG_INLINE_KEY_MAX`]), of the table
/// named by the optional alias.
macro_rules! pg_key_col {
    () => {
        "COALESCE(long_key, key)"
    };
    ($t:ident) => {
        concat!(
            "COALESCE(",
            stringify!($t),
            ".long_key, ",
            stringify!($t),
            ".key)"
        )
    };
}

/// PostgreSQL: a `FROM` clause giving `e`, the entry rows (columns `$cols` of `x`) of cache `$1`
/// for the stored keys in the `bytea[]` parameter `$keys`, found by one primary-key probe per
/// key, in the array's order; `$lock` is "" or " FOR UPDATE" (each row locked as it is found).
/// A LATERAL subquery (kept apart by OFFSET 0) because PostgreSQL caches one generic plan per
/// statement and connection, and a generic plan for `key = ANY($2)` made while the table was
/// young scans the cache's whole key range, testing every row against the array (seen with
/// four writer lanes: a bitmap scan of the whole cache per batch, PostgreSQL's CPU per write
/// 2.5-6x). A lookup that depends on an outer row can only be a probe.
macro_rules! entries_by_key {
    ($keys:literal, $cols:expr) => {
        entries_by_key!($keys, $cols, "")
    };
    ($keys:literal, $cols:expr, $lock:literal) => {
        concat!(
            "FROM UNNEST(",
            $keys,
            "::bytea[]) AS k(key) CROSS JOIN LATERAL (SELECT ",
            $cols,
            " FROM ferrod_entries x WHERE x.cache = $1 AND x.key = k.key OFFSET 0",
            $lock,
            ") e"
        )
    };
}

/// Whether `key` is stored hashed on PostgreSQL (see [`PG_INLINE_KEY_MAX`]).
fn is_long_key(key: &[u8]) -> bool {
    key.len() > PG_INLINE_KEY_MAX || key.starts_with(LONG_KEY_TAG)
}

/// The `key` column value of `key` on PostgreSQL (see [`PG_INLINE_KEY_MAX`]).
pub(crate) fn pg_stored_key(key: &[u8]) -> Cow<'_, [u8]> {
    if is_long_key(key) {
        use sha2::Digest;
        let mut stored = LONG_KEY_TAG.to_vec();
        stored.extend_from_slice(&sha2::Sha256::digest(key));
        Cow::Owned(stored)
    } else {
        Cow::Borrowed(key)
    }
}

/// The stored forms of `keys` on PostgreSQL, to bind as a `bytea[]` through [`as_slices`].
fn pg_keys<'a, K: AsRef<[u8]> + 'a>(keys: impl IntoIterator<Item = &'a K>) -> Vec<Cow<'a, [u8]>> {
    keys.into_iter()
        .map(|k| pg_stored_key(k.as_ref()))
        .collect()
}

fn as_slices<'a>(keys: &'a [Cow<'_, [u8]>]) -> Vec<&'a [u8]> {
    keys.iter().map(|k| k.as_ref()).collect()
}

/// The `long_key` column values of `keys` on PostgreSQL.
fn long_keys<'a, K: AsRef<[u8]> + 'a>(
    keys: impl IntoIterator<Item = &'a K>,
) -> Vec<Option<&'a [u8]>> {
    keys.into_iter()
        .map(|k| {
            let k = k.as_ref();
            is_long_key(k).then_some(k)
        })
        .collect()
}

impl Backend {
    pub fn is_sqlite(&self) -> bool {
        matches!(self, Backend::Sqlite(_))
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.begin_tx(false).await
    }

    /// [`Backend::begin`] for a write batch (see `PgWrites::begin_batch`).
    pub async fn begin_batch(&self) -> Result<Tx, sqlx::Error> {
        self.begin_tx(true).await
    }

    async fn begin_tx(&self, batch: bool) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            // IMMEDIATE: take the write lock now, so what we read is what we write over.
            Backend::Sqlite(p) => Tx::Sqlite(SqliteTx::begin(p).await?),
            Backend::Postgres(p, w) => {
                if let Some(why) = w.down_reason() {
                    return Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        format!("database unreachable ({why}); retry once it is back"),
                    )));
                }
                let begin = if batch { &w.begin_batch } else { &w.begin };
                match p.begin_with(begin.clone()).await {
                    Ok(tx) => Tx::Postgres(tx),
                    Err(e) => {
                        if is_unreachable(&e) {
                            w.open(p, &e);
                        }
                        return Err(e);
                    }
                }
            }
        })
    }

    pub async fn close(&self) {
        match self {
            Backend::Sqlite(p) => p.close().await,
            Backend::Postgres(p, _) => p.close().await,
        }
    }

    /// Creates the rows of configured caches that do not exist yet, in one transaction.
    pub async fn ensure_caches(&self, defs: &[CacheDef], now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for def in defs {
            tx.insert_cache(def, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn all_caches(&self) -> Result<Vec<CacheDef>, StoreError> {
        const SQL: &str = "SELECT name, key_media_type, value_media_type, default_lifespan_ms, \
            default_max_idle_ms, configuration FROM ferrod_caches ORDER BY name";
        let defs = match self {
            Backend::Sqlite(p) => sqlx::query(SQL)
                .fetch_all(p)
                .await?
                .iter()
                .map(cache_def_sqlite)
                .collect::<Result<Vec<_>, _>>()?,
            Backend::Postgres(p, _) => sqlx::query(SQL)
                .fetch_all(p)
                .await?
                .iter()
                .map(cache_def_pg)
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(defs)
    }

    /// Streams a cache's rows (without loading the table into a Vec first) to `sink`.
    pub async fn load_entries(
        &self,
        cache: &str,
        mut sink: impl FnMut(Bytes, Row),
    ) -> Result<(), StoreError> {
        const SQL_SQLITE: &str = "SELECT key, value, version, created_ms, lifespan_ms, \
            last_used_ms, max_idle_ms FROM ferrod_entries WHERE cache = ?";
        const SQL_PG: &str = concat!(
            "SELECT ",
            pg_key_col!(),
            ", value, version, created_ms, lifespan_ms, \
             last_used_ms, max_idle_ms FROM ferrod_entries WHERE cache = $1"
        );
        match self {
            Backend::Sqlite(p) => {
                let mut rows = sqlx::query(SQL_SQLITE).bind(cache).fetch(p);
                while let Some(r) = rows.try_next().await? {
                    let (k, row) = full_row_sqlite(&r)?;
                    sink(k, row);
                }
            }
            Backend::Postgres(p, _) => {
                let mut rows = sqlx::query(SQL_PG).bind(cache).fetch(p);
                while let Some(r) = rows.try_next().await? {
                    let (k, row) = full_row_pg(&r)?;
                    sink(k, row);
                }
            }
        }
        Ok(())
    }
}

impl Backend {
    /// The row of one key, read outside any transaction (read-through).
    pub async fn read_row(&self, cache: &str, key: &[u8]) -> Result<Option<Row>, StoreError> {
        const COLS: &str = "SELECT key, value, version, created_ms, lifespan_ms, last_used_ms, \
            max_idle_ms FROM ferrod_entries";
        Ok(match self {
            Backend::Sqlite(p) => sqlx::query(&format!("{COLS} WHERE cache = ? AND key = ?"))
                .bind(cache)
                .bind(key)
                .fetch_optional(p)
                .await?
                .map(|r| full_row_sqlite(&r))
                .transpose()?
                .map(|(_, row)| row),
            Backend::Postgres(p, w) => {
                // A read-through during an outage answers at once too (the caller falls back
                // to memory) instead of waiting for a connection attempt to time out.
                if let Some(why) = w.down_reason() {
                    return Err(StoreError::Database(format!(
                        "database unreachable ({why})"
                    )));
                }
                sqlx::query(&format!("{COLS} WHERE cache = $1 AND key = $2"))
                    .bind(cache)
                    .bind(pg_stored_key(key).as_ref())
                    .fetch_optional(p)
                    .await?
                    .map(|r| full_row_pg(&r))
                    .transpose()?
                    .map(|(_, row)| row)
            }
        })
    }

    fn pg(&self) -> Result<&PgPool, sqlx::Error> {
        match self {
            Backend::Postgres(p, _) => Ok(p),
            Backend::Sqlite(_) => Err(sqlx::Error::Protocol(
                "internal error: PostgreSQL-only statement on SQLite".into(),
            )),
        }
    }

    /// Full rows of the given keys (PostgreSQL; the follower's batched refresh).
    pub async fn read_rows(
        &self,
        cache: &str,
        keys: &[Bytes],
    ) -> Result<Vec<(Bytes, Row)>, sqlx::Error> {
        let p = self.pg()?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(PG_CHUNK) {
            let stored = pg_keys(chunk);
            let rows = sqlx::query(concat!(
                "SELECT e.* ",
                entries_by_key!(
                    "$2",
                    concat!(
                        pg_key_col!(x),
                        ", x.value, x.version, x.created_ms, x.lifespan_ms, x.last_used_ms, \
                         x.max_idle_ms"
                    )
                )
            ))
            .bind(cache)
            .bind(as_slices(&stored))
            .fetch_all(p)
            .await?;
            for r in &rows {
                out.push(full_row_pg(r)?);
            }
        }
        Ok(out)
    }

    /// (key, version, last_used_ms) of the given keys (PostgreSQL; idle-expiry suspects).
    pub async fn read_last_used(
        &self,
        cache: &str,
        keys: &[Bytes],
    ) -> Result<Vec<(Bytes, i64, i64)>, sqlx::Error> {
        let p = self.pg()?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(PG_CHUNK) {
            let stored = pg_keys(chunk);
            let rows = sqlx::query(concat!(
                "SELECT e.* ",
                entries_by_key!("$2", concat!(pg_key_col!(x), ", x.version, x.last_used_ms"))
            ))
            .bind(cache)
            .bind(as_slices(&stored))
            .fetch_all(p)
            .await?;
            for r in &rows {
                let k: Vec<u8> = r.try_get(0)?;
                out.push((Bytes::from(k), r.try_get(1)?, r.try_get(2)?));
            }
        }
        Ok(out)
    }

    pub async fn max_change_seq(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::int8 FROM ferrod_changes")
            .fetch_one(self.pg()?)
            .await
    }

    /// Seqs at or above `from` that no visible row has (in-flight or rolled back), as
    /// inclusive ranges.
    pub async fn change_gaps(&self, from: i64) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT prev + 1, seq - 1 FROM (SELECT seq, lag(seq) OVER (ORDER BY seq) AS prev \
             FROM ferrod_changes WHERE seq >= $1) t WHERE seq - prev > 1",
        )
        .bind(from)
        .fetch_all(self.pg()?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The lowest seq of a row committed at or after `since_ms` (None if there is none).
    pub async fn first_change_since(&self, since_ms: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT MIN(seq) FROM ferrod_changes WHERE committed_ms >= $1")
            .bind(since_ms)
            .fetch_one(self.pg()?)
            .await
    }

    pub async fn changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChangeRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, cache, key, kind, version, prev_version, origin, value, notify \
             FROM ferrod_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pg()?)
        .await?;
        rows.iter().map(change_row_pg).collect()
    }

    pub async fn changes_in(&self, seqs: &[i64]) -> Result<Vec<ChangeRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, cache, key, kind, version, prev_version, origin, value, notify \
             FROM ferrod_changes WHERE seq = ANY($1) ORDER BY seq",
        )
        .bind(seqs)
        .fetch_all(self.pg()?)
        .await?;
        rows.iter().map(change_row_pg).collect()
    }

    /// Highest seq ever pruned from the change log.
    pub async fn pruned_through(&self) -> Result<i64, sqlx::Error> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT value FROM ferrod_meta WHERE name = 'changes_pruned_through'",
        )
        .fetch_optional(self.pg()?)
        .await?;
        Ok(v.unwrap_or(0))
    }

    /// Takes or renews a lease (PostgreSQL, judged by the database's clock so replicas' clocks
    /// do not matter). True if `holder` holds it until now + `ttl_ms`.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE ferrod_leases SET holder = $2, \
             expires_ms = (extract(epoch FROM clock_timestamp()) * 1000)::int8 + $3 \
             WHERE name = $1 AND (holder = $2 OR \
             expires_ms < (extract(epoch FROM clock_timestamp()) * 1000)::int8) RETURNING 1",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl_ms)
        .fetch_optional(self.pg()?)
        .await?;
        Ok(row.is_some())
    }

    /// Wakes every replica's follower (`NOTIFY ferrod_changes`; the payload, the highest seq
    /// committed, is a hint only).
    pub async fn notify_changes(&self, seq: i64) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::feed::CHANNEL)
            .bind(seq.to_string())
            .execute(self.pg()?)
            .await?;
        Ok(())
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE ferrod_leases SET expires_ms = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pg()?)
            .await?;
        Ok(())
    }
}

/// Reads a change row without failing on bad content: only `seq` must decode (it is the
/// primary key); anything else that does not decode becomes None and is judged by the caller.
fn change_row_pg(r: &sqlx::postgres::PgRow) -> Result<ChangeRow, sqlx::Error> {
    let key: Option<Vec<u8>> = r.try_get(2).ok().flatten();
    let value: Option<Vec<u8>> = r.try_get(7).ok().flatten();
    Ok(ChangeRow {
        seq: r.try_get(0)?,
        cache: r.try_get(1).ok().flatten(),
        key: key.map(Bytes::from),
        kind: r.try_get(3).ok().flatten(),
        version: r.try_get(4).ok().flatten(),
        prev_version: r.try_get(5).ok().flatten(),
        origin: r.try_get(6).ok().flatten(),
        value: value.map(Bytes::from),
        notify: r
            .try_get::<Option<bool>, _>(8)
            .ok()
            .flatten()
            .unwrap_or(true),
    })
}

fn cache_def_sqlite(r: &sqlx::sqlite::SqliteRow) -> Result<CacheDef, sqlx::Error> {
    Ok(CacheDef {
        name: r.try_get(0)?,
        key_media_type: r.try_get(1)?,
        value_media_type: r.try_get(2)?,
        default_lifespan_ms: r.try_get(3)?,
        default_max_idle_ms: r.try_get(4)?,
        configuration: r.try_get(5)?,
    })
}

fn cache_def_pg(r: &sqlx::postgres::PgRow) -> Result<CacheDef, sqlx::Error> {
    Ok(CacheDef {
        name: r.try_get(0)?,
        key_media_type: r.try_get(1)?,
        value_media_type: r.try_get(2)?,
        default_lifespan_ms: r.try_get(3)?,
        default_max_idle_ms: r.try_get(4)?,
        configuration: r.try_get(5)?,
    })
}

/// Columns: key, value, version, created, lifespan, last_used, max_idle.
macro_rules! full_row {
    ($name:ident, $row:ty) => {
        fn $name(r: &$row) -> Result<(Bytes, Row), sqlx::Error> {
            let key: Vec<u8> = r.try_get(0)?;
            let value: Vec<u8> = r.try_get(1)?;
            Ok((
                Bytes::from(key),
                Row {
                    value: Bytes::from(value),
                    version: r.try_get(2)?,
                    created_ms: r.try_get(3)?,
                    lifespan_ms: r.try_get(4)?,
                    last_used_ms: r.try_get(5)?,
                    max_idle_ms: r.try_get(6)?,
                },
            ))
        }
    };
}
full_row!(full_row_sqlite, sqlx::sqlite::SqliteRow);
full_row!(full_row_pg, sqlx::postgres::PgRow);

/// Columns starting at `i`: version, created, lifespan, last_used, max_idle.
macro_rules! meta_at {
    ($name:ident, $row:ty) => {
        fn $name(r: &$row, i: usize) -> Result<RowMeta, sqlx::Error> {
            Ok(RowMeta {
                version: r.try_get(i)?,
                created_ms: r.try_get(i + 1)?,
                lifespan_ms: r.try_get(i + 2)?,
                last_used_ms: r.try_get(i + 3)?,
                max_idle_ms: r.try_get(i + 4)?,
            })
        }
    };
}
meta_at!(meta_sqlite, sqlx::sqlite::SqliteRow);
meta_at!(meta_pg, sqlx::postgres::PgRow);

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }

    /// Reads (and on PostgreSQL row-locks, in key order so two processes cannot deadlock on
    /// the same pair of keys) the metadata of the given keys. `keys` must be sorted and distinct.
    pub async fn fetch_meta(
        &mut self,
        cache: &str,
        keys: &[Bytes],
    ) -> Result<Vec<(Bytes, RowMeta)>, sqlx::Error> {
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(t) => {
                for chunk in keys.chunks(SQLITE_CHUNK) {
                    let n = padded(chunk.len());
                    let sql = format!(
                        "SELECT key, version, created_ms, lifespan_ms, last_used_ms, max_idle_ms \
                         FROM ferrod_entries WHERE cache = ? AND key IN ({})",
                        placeholders(n)
                    );
                    let q = bind_padded_keys(sqlx::query(&sql).bind(cache), chunk, n);
                    for r in q.fetch_all(&mut **t).await? {
                        let k: Vec<u8> = r.try_get(0)?;
                        out.push((Bytes::from(k), meta_sqlite(&r, 1)?));
                    }
                }
            }
            Tx::Postgres(t) => {
                for chunk in keys.chunks(PG_CHUNK) {
                    let stored = pg_keys(chunk);
                    // In the order of `keys` (sorted), locked as found.
                    let rows = sqlx::query(concat!(
                        "SELECT e.* ",
                        entries_by_key!(
                            "$2",
                            concat!(
                                pg_key_col!(x),
                                ", x.version, x.created_ms, x.lifespan_ms, x.last_used_ms, \
                                 x.max_idle_ms"
                            ),
                            " FOR UPDATE"
                        )
                    ))
                    .bind(cache)
                    .bind(as_slices(&stored))
                    .fetch_all(&mut **t)
                    .await?;
                    for r in &rows {
                        let k: Vec<u8> = r.try_get(0)?;
                        out.push((Bytes::from(k), meta_pg(r, 1)?));
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn fetch_values(
        &mut self,
        cache: &str,
        keys: &[Bytes],
    ) -> Result<Vec<(Bytes, Bytes)>, sqlx::Error> {
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(t) => {
                for chunk in keys.chunks(SQLITE_CHUNK) {
                    let n = padded(chunk.len());
                    let sql = format!(
                        "SELECT key, value FROM ferrod_entries WHERE cache = ? AND key IN ({})",
                        placeholders(n)
                    );
                    let q = bind_padded_keys(sqlx::query(&sql).bind(cache), chunk, n);
                    for r in q.fetch_all(&mut **t).await? {
                        let k: Vec<u8> = r.try_get(0)?;
                        let v: Vec<u8> = r.try_get(1)?;
                        out.push((Bytes::from(k), Bytes::from(v)));
                    }
                }
            }
            Tx::Postgres(t) => {
                for chunk in keys.chunks(PG_CHUNK) {
                    let stored = pg_keys(chunk);
                    let rows = sqlx::query(concat!(
                        "SELECT e.* ",
                        entries_by_key!("$2", concat!(pg_key_col!(x), ", x.value"))
                    ))
                    .bind(cache)
                    .bind(as_slices(&stored))
                    .fetch_all(&mut **t)
                    .await?;
                    for r in &rows {
                        let k: Vec<u8> = r.try_get(0)?;
                        let v: Vec<u8> = r.try_get(1)?;
                        out.push((Bytes::from(k), Bytes::from(v)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Allocates `n` ascending versions, all greater than `floor` (the highest version among the
    /// rows this transaction locked), from the database-wide sequence.
    pub async fn alloc_versions(&mut self, n: usize, floor: i64) -> Result<Vec<i64>, sqlx::Error> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n64 = i64::try_from(n).unwrap_or(i64::MAX);
        match self {
            Tx::Sqlite(t) => {
                // The transaction is exclusive, so bumping the counter row is race-free, and
                // MAX(...) repairs a counter that somehow fell behind the rows.
                let top: i64 = sqlx::query_scalar(
                    "UPDATE ferrod_meta SET value = MAX(value, ?) + ? WHERE name = 'version_seq' \
                     RETURNING value",
                )
                .bind(floor.max(0))
                .bind(n64)
                .fetch_one(&mut **t)
                .await?;
                Ok((top - n64 + 1..=top).collect())
            }
            Tx::Postgres(t) => {
                // Another process may have taken values before ours and committed them to a
                // row we now hold; such a block is discarded and a fresh one taken (the
                // sequence only moves forward, so this converges at once in practice).
                for _ in 0..8 {
                    let mut v: Vec<i64> = sqlx::query_scalar(
                        "SELECT nextval('ferrod_version_seq') FROM generate_series(1, $1)",
                    )
                    .bind(n64)
                    .fetch_all(&mut **t)
                    .await?;
                    v.sort_unstable();
                    if v.first().is_some_and(|first| *first > floor) {
                        return Ok(v);
                    }
                }
                Err(sqlx::Error::Protocol(
                    "ferrod_version_seq is behind the stored versions; run \
                     SELECT setval('ferrod_version_seq', (SELECT max(version) FROM ferrod_entries))"
                        .into(),
                ))
            }
        }
    }

    /// Inserts rows that the transaction saw as absent. Returns how many were inserted: fewer
    /// than asked means another process inserted one of these keys after we looked, and the
    /// caller must re-run the batch (ON CONFLICT DO NOTHING keeps that from aborting the
    /// transaction or producing two winners).
    pub async fn insert_rows(
        &mut self,
        cache: &str,
        rows: &[(&Bytes, &Row)],
    ) -> Result<u64, sqlx::Error> {
        if rows.is_empty() {
            return Ok(0);
        }
        match self {
            Tx::Sqlite(t) => {
                // The padding's repeat of the last row conflicts with the row just inserted and
                // does nothing, so the count is still that of distinct rows.
                sqlite_write_rows(t, cache, rows, "DO NOTHING").await
            }
            Tx::Postgres(t) => {
                let mut n = 0;
                for chunk in row_chunks(rows) {
                    let c = Columns::of(chunk);
                    n += sqlx::query(
                        "INSERT INTO ferrod_entries (cache, key, long_key, value, version, \
                         created_ms, lifespan_ms, last_used_ms, max_idle_ms, expires_ms) \
                         SELECT $1, * FROM UNNEST($2::bytea[], $10::bytea[], $3::bytea[], \
                         $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[]) \
                         ON CONFLICT (cache, key) DO NOTHING",
                    )
                    .bind(cache)
                    .bind(as_slices(&c.keys))
                    .bind(c.values)
                    .bind(c.versions)
                    .bind(c.created)
                    .bind(c.lifespan)
                    .bind(c.last_used)
                    .bind(c.max_idle)
                    .bind(c.expires)
                    .bind(c.long_keys)
                    .execute(&mut **t)
                    .await?
                    .rows_affected();
                }
                Ok(n)
            }
        }
    }

    /// Rewrites rows the transaction holds locked. On PostgreSQL as `INSERT ... ON CONFLICT DO
    /// UPDATE`: its conflict check always goes through the primary key, whereas an
    /// `UPDATE ... FROM UNNEST(...)` join is planned from the table's statistics, and with a
    /// generic plan made while the table was nearly empty the planner hashed every row of the
    /// cache for each batch (seen: 12,000 rows read to update 9).
    pub async fn update_rows(
        &mut self,
        cache: &str,
        rows: &[(&Bytes, &Row)],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Sqlite(t) => {
                // The rows exist (the transaction holds the database's write lock since it read
                // them), so this upsert only updates; a repeated last row (padding) writes the
                // same values again.
                sqlite_write_rows(t, cache, rows, rewrite_row!()).await?;
            }
            Tx::Postgres(t) => {
                for chunk in row_chunks(rows) {
                    let c = Columns::of(chunk);
                    sqlx::query(concat!(
                        "INSERT INTO ferrod_entries (cache, key, long_key, value, version, \
                         created_ms, lifespan_ms, last_used_ms, max_idle_ms, expires_ms) \
                         SELECT $1, * FROM UNNEST($2::bytea[], $10::bytea[], $3::bytea[], \
                         $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[]) \
                         ON CONFLICT (cache, key) ",
                        rewrite_row!()
                    ))
                    .bind(cache)
                    .bind(as_slices(&c.keys))
                    .bind(c.values)
                    .bind(c.versions)
                    .bind(c.created)
                    .bind(c.lifespan)
                    .bind(c.last_used)
                    .bind(c.max_idle)
                    .bind(c.expires)
                    .bind(c.long_keys)
                    .execute(&mut **t)
                    .await?;
                }
            }
        }
        Ok(())
    }

    pub async fn delete_rows(&mut self, cache: &str, keys: &[Bytes]) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => {
                for chunk in keys.chunks(SQLITE_CHUNK) {
                    let n = padded(chunk.len());
                    let sql = format!(
                        "DELETE FROM ferrod_entries WHERE cache = ? AND key IN ({})",
                        placeholders(n)
                    );
                    let q = bind_padded_keys(sqlx::query(&sql).bind(cache), chunk, n);
                    q.execute(&mut **t).await?;
                }
            }
            Tx::Postgres(t) => {
                for chunk in keys.chunks(PG_CHUNK) {
                    let stored = pg_keys(chunk);
                    sqlx::query(concat!(
                        "DELETE FROM ferrod_entries WHERE ctid = ANY(ARRAY(SELECT e.ctid ",
                        entries_by_key!("$2", "x.ctid"),
                        "))"
                    ))
                    .bind(cache)
                    .bind(as_slices(&stored))
                    .execute(&mut **t)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Appends to the change log in the given order and returns the rows' seqs in that order
    /// (ascending).
    pub async fn insert_changes(
        &mut self,
        changes: &[Change],
        origin: &str,
        now: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut seqs = Vec::with_capacity(changes.len());
        match self {
            Tx::Sqlite(t) => {
                // No padding here (every row is a change). Rows of one VALUES list are inserted
                // in order, so AUTOINCREMENT seqs ascend with it: sorting the returned seqs
                // gives them in the order of `changes`.
                let mut rest = changes;
                for part in pow2_parts(changes.len()) {
                    let (chunk, tail) = rest.split_at(part);
                    rest = tail;
                    let sql = format!(
                        "INSERT INTO ferrod_changes (cache, key, kind, version, prev_version, \
                         value, notify, origin, committed_ms) VALUES {} RETURNING seq",
                        value_rows(part, 9)
                    );
                    let mut q = sqlx::query_scalar(&sql);
                    for c in chunk {
                        q = q
                            .bind(c.cache.as_str())
                            .bind(c.key.as_deref())
                            .bind(c.kind)
                            .bind(c.version)
                            .bind(c.prev_version)
                            .bind(c.value.as_deref())
                            .bind(c.notify)
                            .bind(origin)
                            .bind(now);
                    }
                    let mut got: Vec<i64> = q.fetch_all(&mut **t).await?;
                    got.sort_unstable();
                    seqs.extend(got);
                }
            }
            Tx::Postgres(t) => {
                for chunk in change_chunks(changes) {
                    let caches: Vec<&str> = chunk.iter().map(|c| c.cache.as_str()).collect();
                    let keys: Vec<Option<&[u8]>> = chunk.iter().map(|c| c.key.as_deref()).collect();
                    let kinds: Vec<&str> = chunk.iter().map(|c| c.kind).collect();
                    let versions: Vec<Option<i64>> = chunk.iter().map(|c| c.version).collect();
                    let prevs: Vec<Option<i64>> = chunk.iter().map(|c| c.prev_version).collect();
                    let values: Vec<Option<&[u8]>> =
                        chunk.iter().map(|c| c.value.as_deref()).collect();
                    let notify: Vec<bool> = chunk.iter().map(|c| c.notify).collect();
                    // nextval() runs per row in ORDER BY order, so sorting the returned seqs
                    // gives them in the order of `changes`.
                    let mut got: Vec<i64> = sqlx::query_scalar(
                        "INSERT INTO ferrod_changes (cache, key, kind, version, \
                         prev_version, value, notify, origin, committed_ms) \
                         SELECT u.cache, u.key, u.kind, u.version, u.prev, u.value, u.notify, \
                         $8, $9 \
                         FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::int8[], \
                         $5::int8[], $6::bytea[], $7::bool[]) \
                         WITH ORDINALITY AS u(cache, key, kind, version, prev, value, notify, ord) \
                         ORDER BY u.ord RETURNING seq",
                    )
                    .bind(caches)
                    .bind(keys)
                    .bind(kinds)
                    .bind(versions)
                    .bind(prevs)
                    .bind(values)
                    .bind(notify)
                    .bind(origin)
                    .bind(now)
                    .fetch_all(&mut **t)
                    .await?;
                    got.sort_unstable();
                    seqs.extend(got);
                }
            }
        }
        Ok(seqs)
    }

    /// PostgreSQL: all writes of a batch that touches one cache in a single statement (one
    /// round trip instead of up to four): deletes, updates, inserts (`ON CONFLICT DO NOTHING`,
    /// as in [`Tx::insert_rows`]) and the change rows (seqs in the order of `changes`, as in
    /// [`Tx::insert_changes`]). The keys of the three lists are disjoint. Returns None (nothing
    /// done) on SQLite or when the batch is too big for one message; the caller then uses the
    /// per-shape statements.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_one_cache_pg(
        &mut self,
        cache: &str,
        deletes: &[Bytes],
        updates: &[(&Bytes, &Row)],
        inserts: &[(&Bytes, &Row)],
        changes: &[Change],
        absent: &[Bytes],
        origin: &str,
        now: i64,
    ) -> Result<Option<OneCacheWrite>, sqlx::Error> {
        const MAX_BYTES: usize = 16 * 1024 * 1024;
        let Tx::Postgres(t) = self else {
            return Ok(None);
        };
        let rows = deletes.len() + updates.len() + inserts.len();
        let bytes: usize = deletes.iter().map(|k| k.len()).sum::<usize>()
            + updates
                .iter()
                .chain(inserts)
                .map(|(k, r)| k.len() + r.value.len())
                .sum::<usize>()
            + changes
                .iter()
                .map(|c| {
                    c.key.as_ref().map_or(0, |k| k.len()) + c.value.as_ref().map_or(0, |v| v.len())
                })
                .sum::<usize>();
        if changes.is_empty()
            || rows > PG_CHUNK
            || changes.len() > PG_CHUNK
            || absent.len() > PG_CHUNK
            || bytes > MAX_BYTES
        {
            return Ok(None);
        }
        let u = Columns::of(updates);
        let i = Columns::of(inserts);
        let deleted = pg_keys(deletes);
        let absent = pg_keys(absent);
        let caches: Vec<&str> = changes.iter().map(|c| c.cache.as_str()).collect();
        let keys: Vec<Option<&[u8]>> = changes.iter().map(|c| c.key.as_deref()).collect();
        let kinds: Vec<&str> = changes.iter().map(|c| c.kind).collect();
        let versions: Vec<Option<i64>> = changes.iter().map(|c| c.version).collect();
        let prevs: Vec<Option<i64>> = changes.iter().map(|c| c.prev_version).collect();
        let values: Vec<Option<&[u8]>> = changes.iter().map(|c| c.value.as_deref()).collect();
        let notify: Vec<bool> = changes.iter().map(|c| c.notify).collect();
        // Data-modifying CTEs all run (referenced or not), on the same snapshot; the three
        // entry statements touch disjoint keys. Updates are written as upserts of rows this
        // transaction holds locked (see `update_rows` for why).
        let got: Vec<(i64, i64, i64)> = sqlx::query_as(concat!(
            "WITH del AS (DELETE FROM ferrod_entries WHERE ctid = ANY(ARRAY(SELECT e.ctid ",
            entries_by_key!("$2", "x.ctid"),
            ")) RETURNING 1), \
             upd AS (INSERT INTO ferrod_entries (cache, key, long_key, value, version, \
             created_ms, lifespan_ms, last_used_ms, max_idle_ms, expires_ms) \
             SELECT $1, * FROM UNNEST($3::bytea[], $29::bytea[], $4::bytea[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[]) \
             ON CONFLICT (cache, key) ",
            rewrite_row!(),
            " RETURNING 1), \
             ins AS (INSERT INTO ferrod_entries (cache, key, long_key, value, version, \
             created_ms, lifespan_ms, last_used_ms, max_idle_ms, expires_ms) \
             SELECT $1, * FROM UNNEST($11::bytea[], $30::bytea[], $12::bytea[], $13::int8[], \
             $14::int8[], $15::int8[], $16::int8[], $17::int8[], $18::int8[]) \
             ON CONFLICT (cache, key) DO NOTHING RETURNING 1), \
             chg AS (INSERT INTO ferrod_changes (cache, key, kind, version, prev_version, value, \
             notify, origin, committed_ms) \
             SELECT x.cache, x.key, x.kind, x.version, x.prev, x.value, x.notify, $26, $27 \
             FROM UNNEST($19::text[], $20::bytea[], $21::text[], $22::int8[], $23::int8[], \
             $24::bytea[], $25::bool[]) \
             WITH ORDINALITY AS x(cache, key, kind, version, prev, value, notify, ord) \
             ORDER BY x.ord RETURNING seq), \
             chk AS (SELECT COUNT(*) AS n ",
            entries_by_key!("$28", "1"),
            ") \
             SELECT (SELECT COUNT(*) FROM ins)::int8, (SELECT n FROM chk)::int8, seq FROM chg"
        ))
        .bind(cache)
        .bind(as_slices(&deleted))
        .bind(as_slices(&u.keys))
        .bind(u.values)
        .bind(u.versions)
        .bind(u.created)
        .bind(u.lifespan)
        .bind(u.last_used)
        .bind(u.max_idle)
        .bind(u.expires)
        .bind(as_slices(&i.keys))
        .bind(i.values)
        .bind(i.versions)
        .bind(i.created)
        .bind(i.lifespan)
        .bind(i.last_used)
        .bind(i.max_idle)
        .bind(i.expires)
        .bind(caches)
        .bind(keys)
        .bind(kinds)
        .bind(versions)
        .bind(prevs)
        .bind(values)
        .bind(notify)
        .bind(origin)
        .bind(now)
        .bind(as_slices(&absent))
        .bind(u.long_keys)
        .bind(i.long_keys)
        .fetch_all(&mut **t)
        .await?;
        let inserted = got.first().map_or(0, |(n, _, _)| *n as u64);
        let absent_found = got.first().map_or(0, |(_, n, _)| *n as u64);
        let mut seqs: Vec<i64> = got.into_iter().map(|(_, _, s)| s).collect();
        seqs.sort_unstable();
        Ok(Some(OneCacheWrite {
            inserted,
            absent_found,
            seqs,
        }))
    }

    /// PostgreSQL: how many of `keys` have a row, on a snapshot taken now (see
    /// [`Tx::lock_read_pg`] for why a batch asks again about keys it read as absent).
    pub async fn count_rows_pg(&mut self, cache: &str, keys: &[Bytes]) -> Result<u64, sqlx::Error> {
        let Tx::Postgres(t) = self else {
            return Ok(0);
        };
        let mut n = 0u64;
        for chunk in keys.chunks(PG_CHUNK) {
            let stored = pg_keys(chunk);
            let c: i64 = sqlx::query_scalar(concat!(
                "SELECT COUNT(*)::int8 ",
                entries_by_key!("$2", "1")
            ))
            .bind(cache)
            .bind(as_slices(&stored))
            .fetch_one(&mut **t)
            .await?;
            n += c as u64;
        }
        Ok(n)
    }

    /// PostgreSQL: the reading half of a write batch for one cache in one statement (one round
    /// trip instead of three), in this order, each step made to wait for the one before:
    /// 1. the cache row, `FOR SHARE` (a CLEAR or removal of the cache takes it exclusively);
    /// 2. one transaction-scoped advisory lock per key (`key_locks`, sorted and distinct, see
    ///    [`key_lock`]), so that every writer of a key, also one that finds no row to lock
    ///    yet, holds a lock in common with every other writer of it;
    /// 3. the rows of `keys` (sorted, distinct, at most `PG_CHUNK`), `FOR UPDATE`, in key order;
    /// 4. `versions` values of the version sequence, taken after every lock is held, so they
    ///    are above any version a previous writer of these keys committed.
    ///
    /// The rows are read on the statement's snapshot, taken before it waited for any lock:
    /// rows that existed then are returned as the latest committed version (`FOR UPDATE`
    /// follows updates and skips deletions), but a row another writer of the key inserted and
    /// committed while this statement waited for the key's lock is not seen. So keys this
    /// returns no row for must be checked again on a later snapshot (the write statement does,
    /// see [`Tx::write_one_cache_pg`], or [`Tx::count_rows_pg`]): if one has a row by then,
    /// the batch is re-run. Once the advisory locks are held nobody else can create them.
    ///
    /// Returns None if the cache row does not exist (nothing was locked or taken), else the
    /// rows found and the versions (ascending).
    pub async fn lock_read_pg(
        &mut self,
        cache: &str,
        keys: &[Bytes],
        key_locks: &[(i32, i32)],
        versions: usize,
    ) -> Result<Option<LockedRead>, sqlx::Error> {
        let Tx::Postgres(t) = self else {
            return Err(sqlx::Error::Protocol(
                "internal error: PostgreSQL-only statement on SQLite".into(),
            ));
        };
        let hi: Vec<i32> = key_locks.iter().map(|l| l.0).collect();
        let lo: Vec<i32> = key_locks.iter().map(|l| l.1).collect();
        let stored = pg_keys(keys);
        // Each CTE is MATERIALIZED and the next one refers to it through an uncommitted
        // sub-select (an InitPlan, evaluated before the referring scan starts), which is what
        // orders the steps. The first column tells the three kinds of result rows apart.
        let rows = sqlx::query(concat!(
            "WITH c AS MATERIALIZED (SELECT name FROM ferrod_caches WHERE name = $1 FOR SHARE), \
             a AS MATERIALIZED (SELECT count(pg_advisory_xact_lock(s.hi, s.lo)) AS n FROM \
             (SELECT u.hi, u.lo FROM UNNEST($3::int4[], $4::int4[]) AS u(hi, lo) \
             WHERE EXISTS (SELECT 1 FROM c) ORDER BY u.hi, u.lo) s), \
             r AS MATERIALIZED (SELECT e.* ",
            entries_by_key!(
                "$2",
                concat!(
                    pg_key_col!(x),
                    " AS key, x.version, x.created_ms, x.lifespan_ms, x.last_used_ms, \
                     x.max_idle_ms"
                ),
                " FOR UPDATE"
            ),
            " WHERE (SELECT n FROM a) >= 0), \
             v AS MATERIALIZED (SELECT nextval('ferrod_version_seq') AS version \
             FROM generate_series(1, $5::int8) WHERE (SELECT count(*) FROM r) >= 0 \
             AND EXISTS (SELECT 1 FROM c)) \
             SELECT 0::int2 AS part, NULL::bytea AS key, 0::int8 AS version, 0::int8, 0::int8, \
             0::int8, 0::int8 FROM c \
             UNION ALL SELECT 1::int2, key, version, created_ms, lifespan_ms, last_used_ms, \
             max_idle_ms FROM r \
             UNION ALL SELECT 2::int2, NULL, version, 0, 0, 0, 0 FROM v"
        ))
        .bind(cache)
        .bind(as_slices(&stored))
        .bind(hi)
        .bind(lo)
        .bind(i64::try_from(versions).unwrap_or(i64::MAX))
        .fetch_all(&mut **t)
        .await?;
        let mut out = LockedRead::default();
        let mut present = false;
        for r in &rows {
            match r.try_get::<i16, _>(0)? {
                0 => present = true,
                1 => {
                    let k: Vec<u8> = r.try_get(1)?;
                    out.rows.push((Bytes::from(k), meta_pg(r, 2)?));
                }
                _ => out.versions.push(r.try_get(2)?),
            }
        }
        if !present {
            return Ok(None);
        }
        out.versions.sort_unstable();
        Ok(Some(out))
    }

    /// Locks the rows of the given caches (sorted names) in `ferrod_caches`: shared by write
    /// batches, exclusive by CLEAR, so a CLEAR and the writes of its cache are serialized and
    /// their change rows are in commit order. Returns the names that exist.
    pub async fn lock_caches(
        &mut self,
        names: &[&str],
        exclusive: bool,
    ) -> Result<Vec<String>, sqlx::Error> {
        match self {
            Tx::Sqlite(t) => {
                // The transaction holds SQLite's write lock already.
                let mut found = Vec::new();
                for n in names {
                    let hit: Option<String> =
                        sqlx::query_scalar("SELECT name FROM ferrod_caches WHERE name = ?")
                            .bind(n)
                            .fetch_optional(&mut **t)
                            .await?;
                    found.extend(hit);
                }
                Ok(found)
            }
            Tx::Postgres(t) => {
                let sql = if exclusive {
                    "SELECT name FROM ferrod_caches WHERE name = ANY($1) ORDER BY name FOR UPDATE"
                } else {
                    "SELECT name FROM ferrod_caches WHERE name = ANY($1) ORDER BY name FOR SHARE"
                };
                sqlx::query_scalar(sql)
                    .bind(names)
                    .fetch_all(&mut **t)
                    .await
            }
        }
    }

    pub async fn clear_cache(&mut self, cache: &str) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => {
                sqlx::query("DELETE FROM ferrod_entries WHERE cache = ?")
                    .bind(cache)
                    .execute(&mut **t)
                    .await?;
            }
            Tx::Postgres(t) => {
                sqlx::query("DELETE FROM ferrod_entries WHERE cache = $1")
                    .bind(cache)
                    .execute(&mut **t)
                    .await?;
            }
        }
        Ok(())
    }

    /// Returns whether the cache row was deleted.
    pub async fn delete_cache(&mut self, name: &str) -> Result<bool, sqlx::Error> {
        self.clear_cache(name).await?;
        let n = match self {
            Tx::Sqlite(t) => sqlx::query("DELETE FROM ferrod_caches WHERE name = ?")
                .bind(name)
                .execute(&mut **t)
                .await?
                .rows_affected(),
            Tx::Postgres(t) => sqlx::query("DELETE FROM ferrod_caches WHERE name = $1")
                .bind(name)
                .execute(&mut **t)
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    /// Inserts the cache row unless one exists (then the existing definition wins: another
    /// process or an earlier run created it first).
    pub async fn insert_cache(&mut self, def: &CacheDef, now: i64) -> Result<bool, sqlx::Error> {
        let n = match self {
            Tx::Sqlite(t) => sqlx::query(
                "INSERT INTO ferrod_caches (name, key_media_type, value_media_type, \
                 default_lifespan_ms, default_max_idle_ms, configuration, created_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&def.name)
            .bind(&def.key_media_type)
            .bind(&def.value_media_type)
            .bind(def.default_lifespan_ms)
            .bind(def.default_max_idle_ms)
            .bind(&def.configuration)
            .bind(now)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            Tx::Postgres(t) => sqlx::query(
                "INSERT INTO ferrod_caches (name, key_media_type, value_media_type, \
                 default_lifespan_ms, default_max_idle_ms, configuration, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&def.name)
            .bind(&def.key_media_type)
            .bind(&def.value_media_type)
            .bind(def.default_lifespan_ms)
            .bind(def.default_max_idle_ms)
            .bind(&def.configuration)
            .bind(now)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        };
        Ok(n > 0)
    }

    pub async fn select_cache(&mut self, name: &str) -> Result<Option<CacheDef>, sqlx::Error> {
        const COLS: &str = "SELECT name, key_media_type, value_media_type, default_lifespan_ms, \
            default_max_idle_ms, configuration FROM ferrod_caches";
        match self {
            Tx::Sqlite(t) => sqlx::query(&format!("{COLS} WHERE name = ?"))
                .bind(name)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| cache_def_sqlite(&r))
                .transpose(),
            Tx::Postgres(t) => sqlx::query(&format!("{COLS} WHERE name = $1"))
                .bind(name)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| cache_def_pg(&r))
                .transpose(),
        }
    }

    /// Full rows of a cache; used when a cache another process created is adopted.
    pub async fn cache_rows(&mut self, cache: &str) -> Result<Vec<(Bytes, Row)>, sqlx::Error> {
        match self {
            Tx::Sqlite(t) => sqlx::query(
                "SELECT key, value, version, created_ms, lifespan_ms, last_used_ms, max_idle_ms \
                 FROM ferrod_entries WHERE cache = ?",
            )
            .bind(cache)
            .fetch_all(&mut **t)
            .await?
            .iter()
            .map(full_row_sqlite)
            .collect(),
            Tx::Postgres(t) => sqlx::query(concat!(
                "SELECT ",
                pg_key_col!(),
                ", value, version, created_ms, lifespan_ms, last_used_ms, max_idle_ms \
                 FROM ferrod_entries WHERE cache = $1"
            ))
            .bind(cache)
            .fetch_all(&mut **t)
            .await?
            .iter()
            .map(full_row_pg)
            .collect(),
        }
    }

    pub async fn touch(&mut self, cache: &str, touches: &[Touch]) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => {
                for x in touches {
                    sqlx::query(
                        "UPDATE ferrod_entries SET last_used_ms = ?, expires_ms = ? \
                         WHERE cache = ? AND key = ? AND version = ? AND last_used_ms < ?",
                    )
                    .bind(x.last_used_ms)
                    .bind(x.expires_ms)
                    .bind(cache)
                    .bind(x.key.as_ref())
                    .bind(x.version)
                    .bind(x.last_used_ms)
                    .execute(&mut **t)
                    .await?;
                }
            }
            Tx::Postgres(t) => {
                for chunk in touches.chunks(PG_CHUNK) {
                    let stored = pg_keys(chunk.iter().map(|x| &x.key));
                    let versions: Vec<i64> = chunk.iter().map(|x| x.version).collect();
                    let used: Vec<i64> = chunk.iter().map(|x| x.last_used_ms).collect();
                    let expires: Vec<Option<i64>> = chunk.iter().map(|x| x.expires_ms).collect();
                    // Rows found by primary-key probes and updated by TID (see
                    // `entries_by_key!` for why not a join: the planner may hash the cache).
                    sqlx::query(
                        "UPDATE ferrod_entries AS t SET last_used_ms = u.used, expires_ms = u.exp \
                         FROM (SELECT e.tid, v.used, v.exp \
                         FROM UNNEST($2::bytea[], $3::int8[], $4::int8[], $5::int8[]) \
                         AS v(key, version, used, exp) CROSS JOIN LATERAL \
                         (SELECT x.ctid AS tid FROM ferrod_entries x WHERE x.cache = $1 \
                         AND x.key = v.key AND x.version = v.version AND x.last_used_ms < v.used \
                         OFFSET 0) e) u \
                         WHERE t.ctid = u.tid",
                    )
                    .bind(cache)
                    .bind(as_slices(&stored))
                    .bind(versions)
                    .bind(used)
                    .bind(expires)
                    .execute(&mut **t)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes up to `limit` rows that expired at or before `now`, returning what went.
    /// Oldest first, which also keeps PostgreSQL on the `expires_ms` index: with a LIMIT and
    /// no order, statistics that are not yet current (a table that just grew) made it choose
    /// a sequential scan, 25-40 ms per maintenance pass over 100 000 entries none of which
    /// expire (auto_explain during a GET benchmark).
    pub async fn sweep(&mut self, now: i64, limit: i64) -> Result<Vec<Swept>, sqlx::Error> {
        fn get<R: sqlx::Row>(r: &R) -> Result<Swept, sqlx::Error>
        where
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            let key: Vec<u8> = r.try_get(1usize)?;
            let value: Vec<u8> = r.try_get(3usize)?;
            Ok(Swept {
                cache: r.try_get(0usize)?,
                key: Bytes::from(key),
                version: r.try_get(2usize)?,
                value: Bytes::from(value),
            })
        }
        match self {
            Tx::Sqlite(t) => sqlx::query(
                "DELETE FROM ferrod_entries WHERE rowid IN (SELECT rowid FROM ferrod_entries \
                 WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2) \
                 RETURNING cache, key, version, value",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **t)
            .await?
            .iter()
            .map(get)
            .collect(),
            Tx::Postgres(t) => sqlx::query(concat!(
                "DELETE FROM ferrod_entries WHERE (cache, key) IN (SELECT cache, key \
                 FROM ferrod_entries WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
                 AND expires_ms <= $1 RETURNING cache, ",
                pg_key_col!(),
                ", version, value"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **t)
            .await?
            .iter()
            .map(get)
            .collect(),
        }
    }

    /// Deletes change rows committed before `before_ms` and records the highest seq deleted
    /// (`changes_pruned_through`), so a follower can tell it missed rows it never saw.
    pub async fn prune_changes(&mut self, before_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(t) => {
                sqlx::query(SQLITE_RECORD_PRUNED_THROUGH)
                    .bind(before_ms)
                    .execute(&mut **t)
                    .await?;
                sqlx::query("DELETE FROM ferrod_changes WHERE committed_ms < ?")
                    .bind(before_ms)
                    .execute(&mut **t)
                    .await?
                    .rows_affected()
            }
            Tx::Postgres(t) => {
                let n: i64 = sqlx::query_scalar(
                    "WITH d AS (DELETE FROM ferrod_changes WHERE committed_ms < $1 RETURNING seq), \
                     u AS (UPDATE ferrod_meta SET value = GREATEST(value, (SELECT MAX(seq) FROM d)) \
                     WHERE name = 'changes_pruned_through' AND EXISTS (SELECT 1 FROM d)) \
                     SELECT COUNT(*) FROM d",
                )
                .bind(before_ms)
                .fetch_one(&mut **t)
                .await?;
                n as u64
            }
        })
    }
}

/// Records the highest seq that `prune_changes` is about to delete. `+seq` keeps SQLite off
/// its MAX-over-the-rowid shortcut, which walks the change log backwards from its newest row
/// until one is old enough: with nothing to prune that is the whole retained log (a 10 ms scan
/// per 100 000 rows, every maintenance pass, inside the write lock). Read from the
/// `committed_ms` index instead, it costs what is pruned.
const SQLITE_RECORD_PRUNED_THROUGH: &str =
    "UPDATE ferrod_meta SET value = MAX(value, COALESCE((SELECT MAX(+seq) \
     FROM ferrod_changes WHERE committed_ms < ?), 0)) \
     WHERE name = 'changes_pruned_through'";

/// Splits change rows so one statement stays well below PostgreSQL's message limit even when
/// expired values are large.
fn change_chunks(changes: &[Change]) -> Vec<&[Change]> {
    const MAX_BYTES: usize = 16 * 1024 * 1024;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, c) in changes.iter().enumerate() {
        let size = c.key.as_ref().map_or(0, |k| k.len()) + c.value.as_ref().map_or(0, |v| v.len());
        if i > start && (i - start >= PG_CHUNK || bytes + size > MAX_BYTES) {
            out.push(&changes[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// Splits rows for PostgreSQL array statements so that no single message carries more than
/// `PG_CHUNK` rows or (beyond its first row) about 16 MiB of values: the protocol caps a message
/// at 1 GiB and a huge message also makes the server allocate it whole.
fn row_chunks<'r, 'a>(rows: &'r [(&'a Bytes, &'a Row)]) -> Vec<&'r [(&'a Bytes, &'a Row)]> {
    const MAX_BYTES: usize = 16 * 1024 * 1024;
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (k, r)) in rows.iter().enumerate() {
        let size = k.len() + r.value.len();
        if i > start && (i - start >= PG_CHUNK || bytes + size > MAX_BYTES) {
            out.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Rows to write on PostgreSQL, by column, for its `UNNEST` statements (keys in their stored
/// form, see [`PG_INLINE_KEY_MAX`]).
struct Columns<'a> {
    keys: Vec<Cow<'a, [u8]>>,
    long_keys: Vec<Option<&'a [u8]>>,
    values: Vec<&'a [u8]>,
    versions: Vec<i64>,
    created: Vec<i64>,
    lifespan: Vec<i64>,
    last_used: Vec<i64>,
    max_idle: Vec<i64>,
    expires: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [(&'a Bytes, &'a Row)]) -> Self {
        Columns {
            keys: pg_keys(rows.iter().map(|(k, _)| *k)),
            long_keys: long_keys(rows.iter().map(|(k, _)| *k)),
            values: rows.iter().map(|(_, r)| r.value.as_ref()).collect(),
            versions: rows.iter().map(|(_, r)| r.version).collect(),
            created: rows.iter().map(|(_, r)| r.created_ms).collect(),
            lifespan: rows.iter().map(|(_, r)| r.lifespan_ms).collect(),
            last_used: rows.iter().map(|(_, r)| r.last_used_ms).collect(),
            max_idle: rows.iter().map(|(_, r)| r.max_idle_ms).collect(),
            expires: rows.iter().map(|(_, r)| r.expires_at()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Row};

    /// The pruning bookkeeping reads the change log through its `committed_ms` index, not by
    /// scanning it (see [`super::SQLITE_RECORD_PRUNED_THROUGH`]).
    #[tokio::test]
    async fn sqlite_pruning_reads_the_change_log_by_its_index() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        for m in super::migrations::MIGRATIONS {
            sqlx::raw_sql(m.sqlite).execute(&mut conn).await.unwrap();
        }
        let plan: Vec<String> = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            super::SQLITE_RECORD_PRUNED_THROUGH
        ))
        .bind(0i64)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect();
        let changes: Vec<&String> = plan
            .iter()
            .filter(|d| d.contains("ferrod_changes"))
            .collect();
        assert!(
            !changes.is_empty()
                && changes
                    .iter()
                    .all(|d| d.contains("INDEX ferrod_changes_committed")),
            "{plan:?}"
        );
    }
}
