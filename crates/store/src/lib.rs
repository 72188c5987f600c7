//! ferrod data engine.
//!
//! Every cache lives twice: as rows in SQL (the truth) and as a `DashMap` replica in memory
//! (what reads are served from). Writes never touch memory directly: they are queued to the
//! writer of the [`Store`] (one lane, or on PostgreSQL optionally several lanes that own
//! disjoint sets of keys, see [`StoreConfig::writer_lanes`]), which groups whatever is queued into a single SQL transaction
//! (group commit), decides conditional operations against the rows it read *inside* that
//! transaction, commits, and only then mirrors the committed result into memory and answers the
//! callers. Because memory is only ever changed after a commit (by the writer, or by the change
//! feed and read-through from committed rows), a process killed at any instant loses no
//! acknowledged write and memory never shows a write that SQL does not have.
//!
//! Consistency delivered:
//! - **Own writes** are visible to reads on the same replica as soon as the write is
//!   acknowledged (memory is updated right after COMMIT, before the reply).
//! - **Other replicas' writes** (PostgreSQL) reach memory through the change feed
//!   ([`Store::subscribe`] publishes the same changes): every replica follows `ferrod_changes`,
//!   woken by `NOTIFY ferrod_changes` and polling every `feed_poll_interval` as a safety net, so
//!   a read served from memory may lag another replica's write by the feed lag (typically a few
//!   milliseconds; at most the poll interval when a notification is lost). A miss that must
//!   not be trusted can be re-read from SQL with [`Cache::get_fresh`]; `get`/`peek`/
//!   `contains_key` stay memory-only.
//! - **Conditional operations** are linearizable per key across replicas: decided in SQL under
//!   row locks (PostgreSQL) or an exclusive transaction (SQLite), and every key a batch looks at
//!   is refreshed in memory from the row it read, so read-then-replaceWithVersion loops
//!   converge even before the feed delivers.
//! - **Memory only moves forward**: every path that puts SQL state into memory (writer, feed,
//!   read-through, resync) keeps the newest version and remembers recent removals and CLEARs,
//!   so the order in which they race cannot make memory go back in time.
//! - **Events**: each committed change exactly once per subscriber, per key in commit order
//!   (change rows of a key are written under the key's row lock; CLEAR takes the cache row
//!   exclusively), always after memory reflects it. Writes with listener notification off are
//!   published too, marked for client listeners to skip. CLEAR raises no per-entry events but
//!   one `Cleared` event for the cache (so do creating and removing a cache); a replica that
//!   reloads its caches after falling behind the pruned change log publishes `Reloaded` for
//!   each. Consumers that mirror a cache (query index, schema registry) re-read it on those, so
//!   every change of memory reaches them without polling.
//! - **Expiration** is swept by one replica at a time (a lease in `ferrod_leases`), which
//!   records `expired` changes (with the value) so every replica drops the entry and raises
//!   Expired. Max-idle: every replica flushes its own reads' touches to SQL every reaper
//!   interval; the sweep judges max-idle from SQL's `last_used_ms` only. A replica whose own
//!   clock says an entry is idle-expired treats it as absent but does not drop it: it re-reads
//!   the entry's `last_used_ms` from SQL at its next reaper pass, so an entry kept alive by
//!   reads on another replica may read as absent here for up to about one touch-flush interval
//!   plus one reaper interval (the tolerance), and is never expired by this replica's clock.
//!
//! Schema (see `db/migrations.rs`): `ferrod_caches`, `ferrod_entries` (PK cache+key, raw bytes,
//! an indexed `expires_ms` so the sweep never scans; on PostgreSQL, whose btree rows hold at
//! most 2704 bytes, a key over 1 KiB is stored as a tag plus its SHA-256 with the key itself in
//! `long_key`, see `db::PG_INLINE_KEY_MAX`), `ferrod_meta` (SQLite version counter,
//! `changes_pruned_through`), `ferrod_version_seq` (PostgreSQL), `ferrod_changes` (one row per
//! changed key and per clear, written in the same transaction as the change: kind
//! created/modified/removed/expired/clear, version, previous version, origin replica, the value
//! for expired rows), `ferrod_leases`, `ferrod_schema_migrations`. See `feed.rs` for how the
//! follower copes with seqs that become visible out of order, lost notifications and pruning.
//!
//! Max-idle: a read restarts the idle clock in memory at once and in SQL within one reaper
//! interval (touches are flushed in batches), so a crash can lose at most that much idle time.
//!
//! Not delivered: events of changes a replica missed because it fell further behind than the
//! change log's retention (it reloads every cache from SQL instead, see `feed.rs`); and the
//! gap bound assumes COMMIT itself is quick (statements and pauses inside write transactions
//! are bounded by `write_timeout`, the COMMIT's flush and synchronous replication are not).

mod cache;
mod db;
mod entry;
mod feed;
mod store;
mod writer;

use std::time::Duration;

pub use bytes::Bytes;
pub use cache::{Cache, CacheStats};
pub use feed::{ChangeEvent, ChangeKind};
pub use store::{Store, StoreMetrics};

/// Errors surfaced to the protocol layer. Kept coarse on purpose: the server maps each to one
/// HotRod error status, so finer detail lives in the message text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("value of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("cache '{0}' not found")]
    CacheNotFound(String),
    #[error("store is shutting down")]
    Closed,
    #[error("invalid cache definition: {0}")]
    InvalidDefinition(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Configuration of a [`Store`]. Construct with [`StoreConfig::new`] (or `..Default::default()`)
/// so that fields added later do not break callers.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db`, `sqlite::memory:`, `postgres://...` or `postgresql://...`.
    pub database_url: String,
    /// Upper bound for a key and for a value (each). Protects memory and the database from a
    /// single client sending a huge payload.
    pub max_value_bytes: usize,
    /// Caches that must exist after startup (created if missing, left untouched if present).
    pub caches: Vec<CacheDef>,
    /// How often expired entries are deleted and max-idle touches are flushed to SQL.
    pub reaper_interval: Duration,
    /// Upper bound on key operations grouped into one transaction.
    pub max_batch_ops: usize,
    /// PostgreSQL: write transactions in flight at once (keys are spread over this many
    /// writer lanes by hash, so each key's writes stay in FIFO order; CLEAR, cache admin,
    /// maintenance and a put_all spanning lanes run as barriers). SQLite always uses one.
    /// Default 1 (the server's `writer_lanes` setting): on the project's 2-core machine, where the
    /// write path is CPU-bound, 4 lanes made smaller batches and lowered PUT throughput;
    /// more lanes can only pay off when round trips, not CPU, bound a batch. (Writers of one
    /// key, also of a key with no row yet, serialise on a per-key advisory lock, so more
    /// transactions in flight, here or on other replicas, keep per-key order; see
    /// `postgres_new_key_races` in tests/replicas.rs.)
    pub writer_lanes: usize,
    /// Rows of the change log older than this are pruned by the reaper.
    pub changelog_retention: Duration,
    /// SQLite only: how long a transaction waits for a lock held by another connection before
    /// the batch fails. PostgreSQL waits on row locks instead.
    pub busy_timeout: Duration,
    /// PostgreSQL: upper bound for each statement of a write transaction (row-lock waits
    /// included, like Infinispan's lock acquisition timeout) and for any pause inside one. It
    /// bounds how long a change-log seq can stay uncommitted, so followers wait for a missing
    /// seq at most 4 x this long before treating it as rolled back.
    pub write_timeout: Duration,
    /// PostgreSQL: how often the change feed polls even without a notification (safety net for
    /// notifications lost while the listening connection reconnects).
    pub feed_poll_interval: Duration,
    /// PostgreSQL: duration of the expiration lease; if its holder dies another replica takes
    /// the sweep over within this long. Renewed every reaper interval.
    pub expiration_lease: Duration,
    /// Events kept for a subscriber that is behind; a slower one gets `Lagged`.
    pub event_buffer: usize,
}

impl StoreConfig {
    pub fn new(database_url: impl Into<String>) -> Self {
        StoreConfig {
            database_url: database_url.into(),
            ..Default::default()
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            database_url: "sqlite://data/ferrod.db".to_string(),
            max_value_bytes: 64 * 1024 * 1024,
            caches: Vec::new(),
            reaper_interval: Duration::from_secs(1),
            max_batch_ops: 512,
            writer_lanes: 1,
            changelog_retention: Duration::from_secs(600),
            busy_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            feed_poll_interval: Duration::from_millis(500),
            expiration_lease: Duration::from_secs(10),
            event_buffer: 16 * 1024,
        }
    }
}

/// A cache's identity and defaults as persisted in `ferrod_caches`.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheDef {
    pub name: String,
    pub key_media_type: String,
    pub value_media_type: String,
    /// -1 = immortal.
    pub default_lifespan_ms: i64,
    /// -1 = none.
    pub default_max_idle_ms: i64,
    /// Raw configuration text a client sent (may be empty); kept so it can be echoed back.
    pub configuration: String,
}

impl CacheDef {
    /// A cache with no expiration defaults and unspecified media types.
    pub fn new(name: impl Into<String>) -> Self {
        CacheDef {
            name: name.into(),
            key_media_type: String::new(),
            value_media_type: String::new(),
            default_lifespan_ms: -1,
            default_max_idle_ms: -1,
            configuration: String::new(),
        }
    }

    /// Rejects names that cannot be stored and normalizes defaults so that "no expiration" has
    /// exactly one spelling (-1) in SQL.
    pub(crate) fn validated(mut self) -> Result<CacheDef, StoreError> {
        if self.name.is_empty() {
            return Err(StoreError::InvalidDefinition(
                "cache name must not be empty".into(),
            ));
        }
        if self.name.len() > 1024 {
            return Err(StoreError::InvalidDefinition(
                "cache name longer than 1024 bytes".into(),
            ));
        }
        if self.name.contains('\0') {
            return Err(StoreError::InvalidDefinition(
                "cache name contains a NUL character".into(),
            ));
        }
        if self.default_lifespan_ms <= 0 {
            self.default_lifespan_ms = -1;
        }
        if self.default_max_idle_ms <= 0 {
            self.default_max_idle_ms = -1;
        }
        for s in [
            &mut self.key_media_type,
            &mut self.value_media_type,
            &mut self.configuration,
        ] {
            // PostgreSQL TEXT cannot hold NUL; dropping it is better than refusing the cache.
            if s.contains('\0') {
                *s = s.replace('\0', "");
            }
        }
        Ok(self)
    }
}

/// One of lifespan / max-idle as the client asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Use the cache's configured default.
    Default,
    /// Never expires.
    Infinite,
    /// Milliseconds; `n <= 0` means never.
    Millis(i64),
}

impl Expiry {
    /// Resolves to the stored form: -1 (never) or a positive number of milliseconds.
    pub(crate) fn resolve(self, default: i64) -> i64 {
        let ms = match self {
            Expiry::Default => default,
            Expiry::Infinite => -1,
            Expiry::Millis(n) => n,
        };
        if ms <= 0 {
            -1
        } else {
            ms
        }
    }
}

/// Expiration a client asked for on a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiration {
    pub lifespan: Expiry,
    pub max_idle: Expiry,
}

impl Expiration {
    /// Both from the cache's defaults (a plain `put(k, v)`).
    pub const DEFAULT: Expiration = Expiration {
        lifespan: Expiry::Default,
        max_idle: Expiry::Default,
    };
    /// Never expires, whatever the cache's defaults.
    pub const IMMORTAL: Expiration = Expiration {
        lifespan: Expiry::Infinite,
        max_idle: Expiry::Infinite,
    };

    pub fn new(lifespan: Expiry, max_idle: Expiry) -> Self {
        Expiration { lifespan, max_idle }
    }
}

impl Default for Expiration {
    fn default() -> Self {
        Expiration::DEFAULT
    }
}

/// An entry as a client sees it (value plus HotRod metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct EntrySnapshot {
    pub value: Bytes,
    pub version: i64,
    pub created_ms: i64,
    /// -1 = immortal.
    pub lifespan_ms: i64,
    pub last_used_ms: i64,
    /// -1 = none.
    pub max_idle_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PutIfAbsentOutcome {
    Stored,
    Present(EntrySnapshot),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReplaceOutcome {
    Missing,
    /// Carries the previous entry.
    Replaced(EntrySnapshot),
}

#[derive(Clone, Debug, PartialEq)]
pub enum VersionedOutcome {
    Missing,
    /// Carries the current entry, whose version differs from the one asked for.
    Mismatch(EntrySnapshot),
    /// Carries the previous entry.
    Done(EntrySnapshot),
}

#[derive(Clone, Debug, PartialEq)]
pub enum RemoveOutcome {
    Missing,
    /// Carries the previous entry.
    Removed(EntrySnapshot),
}

/// Wall-clock epoch milliseconds: expiration metadata is shared through SQL between processes,
/// so it must be wall time, not a monotonic clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: T) {}
    #[allow(dead_code)]
    fn futures_are_send(b: &crate::db::Backend) {
        assert_send(crate::db::migrations::run(b));
        assert_send(b.ensure_caches(&[], 0));
        assert_send(b.all_caches());
        assert_send(b.load_entries("x", |_, _| {}));
        assert_send(crate::db::connect(&crate::StoreConfig::default()));
    }
    #[allow(dead_code)]
    fn api_futures_are_send(s: &crate::Store, c: &crate::Cache) {
        let (k, e) = (crate::Bytes::new(), crate::Expiration::DEFAULT);
        assert_send(crate::Store::open(crate::StoreConfig::default()));
        assert_send(s.get_or_create_cache(crate::CacheDef::new("x")));
        assert_send(s.remove_cache("x"));
        assert_send(s.shutdown());
        assert_send(s.run_maintenance());
        assert_send(c.put(k.clone(), k.clone(), e));
        assert_send(c.put_if_absent(k.clone(), k.clone(), e));
        assert_send(c.replace(k.clone(), k.clone(), e));
        assert_send(c.replace_if_version(k.clone(), 1, k.clone(), e));
        assert_send(c.remove(k.clone()));
        assert_send(c.remove_if_version(k.clone(), 1));
        assert_send(c.put_all(vec![], e));
        assert_send(c.clear());
        assert_send(c.get_fresh(b"k"));
        let _: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::ChangeEvent>> = s.subscribe();
    }
}
