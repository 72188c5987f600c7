//! Store lifecycle: open (connect, migrate, load), cache registry, reaper, shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cache::{send, Cache};
use crate::db::{self, Backend};
use crate::feed::{self, ChangeEvent, Cursor, Feed};
use crate::writer::{self, Op, Reply, Request, SWEEP_LIMIT};
use crate::{now_ms, CacheDef, StoreConfig, StoreError};

/// Queue depth in front of the writer. Bounded so a database that stalls pushes back on
/// clients (their writes wait) instead of growing memory without limit.
const WRITER_QUEUE: usize = 16 * 1024;

/// Counters describing the writer, for health endpoints and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Committed SQL transactions (write batches, cache admin, maintenance).
    pub transactions_committed: u64,
    /// Transactions that failed (every op in them got an error).
    pub transactions_failed: u64,
    /// Batches re-run after a serialization failure, deadlock or concurrent insert.
    pub batches_retried: u64,
    /// Client write ops committed (a put_all counts once).
    pub ops_committed: u64,
    /// Rows deleted by the expiration reaper.
    pub entries_expired: u64,
    /// Max-idle touches written to SQL.
    pub touches_flushed: u64,
    /// Change-feed wake-ups that read nothing from SQL: every change announced was this
    /// process's own and already committed (PostgreSQL).
    pub feed_reads_skipped: u64,
    /// Write batches that waited their whole linger for writers that did not come back
    /// (see the writer's `run_lane`); one that started once the writers it expected were
    /// there is not counted.
    pub batches_lingered_out: u64,
    /// Write batches whose COMMIT outcome was unknown (the connection broke during it); each
    /// is followed by a re-read of its keys from SQL.
    pub commits_ambiguous: u64,
    /// Re-reads after an ambiguous COMMIT that finished: memory equals SQL again for those
    /// keys.
    pub resyncs_done: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub transactions_committed: AtomicU64,
    pub transactions_failed: AtomicU64,
    pub batches_retried: AtomicU64,
    pub ops_committed: AtomicU64,
    pub entries_expired: AtomicU64,
    pub touches_flushed: AtomicU64,
    pub feed_reads_skipped: AtomicU64,
    pub batches_lingered_out: AtomicU64,
    pub commits_ambiguous: AtomicU64,
    pub resyncs_done: AtomicU64,
}

/// State shared by the store handle, the writer and the reaper.
pub(crate) struct Core {
    pub backend: Backend,
    registry: RwLock<HashMap<String, Cache>>,
    pub metrics: Metrics,
    pub writer_tx: mpsc::Sender<Request>,
    pub max_value_bytes: usize,
    pub max_batch_ops: usize,
    /// Writer lanes (1 on SQLite).
    pub writer_lanes: usize,
    pub changelog_retention: Duration,
    pub expiration_lease: Duration,
    /// Whether this replica held the expiration lease at its last maintenance pass.
    pub lease_held: AtomicBool,
    pub feed: Feed,
    /// Test hook ([`Store::fail_next_commit`]): a `writer::COMMIT_FAULT_*` value, 0 for none.
    pub commit_fault: std::sync::atomic::AtomicU8,
}

impl Core {
    // A panic while holding the registry lock cannot leave the map half-modified (all
    // modifications are single inserts/removes), so a poisoned lock is safe to keep using.
    pub fn registry_read(&self) -> RwLockReadGuard<'_, HashMap<String, Cache>> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry_write(&self) -> RwLockWriteGuard<'_, HashMap<String, Cache>> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cache(&self, name: &str) -> Option<Cache> {
        self.registry_read().get(name).cloned()
    }

    /// Hands the events of a transaction about to commit to the feed. `seqs` are the seqs of
    /// its change rows, `events` aligned with them (one per change row, silent writes
    /// included). With a follower (PostgreSQL) they are
    /// registered for it to publish in seq order, and nothing is returned; without (SQLite),
    /// they are returned for the writer to publish right after COMMIT.
    pub fn stage_events(&self, seqs: &[i64], events: Vec<ChangeEvent>) -> Vec<Arc<ChangeEvent>> {
        let pairs = seqs.iter().zip(events).map(|(s, e)| (*s, Arc::new(e)));
        if self.feed.follows() {
            self.feed.register_pending(pairs);
            Vec::new()
        } else if self.feed.has_subscribers() {
            pairs.map(|(_, e)| e).collect()
        } else {
            Vec::new()
        }
    }
}

struct Tasks {
    writer: JoinHandle<()>,
    reaper: JoinHandle<()>,
    follower: Option<JoinHandle<()>>,
    notifier: Option<JoinHandle<()>>,
}

struct Control {
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<Tasks>>,
}

/// The data engine. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    core: Arc<Core>,
    control: Arc<Control>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sqlite", &self.is_sqlite())
            .field("caches", &self.cache_names())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, migrates, creates missing configured caches and loads every cache into
    /// memory. Returns only when memory holds everything SQL holds (minus expired entries), so
    /// a replica never serves reads from a partial replica.
    pub async fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        let defs = cfg
            .caches
            .iter()
            .cloned()
            .map(CacheDef::validated)
            .collect::<Result<Vec<_>, _>>()?;
        let max_batch_ops = cfg.max_batch_ops.max(1);
        let backend = db::connect(&cfg).await?;
        let prepared = async {
            db::migrations::run(&backend).await?;
            backend.ensure_caches(&defs, now_ms()).await?;
            backend.all_caches().await
        }
        .await;
        let stored_defs = match prepared {
            Ok(d) => d,
            Err(e) => {
                backend.close().await;
                return Err(e);
            }
        };

        // PostgreSQL: where to follow the change log from, taken before the load so that
        // nothing committed while loading is missed (applying a change twice is harmless).
        let gap_bound = cfg.write_timeout.max(Duration::from_millis(10)) * 4;
        let cursor = if backend.is_sqlite() {
            None
        } else {
            match Cursor::start(&backend, gap_bound).await {
                Ok(c) => Some(c),
                Err(e) => {
                    backend.close().await;
                    return Err(e.into());
                }
            }
        };

        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let mut registry = HashMap::new();
        let now = now_ms();
        let interval = cfg.reaper_interval.max(Duration::from_millis(10));
        for def in stored_defs {
            let cache = Cache::new(
                def.clone(),
                writer_tx.clone(),
                cfg.max_value_bytes,
                backend.clone(),
            );
            let inner = &cache.inner;
            // Nothing else touches memory yet: plain inserts (the keys are fresh allocations).
            let loaded = backend
                .load_entries(&def.name, |k, row| {
                    if !row.is_expired(now) {
                        inner.map.insert(k, crate::entry::Entry::from_row(&row));
                    }
                })
                .await;
            if let Err(e) = loaded {
                backend.close().await;
                return Err(e);
            }
            tracing::info!(cache = %def.name, entries = inner.map.len(), "cache loaded");
            registry.insert(def.name, cache);
        }

        let backend_is_sqlite = backend.is_sqlite();
        let core = Arc::new(Core {
            backend,
            registry: RwLock::new(registry),
            metrics: Metrics::default(),
            writer_tx,
            max_value_bytes: cfg.max_value_bytes,
            max_batch_ops,
            writer_lanes: if backend_is_sqlite {
                1
            } else {
                cfg.writer_lanes.clamp(1, 64)
            },
            changelog_retention: cfg.changelog_retention,
            expiration_lease: cfg.expiration_lease.max(interval * 3),
            lease_held: AtomicBool::new(false),
            feed: Feed::new(
                cfg.event_buffer,
                cursor.is_some(),
                (cfg.feed_poll_interval * 10).max(Duration::from_secs(5)),
            ),
            commit_fault: Default::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let writer = tokio::spawn(writer::run(core.clone(), writer_rx));
        let mut follower = None;
        let mut notifier = None;
        if let Some(mut cursor) = cursor {
            // First catch-up before returning: changes committed during the load (and if the
            // log was pruned past us meanwhile, a reload).
            let mut caught = feed::catch_up(&core, &mut cursor).await;
            if matches!(caught, Err(feed::PollError::FellBehind)) {
                caught = async {
                    cursor = feed::reload(&core, gap_bound).await?;
                    feed::catch_up(&core, &mut cursor).await
                }
                .await;
            }
            if let Err(e) = caught {
                let msg = match e {
                    feed::PollError::Db(e) => e.to_string(),
                    feed::PollError::FellBehind => {
                        "the change log was pruned while loading; retry".to_string()
                    }
                };
                let _ = send(&core.writer_tx, Op::Shutdown).await;
                let _ = writer.await;
                core.backend.close().await;
                return Err(StoreError::Database(msg));
            }
            core.feed.set_ready(true);
            notifier = Some(tokio::spawn(feed::notifier(core.clone(), stop_rx.clone())));
            follower = Some(tokio::spawn(feed::follow(
                core.clone(),
                cfg.database_url.trim().to_string(),
                cursor,
                cfg.feed_poll_interval.max(Duration::from_millis(10)),
                stop_rx.clone(),
            )));
        }
        let reaper = tokio::spawn(reaper(core.clone(), stop_rx, interval));
        Ok(Store {
            core,
            control: Arc::new(Control {
                closed: AtomicBool::new(false),
                stop,
                tasks: Mutex::new(Some(Tasks {
                    writer,
                    reaper,
                    follower,
                    notifier,
                })),
            }),
        })
    }

    pub fn cache(&self, name: &str) -> Option<Cache> {
        self.core.cache(name)
    }

    /// Sorted, so listings are stable.
    pub fn cache_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.core.registry_read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Returns the existing cache untouched, or creates (and commits) a new one.
    pub async fn get_or_create_cache(&self, def: CacheDef) -> Result<Cache, StoreError> {
        if let Some(c) = self.cache(&def.name) {
            return Ok(c);
        }
        let def = def.validated()?;
        match send(&self.core.writer_tx, Op::CreateCache(def)).await? {
            Reply::Cache(c) => Ok(c),
            other => Err(StoreError::Database(format!(
                "internal error: unexpected reply {other:?}"
            ))),
        }
    }

    /// Deletes the cache and all its rows. Handles to it fail with `CacheNotFound` afterwards.
    pub async fn remove_cache(&self, name: &str) -> Result<bool, StoreError> {
        match send(&self.core.writer_tx, Op::RemoveCache(name.to_string())).await? {
            Reply::Removed(b) => Ok(b),
            other => Err(StoreError::Database(format!(
                "internal error: unexpected reply {other:?}"
            ))),
        }
    }

    /// Flushes pending max-idle touches, stops the reaper and the writer (ops queued before
    /// this call still commit; later ones get `Closed`) and closes the pool.
    pub async fn shutdown(&self) {
        if self.control.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.control.stop.send(true);
        let tasks = self
            .control
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Tasks {
            writer,
            reaper,
            follower,
            notifier,
        }) = tasks
        {
            let _ = reaper.await;
            if let Some(f) = follower {
                let _ = f.await;
            }
            if let Some(n) = notifier {
                let _ = n.await;
            }
            if let Err(e) = send(&self.core.writer_tx, Op::Maintenance).await {
                tracing::warn!("final flush failed: {e}");
            }
            let _ = send(&self.core.writer_tx, Op::Shutdown).await;
            let _ = writer.await;
        }
        if !self.core.backend.is_sqlite() && self.core.lease_held.load(Ordering::Acquire) {
            // Hand the sweep over at once instead of after the lease runs out.
            if let Err(e) = self
                .core
                .backend
                .release_lease(crate::db::EXPIRATION_LEASE, &self.core.feed.origin)
                .await
            {
                tracing::debug!("releasing the expiration lease: {e}");
            }
        }
        self.core.backend.close().await;
    }

    pub fn is_sqlite(&self) -> bool {
        self.core.backend.is_sqlite()
    }

    /// Every committed change of every cache, whichever replica made it, exactly once per
    /// change, and per key in commit order, published once memory reflects it. Writes with
    /// listener notification off are included (`ChangeEvent::listener_notification` is false).
    /// CLEAR produces no per-entry events (as in Infinispan) but one `Cleared` event
    /// for the cache, as do creating and removing a cache; `Reloaded` follows a
    /// reload from SQL after the feed fell behind. A subscriber that falls more than
    /// `StoreConfig::event_buffer` events behind gets `RecvError::Lagged` and has missed
    /// events: it must re-read what it mirrors from memory.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<ChangeEvent>> {
        self.core.feed.events.subscribe()
    }

    /// Ready = memory reflects SQL up to the feed's position (for health endpoints). False
    /// while the change feed catches up at startup, while it reloads after falling behind the
    /// pruned change log, and when it has not reached the database for a while.
    pub fn is_ready(&self) -> bool {
        !self.control.closed.load(Ordering::Acquire) && self.core.feed.is_ready()
    }

    /// Last change-log seq applied with nothing missing below it (lag metrics, tests).
    pub fn feed_position(&self) -> i64 {
        self.core.feed.position()
    }

    /// With a change-feed follower (PostgreSQL): the highest change-log seq this replica's
    /// writer committed. Once [`Store::feed_position`] reaches it, every local write
    /// acknowledged so far has been applied and published to [`Store::subscribe`]rs (readers
    /// that must see their own writes wait for that). 0 without a follower (SQLite), where
    /// local writes are published before they are acknowledged.
    pub fn local_commit_position(&self) -> i64 {
        if self.core.feed.follows() {
            *self.core.feed.notify.borrow()
        } else {
            0
        }
    }

    /// Waits until this replica's memory holds every change any replica committed before the
    /// call (its change feed reached the change log's highest seq), at most `within`. Returns
    /// whether it got there. Without a follower (SQLite) memory is always current.
    ///
    /// For writes whose side effects are computed from the rest of a cache as this replica
    /// holds it (the schema registry's `.errors` keys): reads may lag by the feed's delay
    /// (decision 4), but a value written from a lagging view would keep that view.
    pub async fn catch_up_with_database(&self, within: Duration) -> Result<bool, StoreError> {
        if !self.core.feed.follows() {
            return Ok(true);
        }
        let target = self.core.backend.max_change_seq().await?;
        Ok(self.wait_for_feed(target, within).await)
    }

    /// Waits until [`Store::feed_position`] reaches `seq`, at most `within`; returns whether
    /// it did.
    pub async fn wait_for_feed(&self, seq: i64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.core.feed.position() < seq {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Test hook: while paused, the change feed does not poll (simulates a replica that falls
    /// behind).
    #[doc(hidden)]
    pub fn pause_feed(&self, paused: bool) {
        self.core.feed.paused.store(paused, Ordering::Release);
    }

    /// Test hook: the next write batch's COMMIT reports a broken connection, after committing
    /// (`committed`) or after rolling back: the two outcomes a client cannot tell apart.
    #[doc(hidden)]
    pub fn fail_next_commit(&self, committed: bool) {
        let fault = if committed {
            crate::writer::COMMIT_FAULT_AFTER
        } else {
            crate::writer::COMMIT_FAULT_INSTEAD
        };
        self.core.commit_fault.store(fault, Ordering::Release);
    }

    /// Whether this replica ran the expiration sweep at its last maintenance pass (PostgreSQL:
    /// it holds the expiration lease; SQLite: always).
    pub fn holds_expiration_lease(&self) -> bool {
        self.core.lease_held.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> StoreMetrics {
        let m = &self.core.metrics;
        StoreMetrics {
            transactions_committed: m.transactions_committed.load(Ordering::Relaxed),
            transactions_failed: m.transactions_failed.load(Ordering::Relaxed),
            batches_retried: m.batches_retried.load(Ordering::Relaxed),
            ops_committed: m.ops_committed.load(Ordering::Relaxed),
            entries_expired: m.entries_expired.load(Ordering::Relaxed),
            touches_flushed: m.touches_flushed.load(Ordering::Relaxed),
            feed_reads_skipped: m.feed_reads_skipped.load(Ordering::Relaxed),
            batches_lingered_out: m.batches_lingered_out.load(Ordering::Relaxed),
            commits_ambiguous: m.commits_ambiguous.load(Ordering::Relaxed),
            resyncs_done: m.resyncs_done.load(Ordering::Relaxed),
        }
    }

    /// Runs one maintenance pass now (touch flush, expiration sweep, change-log pruning) and
    /// returns how many expired rows it deleted. On PostgreSQL the sweep and the pruning only
    /// run if this replica holds (or can take) the expiration lease; otherwise 0. The reaper does this periodically; tests and
    /// admin tasks use this to not depend on timing.
    pub async fn run_maintenance(&self) -> Result<usize, StoreError> {
        match send(&self.core.writer_tx, Op::Maintenance).await? {
            Reply::Maintenance { swept } => Ok(swept),
            other => Err(StoreError::Database(format!(
                "internal error: unexpected reply {other:?}"
            ))),
        }
    }
}

/// Periodically asks the writer for a maintenance pass; going through the writer keeps the
/// one-writer rule (no lock contention with client batches on SQLite, FIFO with writes).
async fn reaper(core: Arc<Core>, mut stop: watch::Receiver<bool>, interval: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        // Removals older than this cannot race with a read any more (reads are bounded by the
        // write timeout; a minute is far beyond).
        let before = now_ms() - 60_000;
        let caches: Vec<Cache> = core.registry_read().values().cloned().collect();
        for c in &caches {
            c.inner.prune_tombstones(before);
        }
        if !core.backend.is_sqlite() {
            refresh_idle_suspects(&core, &caches).await;
        }
        loop {
            match send(&core.writer_tx, Op::Maintenance).await {
                // A full sweep means more expired rows are probably waiting.
                Ok(Reply::Maintenance { swept }) if swept >= SWEEP_LIMIT => continue,
                Ok(_) => break,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!("expiration reaper: {e}");
                    break;
                }
            }
        }
    }
}

/// Entries whose max-idle ran out by this replica's clock may have been kept alive by reads on
/// another replica, which only SQL's `last_used_ms` knows (touches are flushed there by every
/// replica). Reads treat them as absent meanwhile; this brings the clock of those still alive
/// up to date. Truly expired ones are removed by the sweep's `expired` change.
async fn refresh_idle_suspects(core: &Core, caches: &[Cache]) {
    for c in caches {
        let inner = &c.inner;
        if inner.idle_suspects.is_empty() {
            continue;
        }
        let keys: Vec<bytes::Bytes> = inner.idle_suspects.iter().map(|k| k.clone()).collect();
        for k in &keys {
            inner.idle_suspects.remove(k);
        }
        match core.backend.read_last_used(&inner.def.name, &keys).await {
            Ok(rows) => {
                for (k, version, last_used) in rows {
                    if let Some(e) = inner.map.get(&k[..]) {
                        if e.version == version {
                            e.last_used_ms.fetch_max(last_used, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("refreshing max-idle clocks: {e}"),
        }
    }
}
