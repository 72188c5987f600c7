//! Store lifecycle: open (connect, migrate, load), cache registry, reaper, shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cache::{send, Cache};
use crate::db::{self, Backend};
use crate::entry::Entry;
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
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub transactions_committed: AtomicU64,
    pub transactions_failed: AtomicU64,
    pub batches_retried: AtomicU64,
    pub ops_committed: AtomicU64,
    pub entries_expired: AtomicU64,
    pub touches_flushed: AtomicU64,
}

/// State shared by the store handle, the writer and the reaper.
pub(crate) struct Core {
    pub backend: Backend,
    registry: RwLock<HashMap<String, Cache>>,
    pub metrics: Metrics,
    pub writer_tx: mpsc::Sender<Request>,
    pub max_value_bytes: usize,
    pub max_batch_ops: usize,
    pub changelog_retention: Duration,
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
}

struct Control {
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
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

        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let mut registry = HashMap::new();
        let now = now_ms();
        for def in stored_defs {
            let cache = Cache::new(def.clone(), writer_tx.clone(), cfg.max_value_bytes);
            let map = &cache.inner.map;
            let loaded = backend
                .load_entries(&def.name, |k, row| {
                    if !row.is_expired(now) {
                        map.insert(k, Entry::from_row(&row));
                    }
                })
                .await;
            if let Err(e) = loaded {
                backend.close().await;
                return Err(e);
            }
            tracing::info!(cache = %def.name, entries = map.len(), "cache loaded");
            registry.insert(def.name, cache);
        }

        let core = Arc::new(Core {
            backend,
            registry: RwLock::new(registry),
            metrics: Metrics::default(),
            writer_tx,
            max_value_bytes: cfg.max_value_bytes,
            max_batch_ops,
            changelog_retention: cfg.changelog_retention,
        });
        let (stop, stop_rx) = watch::channel(false);
        let writer = tokio::spawn(writer::run(core.clone(), writer_rx));
        let interval = cfg.reaper_interval.max(Duration::from_millis(10));
        let reaper = tokio::spawn(reaper(core.clone(), stop_rx, interval));
        Ok(Store {
            core,
            control: Arc::new(Control {
                closed: AtomicBool::new(false),
                stop,
                tasks: Mutex::new(Some((writer, reaper))),
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
        if let Some((writer, reaper)) = tasks {
            let _ = reaper.await;
            if let Err(e) = send(&self.core.writer_tx, Op::Maintenance).await {
                tracing::warn!("final flush failed: {e}");
            }
            let _ = send(&self.core.writer_tx, Op::Shutdown).await;
            let _ = writer.await;
        }
        self.core.backend.close().await;
    }

    pub fn is_sqlite(&self) -> bool {
        self.core.backend.is_sqlite()
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
        }
    }

    /// Runs one maintenance pass now (touch flush, expiration sweep, change-log pruning) and
    /// returns how many expired rows it deleted. The reaper does this periodically; tests and
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
