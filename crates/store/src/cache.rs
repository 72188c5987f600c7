//! The per-cache handle: memory reads, and write submission to the store's writer.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::db::Backend;
use crate::entry::{Entry, Row};
use crate::writer::{KeyOp, Op, Reply, Request};
use crate::{
    now_ms, CacheDef, EntrySnapshot, Expiration, PutIfAbsentOutcome, RemoveOutcome, ReplaceOutcome,
    StoreError, VersionedOutcome,
};

/// The hasher of the per-cache maps: foldhash (hashbrown's own default) with a random seed per
/// map, several times cheaper than std's SipHash on short keys, which every read hashes.
type KeyHasher = foldhash::fast::RandomState;
type DashMap<K, V> = dashmap::DashMap<K, V, KeyHasher>;
type DashSet<K> = dashmap::DashSet<K, KeyHasher>;

/// Cumulative statistics since the cache was loaded by this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub stores: u64,
    pub retrievals: u64,
    pub hits: u64,
    pub misses: u64,
    pub remove_hits: u64,
    pub remove_misses: u64,
    pub started_ms: i64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub stores: AtomicU64,
    pub retrievals: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub remove_hits: AtomicU64,
    pub remove_misses: AtomicU64,
}

pub(crate) struct CacheInner {
    pub def: CacheDef,
    /// Replica of this cache's SQL rows. Only the writer inserts/replaces/removes; readers only
    /// bump `last_used_ms`.
    pub map: DashMap<Bytes, Entry>,
    /// Keys whose max-idle clock was restarted by a read since the last flush to SQL. Only
    /// entries that have a max-idle are recorded: touching the others changes nothing.
    pub dirty: DashSet<Bytes>,
    pub counters: Counters,
    pub started_ms: i64,
    /// Set (by the writer, after commit) when the cache is removed, so stale handles fail
    /// instead of writing rows for a cache that no longer exists.
    pub removed: AtomicBool,
    pub writer: mpsc::Sender<Request>,
    pub max_value_bytes: usize,
    /// For read-through ([`Cache::get_fresh`]); pools are shared handles.
    pub backend: Backend,
    /// Versions below this were wiped by a CLEAR: a row read before the clear committed must
    /// not come back. Versions are allocated after the cache row lock a CLEAR holds
    /// exclusively, so every row written after a clear has a version at or above it.
    pub cleared_below: AtomicI64,
    /// Recently removed keys and the version they were removed at (plus when, for pruning), so
    /// that a refresh read before the removal cannot resurrect the entry. See [`CacheInner::install`].
    pub tombstones: DashMap<Bytes, (i64, i64)>,
    /// Keys whose in-memory max-idle clock says "expired": another replica may have kept them
    /// alive, so the reaper re-reads their `last_used_ms` from SQL instead of dropping them.
    pub idle_suspects: DashSet<Bytes>,
}

/// A cheap, cloneable handle to one cache.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<CacheInner>,
    /// Whether writes through this handle raise client-listener events (see
    /// [`Cache::with_listener_notification`]).
    notify: bool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.def.name)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub(crate) fn new(
        def: CacheDef,
        writer: mpsc::Sender<Request>,
        max_value_bytes: usize,
        backend: Backend,
    ) -> Cache {
        Cache {
            inner: Arc::new(CacheInner {
                def,
                map: DashMap::with_hasher(KeyHasher::default()),
                dirty: DashSet::with_hasher(KeyHasher::default()),
                counters: Counters::default(),
                started_ms: now_ms(),
                removed: AtomicBool::new(false),
                writer,
                max_value_bytes,
                backend,
                cleared_below: AtomicI64::new(i64::MIN),
                tombstones: DashMap::with_hasher(KeyHasher::default()),
                idle_suspects: DashSet::with_hasher(KeyHasher::default()),
            }),
            notify: true,
        }
    }

    /// A handle to the same cache whose writes raise client-listener events (`notify`, the
    /// default) or not (HotRod's SKIP_LISTENER_NOTIFICATION flag:
    /// `cache.with_listener_notification(false).put(..)`). Without events a write is otherwise
    /// the same: committed, recorded in the change log, and applied to the memory of every
    /// replica; its [`crate::ChangeEvent`] is still published on every replica, with
    /// `listener_notification` false, for consumers that mirror the cache (client listeners
    /// skip it). Reads, CLEAR and expiration are not affected (CLEAR raises no per-entry events
    /// anyway, and an entry written without events still raises Expired when it expires).
    pub fn with_listener_notification(&self, notify: bool) -> Cache {
        Cache {
            inner: self.inner.clone(),
            notify,
        }
    }

    /// Whether writes through this handle raise client-listener events.
    pub fn listener_notification(&self) -> bool {
        self.notify
    }

    pub fn name(&self) -> &str {
        &self.inner.def.name
    }

    pub fn def(&self) -> &CacheDef {
        &self.inner.def
    }

    /// Reads an entry and restarts its max-idle clock. Counts as a retrieval in the stats.
    pub fn get(&self, key: &[u8]) -> Option<EntrySnapshot> {
        let found = self.read(key, true);
        let c = &self.inner.counters;
        c.retrievals.fetch_add(1, Ordering::Relaxed);
        if found.is_some() {
            c.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            c.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Reads an entry without touching it (for metadata queries, iteration and listeners that
    /// must not keep entries alive).
    pub fn peek(&self, key: &[u8]) -> Option<EntrySnapshot> {
        self.read(key, false)
    }

    /// Like [`Cache::get`] but cheaper: no value clone, no stats.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        let now = now_ms();
        let touched = match self.inner.map.get(key) {
            Some(e) if !e.is_expired(now) => {
                // Only max-idle entries have a clock to restart; leaving the others alone keeps
                // their memory metadata identical to SQL's.
                if e.max_idle_ms >= 0 {
                    e.last_used_ms.fetch_max(now, Ordering::Relaxed);
                    Some(Some(e.key().clone()))
                } else {
                    Some(None)
                }
            }
            Some(e) => {
                if e.is_idle_expired_only(now) {
                    self.inner.idle_suspects.insert(e.key().clone());
                }
                None
            }
            None => None,
        };
        if let Some(Some(k)) = &touched {
            self.inner.dirty.insert(k.clone());
        }
        touched.is_some()
    }

    /// Reads the row from SQL (not from memory), brings memory up to date with it, and returns
    /// the entry if it exists and is not expired. Use it when a memory miss must not be trusted
    /// (decision 4: a miss may be stale by the feed's lag). Does not restart the max-idle clock.
    pub async fn get_fresh(&self, key: &[u8]) -> Result<Option<EntrySnapshot>, StoreError> {
        if self.inner.removed.load(Ordering::Acquire) {
            return Err(StoreError::CacheNotFound(self.inner.def.name.clone()));
        }
        let backend = &self.inner.backend;
        // Captured before the read: a version memory held then was committed before the read
        // started, so if SQL no longer has the row, that version is gone for good.
        let before = self.inner.map.get(key).map(|e| e.version);
        let row = backend.read_row(&self.inner.def.name, key).await?;
        let key = Bytes::copy_from_slice(key);
        match row {
            Some(row) => {
                self.inner.install(&key, &row);
                let now = now_ms();
                if row.is_expired(now) {
                    return Ok(None);
                }
                // Memory may hold a more recent max-idle touch than SQL.
                let mut snap = row.snapshot();
                if let Some(e) = self.inner.map.get(&key[..]) {
                    if e.version == snap.version {
                        snap.last_used_ms = snap
                            .last_used_ms
                            .max(e.last_used_ms.load(Ordering::Relaxed));
                    }
                }
                if crate::entry::is_expired(
                    snap.created_ms,
                    snap.lifespan_ms,
                    snap.last_used_ms,
                    snap.max_idle_ms,
                    now,
                ) {
                    return Ok(None);
                }
                Ok(Some(snap))
            }
            None => {
                if let Some(v) = before {
                    self.inner.remove_upto(&key, v, false);
                }
                Ok(None)
            }
        }
    }

    fn read(&self, key: &[u8], touch: bool) -> Option<EntrySnapshot> {
        let now = now_ms();
        let (snap, needs_flush) = {
            let e = self.inner.map.get(key)?;
            if e.is_expired(now) {
                if e.is_idle_expired_only(now) {
                    self.inner.idle_suspects.insert(e.key().clone());
                }
                return None;
            }
            let restart = touch && e.max_idle_ms >= 0;
            if restart {
                e.last_used_ms.fetch_max(now, Ordering::Relaxed);
            }
            // The map's own key (a refcount bump, no copy) is what the dirty set records.
            (e.snapshot(), restart.then(|| e.key().clone()))
        };
        // Recorded after the map guard is gone: the dirty set has its own shard locks.
        if let Some(k) = needs_flush {
            self.inner.dirty.insert(k);
        }
        Some(snap)
    }

    /// Number of unexpired entries. O(n): HotRod asks for it rarely (SIZE, stats).
    pub fn size(&self) -> u64 {
        let now = now_ms();
        self.inner
            .map
            .iter()
            .filter(|e| self.alive(e.key(), e.value(), now))
            .count() as u64
    }

    /// Snapshot of the unexpired keys; iteration pages over it and peeks each key.
    pub fn keys(&self) -> Vec<Bytes> {
        let now = now_ms();
        self.inner
            .map
            .iter()
            .filter(|e| self.alive(e.key(), e.value(), now))
            .map(|e| e.key().clone())
            .collect()
    }

    /// Not expired; an entry only idle by this replica's clock is recorded as a suspect (another
    /// replica may have kept it alive, see `idle_suspects`).
    fn alive(&self, key: &Bytes, e: &Entry, now: i64) -> bool {
        if !e.is_expired(now) {
            return true;
        }
        if e.is_idle_expired_only(now) {
            self.inner.idle_suspects.insert(key.clone());
        }
        false
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            stores: c.stores.load(Ordering::Relaxed),
            retrievals: c.retrievals.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            remove_hits: c.remove_hits.load(Ordering::Relaxed),
            remove_misses: c.remove_misses.load(Ordering::Relaxed),
            started_ms: self.inner.started_ms,
        }
    }

    /// Stores unconditionally; returns the previous unexpired entry.
    pub async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        exp: Expiration,
    ) -> Result<Option<EntrySnapshot>, StoreError> {
        self.check_size(&key, Some(&value))?;
        let (lifespan, max_idle) = self.resolve(exp);
        match self
            .submit(KeyOp::Put {
                key,
                value,
                lifespan,
                max_idle,
            })
            .await?
        {
            Reply::Put(prev) => Ok(prev),
            other => Err(unexpected(other)),
        }
    }

    pub async fn put_if_absent(
        &self,
        key: Bytes,
        value: Bytes,
        exp: Expiration,
    ) -> Result<PutIfAbsentOutcome, StoreError> {
        self.check_size(&key, Some(&value))?;
        let (lifespan, max_idle) = self.resolve(exp);
        match self
            .submit(KeyOp::PutIfAbsent {
                key,
                value,
                lifespan,
                max_idle,
            })
            .await?
        {
            Reply::PutIfAbsent(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn replace(
        &self,
        key: Bytes,
        value: Bytes,
        exp: Expiration,
    ) -> Result<ReplaceOutcome, StoreError> {
        self.check_size(&key, Some(&value))?;
        let (lifespan, max_idle) = self.resolve(exp);
        match self
            .submit(KeyOp::Replace {
                key,
                value,
                lifespan,
                max_idle,
            })
            .await?
        {
            Reply::Replace(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn replace_if_version(
        &self,
        key: Bytes,
        version: i64,
        value: Bytes,
        exp: Expiration,
    ) -> Result<VersionedOutcome, StoreError> {
        self.check_size(&key, Some(&value))?;
        let (lifespan, max_idle) = self.resolve(exp);
        match self
            .submit(KeyOp::ReplaceIfVersion {
                key,
                version,
                value,
                lifespan,
                max_idle,
            })
            .await?
        {
            Reply::Versioned(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn remove(&self, key: Bytes) -> Result<RemoveOutcome, StoreError> {
        self.check_size(&key, None)?;
        match self.submit(KeyOp::Remove { key }).await? {
            Reply::Remove(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn remove_if_version(
        &self,
        key: Bytes,
        version: i64,
    ) -> Result<VersionedOutcome, StoreError> {
        self.check_size(&key, None)?;
        match self.submit(KeyOp::RemoveIfVersion { key, version }).await? {
            Reply::Versioned(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Stores all entries in one transaction: either all are committed or none. A key that
    /// appears twice ends with its last value.
    pub async fn put_all(
        &self,
        entries: Vec<(Bytes, Bytes)>,
        exp: Expiration,
    ) -> Result<(), StoreError> {
        for (k, v) in &entries {
            self.check_size(k, Some(v))?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let (lifespan, max_idle) = self.resolve(exp);
        match self
            .submit(KeyOp::PutAll {
                entries,
                lifespan,
                max_idle,
            })
            .await?
        {
            Reply::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn clear(&self) -> Result<(), StoreError> {
        match self
            .inner
            .clone()
            .send_op(Op::Clear(self.inner.clone()))
            .await?
        {
            Reply::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn resolve(&self, exp: Expiration) -> (i64, i64) {
        (
            exp.lifespan.resolve(self.inner.def.default_lifespan_ms),
            exp.max_idle.resolve(self.inner.def.default_max_idle_ms),
        )
    }

    fn check_size(&self, key: &Bytes, value: Option<&Bytes>) -> Result<(), StoreError> {
        let max = self.inner.max_value_bytes;
        for size in [Some(key.len()), value.map(|v| v.len())]
            .into_iter()
            .flatten()
        {
            if size > max {
                return Err(StoreError::TooLarge { size, max });
            }
        }
        Ok(())
    }

    async fn submit(&self, op: KeyOp) -> Result<Reply, StoreError> {
        self.inner
            .clone()
            .send_op(Op::Key(self.inner.clone(), op, self.notify))
            .await
    }
}

impl CacheInner {
    /// Makes memory hold `row` unless memory already knows a newer state of the key: a newer
    /// version, a removal at or after this version, or a CLEAR after it. Every path that puts
    /// SQL state into memory (writer, feed, read-through, resync) goes through here, so the
    /// order in which they happen to run cannot make memory go back in time. Returns whether
    /// memory now holds this version.
    pub(crate) fn install(&self, key: &Bytes, row: &Row) -> bool {
        if row.version < self.cleared_below.load(Ordering::Acquire) {
            return false;
        }
        if self
            .tombstones
            .get(&key[..])
            .is_some_and(|t| t.0 >= row.version)
        {
            return false;
        }
        if let Some(mut cur) = self.map.get_mut(&key[..]) {
            if cur.version > row.version {
                return false;
            }
            if cur.version == row.version {
                // Same version, same value: only a later max-idle touch can be news.
                cur.last_used_ms
                    .fetch_max(row.last_used_ms, Ordering::Relaxed);
            } else {
                *cur = Entry::from_row(row);
            }
            return true;
        }
        // A new key is copied: it may point into a connection's read buffer.
        match self.map.entry(Bytes::copy_from_slice(key)) {
            dashmap::Entry::Occupied(mut o) => {
                let cur = o.get();
                if cur.version > row.version {
                    return false;
                }
                if cur.version == row.version {
                    // Same version, same value: only a later max-idle touch can be news.
                    cur.last_used_ms
                        .fetch_max(row.last_used_ms, Ordering::Relaxed);
                    return true;
                }
                o.insert(Entry::from_row(row));
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Entry::from_row(row));
            }
        }
        true
    }

    /// Removes the key if memory holds `version` or older. With `tombstone`, also remembers
    /// the removal so a refresh read earlier cannot bring that version back. Returns the
    /// removed entry.
    pub(crate) fn remove_upto(&self, key: &[u8], version: i64, tombstone: bool) -> Option<Entry> {
        let removed = self
            .map
            .remove_if(key, |_, e| e.version <= version)
            .map(|(_, e)| e);
        if removed.is_some() || !self.map.contains_key(key) {
            self.dirty.remove(key);
            self.idle_suspects.remove(key);
        }
        if tombstone {
            let now = now_ms();
            self.tombstones
                .entry(Bytes::copy_from_slice(key))
                .and_modify(|t| {
                    if t.0 < version {
                        *t = (version, now);
                    }
                })
                .or_insert((version, now));
        }
        removed
    }

    /// Drops every entry written before the CLEAR whose version is `version`, keeping entries
    /// written after it.
    pub(crate) fn clear_below(&self, version: i64) {
        self.cleared_below.fetch_max(version, Ordering::AcqRel);
        self.map.retain(|_, e| e.version >= version);
        self.tombstones.retain(|_, t| t.0 >= version);
        self.dirty.retain(|k| self.map.contains_key(k));
        self.idle_suspects.retain(|k| self.map.contains_key(k));
    }

    /// Forgets removals older than `before_ms`: by then no read that started before them can
    /// still be in flight (SQL statements of the store are bounded by its write timeout).
    pub(crate) fn prune_tombstones(&self, before_ms: i64) {
        if !self.tombstones.is_empty() {
            self.tombstones.retain(|_, t| t.1 >= before_ms);
        }
    }

    /// Queues an op and waits for its commit. Cancel-safe: if the caller drops this future
    /// before the op is queued nothing happens; after, the writer still commits (or fails) the
    /// op as a whole and updates memory itself, only the answer is discarded.
    pub(crate) async fn send_op(self: Arc<Self>, op: Op) -> Result<Reply, StoreError> {
        if self.removed.load(Ordering::Acquire) {
            return Err(StoreError::CacheNotFound(self.def.name.clone()));
        }
        send(&self.writer, op).await
    }
}

pub(crate) async fn send(writer: &mpsc::Sender<Request>, op: Op) -> Result<Reply, StoreError> {
    let (tx, rx) = oneshot::channel();
    writer
        .send(Request { op, respond: tx })
        .await
        .map_err(|_| StoreError::Closed)?;
    rx.await.map_err(|_| StoreError::Closed)?
}

fn unexpected(r: Reply) -> StoreError {
    // Unreachable by construction (the writer answers each op kind with its reply kind), but a
    // wrong reply must not panic the connection task.
    StoreError::Database(format!("internal error: unexpected reply {r:?}"))
}
