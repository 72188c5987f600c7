//! The writer: group commit, conditional decisions in SQL, memory mirroring.
//!
//! Why one writer lane per key: SQLite allows one writer anyway, and on PostgreSQL one task
//! that drains a queue into one transaction turns N client writes into one commit (one fsync),
//! which is what makes durable throughput approach what the database can commit. FIFO order of
//! a lane's queue is the order ops take effect, also between ops of the same batch. With
//! several lanes (PostgreSQL, `writer_lanes`), each key belongs to one lane by hash, so the
//! lanes' transactions never write the same rows and per-key order is unchanged; see [`run`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::cache::{Cache, CacheInner};
use crate::db::{self, Change, Touch};
use crate::entry::{Row, RowMeta};
use crate::feed::{ChangeEvent, ChangeKind};
use crate::store::Core;
use crate::{
    now_ms, CacheDef, EntrySnapshot, PutIfAbsentOutcome, RemoveOutcome, ReplaceOutcome, StoreError,
    VersionedOutcome,
};

/// Payload bound of one batch, so one transaction (and the memory it pins) stays modest.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How often a batch is re-run after a serialization failure, deadlock or lost insert race.
const MAX_ATTEMPTS: u32 = 6;
/// Expired rows deleted per maintenance transaction; the reaper repeats while it gets a full one.
pub(crate) const SWEEP_LIMIT: usize = 1000;

pub(crate) struct Request {
    pub op: Op,
    pub respond: oneshot::Sender<Result<Reply, StoreError>>,
}

pub(crate) enum Op {
    /// Batchable. The flag is whether the op's changes raise client-listener events (HotRod's
    /// SKIP_LISTENER_NOTIFICATION clears it); memory of every replica is updated either way.
    Key(Arc<CacheInner>, KeyOp, bool),
    /// The rest run in a transaction of their own: they are rare and touch whole caches.
    Clear(Arc<CacheInner>),
    CreateCache(CacheDef),
    /// Registers a cache another replica created (None if it does not exist in SQL).
    AdoptCache(String),
    RemoveCache(String),
    Maintenance,
    Shutdown,
    /// Answered by a writer lane once everything queued to it before has been committed and
    /// applied (the dispatcher's barrier).
    Fence,
}

/// Expirations are already resolved against the cache defaults (-1 = never).
pub(crate) enum KeyOp {
    Put {
        key: Bytes,
        value: Bytes,
        lifespan: i64,
        max_idle: i64,
    },
    PutIfAbsent {
        key: Bytes,
        value: Bytes,
        lifespan: i64,
        max_idle: i64,
    },
    Replace {
        key: Bytes,
        value: Bytes,
        lifespan: i64,
        max_idle: i64,
    },
    ReplaceIfVersion {
        key: Bytes,
        version: i64,
        value: Bytes,
        lifespan: i64,
        max_idle: i64,
    },
    Remove {
        key: Bytes,
    },
    RemoveIfVersion {
        key: Bytes,
        version: i64,
    },
    PutAll {
        entries: Vec<(Bytes, Bytes)>,
        lifespan: i64,
        max_idle: i64,
    },
}

impl KeyOp {
    fn keys(&self) -> Box<dyn Iterator<Item = &Bytes> + '_> {
        match self {
            KeyOp::Put { key, .. }
            | KeyOp::PutIfAbsent { key, .. }
            | KeyOp::Replace { key, .. }
            | KeyOp::ReplaceIfVersion { key, .. }
            | KeyOp::Remove { key }
            | KeyOp::RemoveIfVersion { key, .. } => Box::new(std::iter::once(key)),
            KeyOp::PutAll { entries, .. } => Box::new(entries.iter().map(|(k, _)| k)),
        }
    }

    /// Upper bound of versions this op can consume.
    fn versions_needed(&self) -> usize {
        match self {
            KeyOp::Remove { .. } | KeyOp::RemoveIfVersion { .. } => 0,
            KeyOp::PutAll { entries, .. } => entries.len(),
            _ => 1,
        }
    }

    /// (ops, bytes) weight for the batch bounds.
    fn weight(&self) -> (usize, usize) {
        match self {
            KeyOp::Put { key, value, .. }
            | KeyOp::PutIfAbsent { key, value, .. }
            | KeyOp::Replace { key, value, .. }
            | KeyOp::ReplaceIfVersion { key, value, .. } => (1, key.len() + value.len()),
            KeyOp::Remove { key } | KeyOp::RemoveIfVersion { key, .. } => (1, key.len()),
            KeyOp::PutAll { entries, .. } => (
                entries.len().max(1),
                entries.iter().map(|(k, v)| k.len() + v.len()).sum(),
            ),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Reply {
    Put(Option<EntrySnapshot>),
    PutIfAbsent(PutIfAbsentOutcome),
    Replace(ReplaceOutcome),
    Versioned(VersionedOutcome),
    Remove(RemoveOutcome),
    Unit,
    Cache(Cache),
    Removed(bool),
    Adopted(Option<Cache>),
    Maintenance { swept: usize },
}

enum BatchError {
    /// Re-running the batch from scratch is expected to succeed.
    Retry(String),
    /// The database refused what one of the batch's ops writes (see [`db::is_refused_write`]):
    /// nothing was committed, and each op is worth running again on its own.
    Refused(String),
    Fatal(String),
    /// COMMIT itself failed (typically the connection broke): the transaction may or may not
    /// have been committed, so memory must be re-read from SQL rather than trusted.
    Ambiguous(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        if db::is_retryable(&e) {
            BatchError::Retry(e.to_string())
        } else if db::is_refused_write(&e) {
            BatchError::Refused(e.to_string())
        } else {
            BatchError::Fatal(e.to_string())
        }
    }
}

/// [`Core::commit_fault`] values (test hook): COMMIT runs, then reports a broken connection.
pub(crate) const COMMIT_FAULT_AFTER: u8 = 1;
/// The transaction rolls back and COMMIT reports a broken connection.
pub(crate) const COMMIT_FAULT_INSTEAD: u8 = 2;

/// The writer. With one lane (SQLite, or `writer_lanes = 1`) it is the lane itself. With
/// several (PostgreSQL), this task dispatches: an op whose keys all hash to one lane goes to
/// that lane's queue (so the writes of one key stay in FIFO order, and two lanes never write
/// the same key, so their transactions never wait for each other); everything else (CLEAR,
/// cache admin, maintenance, shutdown, a put_all spanning lanes) is a barrier: every lane
/// finishes what it was given, then the op runs alone, and only then is the next op dispatched.
pub(crate) async fn run(core: Arc<Core>, mut rx: mpsc::Receiver<Request>) {
    let n = core.writer_lanes.max(1);
    if n == 1 {
        run_lane(core, rx).await;
        return;
    }
    let mut lanes = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, lane_rx) = mpsc::channel(LANE_QUEUE);
        tasks.push(tokio::spawn(run_lane(core.clone(), lane_rx)));
        lanes.push(tx);
    }
    while let Some(req) = rx.recv().await {
        if let Some(i) = lane_of(&req.op, n) {
            if let Err(mpsc::error::SendError(req)) = lanes[i].send(req).await {
                // Only if the lane task died (it catches panics, so this is not expected).
                let _ = req.respond.send(Err(StoreError::Closed));
            }
            continue;
        }
        fence(&lanes).await;
        let stop = matches!(req.op, Op::Shutdown);
        if matches!(req.op, Op::Key(..)) {
            guarded(run_batch(&core, vec![req])).await;
        } else {
            guarded(run_solo(&core, req)).await;
        }
        if stop {
            break;
        }
    }
    drop(lanes);
    for t in tasks {
        let _ = t.await;
    }
}

/// Queue bound of one lane (the dispatcher's queue holds the rest).
const LANE_QUEUE: usize = 4096;

/// The lane whose keys this op writes, or None if it must run as a barrier.
fn lane_of(op: &Op, n: usize) -> Option<usize> {
    let Op::Key(cache, op, _) = op else {
        return None;
    };
    let mut lane = None;
    for key in op.keys() {
        let l = key_lane(&cache.def.name, key, n);
        match lane {
            None => lane = Some(l),
            Some(x) if x == l => {}
            Some(_) => return None,
        }
    }
    lane
}

fn key_lane(cache: &str, key: &[u8], n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cache.hash(&mut h);
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// Returns once every lane has committed and applied everything queued to it before.
async fn fence(lanes: &[mpsc::Sender<Request>]) {
    let mut waits = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let (tx, rx) = oneshot::channel();
        if lane
            .send(Request {
                op: Op::Fence,
                respond: tx,
            })
            .await
            .is_ok()
        {
            waits.push(rx);
        }
    }
    for w in waits {
        let _ = w.await;
    }
}

/// A batch at least this large means writers are queueing up concurrently (see [`run_lane`]).
const LINGER_MIN_REQUESTS: usize = 8;
/// The longest a batch waits for more writes before it starts (tokio's timer ticks in ms).
const LINGER: Duration = Duration::from_millis(1);

/// One writer lane: drains its queue into batches, one transaction at a time.
///
/// Why a batch may linger: while one transaction runs, the writers it does not contain queue
/// up, and the writers it answers send their next write a moment after it ends; started at
/// once, the next batch holds only the former, so under a steady load the batches settle into
/// two alternating halves of the writers, each paying the whole per-transaction cost (about
/// 0.65 ms of PostgreSQL's CPU for a transaction of one write, benches/README.md, session 5).
/// So when the previous batch was large (concurrent writers, not one client waiting for its
/// answer), the next one waits up to [`LINGER`] for the requests that were queued when the
/// previous batch ended plus as many as it answered, and starts as soon as they are there.
/// (Counted in requests: counting the first request of the wait among the ones to wait for
/// made a batch of N closed-loop writers wait for N + 1 that never came, i.e. the whole
/// `LINGER` of 1-2 ms timer ticks, a third of every batch's cycle at 64 writers.)
async fn run_lane(core: Arc<Core>, mut rx: mpsc::Receiver<Request>) {
    let mut carry: Option<Request> = None;
    // Requests of the previous batch, and how many were queued when it ended.
    let mut previous_requests = 0usize;
    let mut queued_at_end = 0usize;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        if !matches!(first.op, Op::Key(..)) {
            let stop = matches!(first.op, Op::Shutdown);
            guarded(run_solo(&core, first)).await;
            if stop {
                // Dropping the receiver makes every later submit fail fast with Closed.
                return;
            }
            continue;
        }
        let mut batch = Vec::new();
        let (mut ops, mut bytes) = (0usize, 0usize);
        // Set when the queue first runs dry, if the batch lingers (see above).
        let mut linger_until: Option<tokio::time::Instant> = None;
        let expected = queued_at_end + previous_requests;
        let mut next = Some(first);
        while let Some(req) = next.take() {
            if let Op::Key(_, op, _) = &req.op {
                let (o, b) = op.weight();
                ops += o;
                bytes += b;
            }
            batch.push(req);
            if ops >= core.max_batch_ops || bytes >= MAX_BATCH_BYTES {
                break;
            }
            match rx.try_recv() {
                Ok(r) if matches!(r.op, Op::Key(..)) => next = Some(r),
                Ok(r) => carry = Some(r),
                Err(_) => {}
            }
            if next.is_none() && carry.is_none() && previous_requests >= LINGER_MIN_REQUESTS {
                let deadline =
                    *linger_until.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                if batch.len() < expected {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) if matches!(r.op, Op::Key(..)) => next = Some(r),
                        Ok(Some(r)) => carry = Some(r),
                        Ok(None) => {}
                        Err(_) => {
                            core.metrics
                                .batches_lingered_out
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        previous_requests = batch.len();
        guarded(run_batch(&core, batch)).await;
        queued_at_end = rx.len();
    }
}

/// A bug that panics while handling one batch must not take the whole store down with it: the
/// batch's callers see `Closed` (their reply senders are dropped) and the writer carries on.
async fn guarded(f: impl std::future::Future<Output = ()>) {
    use futures::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(f).catch_unwind().await {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!("store writer recovered from a panic: {msg}");
    }
}

async fn run_batch(core: &Arc<Core>, batch: Vec<Request>) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match execute(core, &batch).await {
            Ok(done) => {
                core.metrics
                    .transactions_committed
                    .fetch_add(1, Ordering::Relaxed);
                core.metrics
                    .ops_committed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                apply(core, batch, done);
                return;
            }
            Err(BatchError::Retry(why)) if attempt < MAX_ATTEMPTS => {
                core.metrics.batches_retried.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, "retrying write batch: {why}");
                tokio::time::sleep(Duration::from_millis(2 * u64::from(attempt))).await;
            }
            Err(BatchError::Refused(why)) if batch.len() > 1 => {
                // The database refused something in the batch (a key PostgreSQL cannot index,
                // a constraint, a trigger): that is one op's failure, and the other callers
                // whose writes happened to share its transaction must not get it. Nothing was
                // committed, so each op runs again in a transaction of its own, in the batch's
                // order (which keeps every key's writes in FIFO order).
                core.metrics
                    .transactions_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    ops = batch.len(),
                    "write batch failed, running its ops one by one: {why}"
                );
                for req in batch {
                    Box::pin(run_batch(core, vec![req])).await;
                }
                return;
            }
            Err(e) => {
                let (why, ambiguous) = match e {
                    BatchError::Retry(w) | BatchError::Refused(w) | BatchError::Fatal(w) => {
                        (w, false)
                    }
                    BatchError::Ambiguous(w) => (w, true),
                };
                core.metrics
                    .transactions_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(ops = batch.len(), ambiguous, "write batch failed: {why}");
                if ambiguous {
                    // The database is typically unreachable right now: re-reading the keys
                    // waits for it in a task of its own, so that the callers (who cannot
                    // know the outcome either way) and every write queued behind them get
                    // their errors at once instead of when the database is back.
                    core.metrics
                        .commits_ambiguous
                        .fetch_add(1, Ordering::Relaxed);
                    let keys = keys_of(&batch);
                    tokio::spawn(resync(core.clone(), keys));
                }
                for req in batch {
                    let _ = req.respond.send(Err(StoreError::Database(why.clone())));
                }
                return;
            }
        }
    }
}

/// The keys a batch touched, per cache, with the version memory held for each (absent keys
/// have none): what [`resync`] re-reads.
type BatchKeys = Vec<(Arc<CacheInner>, BTreeMap<Bytes, Option<i64>>)>;

fn keys_of(batch: &[Request]) -> BatchKeys {
    let mut per_cache: BatchKeys = Vec::new();
    for req in batch {
        if let Op::Key(c, op, _) = &req.op {
            let i = match per_cache.iter().position(|(x, _)| Arc::ptr_eq(x, c)) {
                Some(i) => i,
                None => {
                    per_cache.push((c.clone(), BTreeMap::new()));
                    per_cache.len() - 1
                }
            };
            for k in op.keys() {
                let held = c.map.get(&k[..]).map(|e| e.version);
                per_cache[i].1.entry(k.clone()).or_insert(held);
            }
        }
    }
    per_cache
}

/// After a COMMIT whose outcome is unknown, makes memory equal to SQL again for every key the
/// batch touched, retrying until the database answers (it was just unreachable) or the store
/// shuts down. Runs beside the writer: a write of one of these keys meanwhile reads its row
/// in its own transaction, and memory only ever moves to newer versions, so whichever of the
/// two installs last, memory ends at SQL's row.
async fn resync(core: Arc<Core>, per_cache: BatchKeys) {
    for attempt in 0u64.. {
        let res = async {
            let mut tx = core.backend.begin().await?;
            let mut found = Vec::new();
            for (cache, held) in &per_cache {
                let keys: Vec<Bytes> = held.keys().cloned().collect();
                let metas: HashMap<Bytes, RowMeta> = tx
                    .fetch_meta(&cache.def.name, &keys)
                    .await?
                    .into_iter()
                    .collect();
                let values: HashMap<Bytes, Bytes> = tx
                    .fetch_values(&cache.def.name, &keys)
                    .await?
                    .into_iter()
                    .collect();
                for k in keys {
                    let row = match (metas.get(&k), values.get(&k)) {
                        (Some(m), Some(v)) => Some(m.with_value(v.clone())),
                        _ => None,
                    };
                    found.push((cache, held[&k], k, row));
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(found)
        }
        .await;
        match res {
            Ok(found) => {
                for (cache, held, k, row) in found {
                    match (row, held) {
                        (Some(r), _) => {
                            cache.install(&k, &r);
                        }
                        (None, Some(v)) => {
                            // Gone from SQL: drop the entry memory held when the batch
                            // failed, never one a later write installed.
                            cache.remove_upto(&k, v, true);
                        }
                        (None, None) => {}
                    }
                }
                core.metrics.resyncs_done.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(sqlx::Error::PoolClosed) => {
                tracing::warn!(
                    "store closed before the keys of a write batch whose COMMIT outcome is \
                     unknown were re-read; the next start loads them from SQL"
                );
                return;
            }
            Err(e) => {
                if attempt < 10 || attempt % 60 == 0 {
                    tracing::warn!(attempt, "resync after ambiguous commit failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
            }
        }
    }
}

/// What the transaction found and left for one key.
struct Slot {
    /// Whether SQL has a row (possibly expired) for the key right now, inside the transaction.
    db_exists: bool,
    /// The physical row as of the ops evaluated so far (expired rows included).
    cur: Option<Row>,
    changed: bool,
    /// Highest version the key had in this transaction (read or written): a removal drops
    /// memory entries up to it.
    top_version: i64,
    /// Version memory held before the transaction read the key.
    mem_before: Option<i64>,
}

struct Done {
    caches: Vec<Arc<CacheInner>>,
    slots: HashMap<(usize, Bytes), Slot>,
    replies: Vec<Result<Reply, StoreError>>,
    /// Events to publish after memory is updated (SQLite; on PostgreSQL the follower does).
    events: Vec<Arc<ChangeEvent>>,
    /// The batch's change seqs, ascending.
    seqs: Vec<i64>,
}

/// Runs one attempt of a batch in one transaction. Memory is not touched here: if anything
/// fails, dropping the transaction rolls it back and memory still equals SQL.
async fn execute(core: &Core, batch: &[Request]) -> Result<Done, BatchError> {
    let mut caches: Vec<Arc<CacheInner>> = Vec::new();
    let mut cache_of: Vec<Option<usize>> = Vec::with_capacity(batch.len());
    for req in batch {
        cache_of.push(match &req.op {
            Op::Key(c, _, _) => Some(match caches.iter().position(|x| Arc::ptr_eq(x, c)) {
                Some(i) => i,
                None => {
                    caches.push(c.clone());
                    caches.len() - 1
                }
            }),
            _ => None,
        });
    }
    // Nothing was sent in this transaction if BEGIN fails (typically a pooled connection that
    // died), so running the batch again is always safe.
    let mut tx = core
        .backend
        .begin_batch()
        .await
        .map_err(|e| BatchError::Retry(e.to_string()))?;
    // Lock in one global order (cache rows by name; then per cache, on PostgreSQL, the keys'
    // advisory locks by lock id and the entry rows by key) so that two processes writing the
    // same keys wait for each other instead of deadlocking. Evaluation order stays FIFO. The
    // shared lock on the cache row orders this batch against a CLEAR or removal of the cache
    // (they take it exclusively).
    let mut order: Vec<usize> = (0..caches.len()).collect();
    order.sort_by(|a, b| caches[*a].def.name.cmp(&caches[*b].def.name));
    let mut keys: Vec<BTreeSet<Bytes>> = vec![BTreeSet::new(); caches.len()];
    let mut versions_needed = 0usize;
    for (req, ci) in batch.iter().zip(&cache_of) {
        if let (Op::Key(c, op, _), Some(ci)) = (&req.op, ci) {
            if !c.removed.load(Ordering::Acquire) {
                keys[*ci].extend(op.keys().cloned());
                versions_needed += op.versions_needed();
            }
        }
    }
    let pg = !core.backend.is_sqlite();
    // SQLite: BEGIN IMMEDIATE holds the database's one write lock, which covers everything.
    let mut present: Vec<String> = Vec::new();
    if !pg {
        let names: Vec<&str> = order.iter().map(|i| caches[*i].def.name.as_str()).collect();
        present = tx.lock_caches(&names, false).await?;
    }
    let mut versions: Option<Vec<i64>> = None;
    let mut slots: HashMap<(usize, Bytes), Slot> = HashMap::new();
    let mut floor = 0i64;
    let last = order.last().copied();
    for &ci in &order {
        let cache = &caches[ci];
        let ks: Vec<Bytes> = keys[ci].iter().cloned().collect();
        if ks.is_empty() {
            // Only when the cache handle was removed: its ops fail without SQL.
            continue;
        }
        // What memory held before the read: such a version was committed before it, so if the
        // read finds no row, that version is gone and may be dropped from memory.
        let before: Vec<Option<i64>> = ks
            .iter()
            .map(|k| cache.map.get(&k[..]).map(|e| e.version))
            .collect();
        let metas = if !pg {
            if !present.contains(&cache.def.name) {
                continue;
            }
            tx.fetch_meta(&cache.def.name, &ks).await?
        } else if ks.len() <= db::PG_CHUNK {
            // Every writer of a key holds its advisory lock, also one that finds no row (a
            // new key): that is what keeps two replicas creating the same key from both
            // deciding on "absent", and versions and change seqs of a key in commit order.
            let mut locks: Vec<(i32, i32)> = ks
                .iter()
                .map(|k| db::key_lock(&cache.def.name, k))
                .collect();
            locks.sort_unstable();
            locks.dedup();
            let want = if Some(ci) == last { versions_needed } else { 0 };
            match tx.lock_read_pg(&cache.def.name, &ks, &locks, want).await? {
                None => continue,
                Some(read) => {
                    present.push(cache.def.name.clone());
                    if want > 0 {
                        versions = Some(read.versions);
                    }
                    read.rows
                }
            }
        } else {
            // More keys than one statement takes (a huge put_all): hold the cache row
            // exclusively instead of one advisory lock per key (their number is bounded by
            // PostgreSQL's shared lock table); it excludes every other batch of the cache.
            if tx
                .lock_caches(&[cache.def.name.as_str()], true)
                .await?
                .is_empty()
            {
                continue;
            }
            present.push(cache.def.name.clone());
            tx.fetch_meta(&cache.def.name, &ks).await?
        };
        let mut rows: HashMap<Bytes, Row> = HashMap::with_capacity(metas.len());
        let mut unresolved: HashMap<Bytes, RowMeta> = HashMap::new();
        for (k, m) in metas {
            floor = floor.max(m.version);
            // Versions are unique database-wide, so the same version means the same value:
            // take it from memory instead of reading a possibly large value back from SQL.
            // Memory may also hold a more recent max-idle touch not yet flushed to SQL.
            let mem = cache
                .map
                .get(&k[..])
                .filter(|e| e.version == m.version)
                .map(|e| (e.value.clone(), e.last_used_ms.load(Ordering::Relaxed)));
            match mem {
                Some((v, used)) => {
                    let mut row = m.with_value(v);
                    row.last_used_ms = row.last_used_ms.max(used);
                    rows.insert(k, row);
                }
                None => {
                    unresolved.insert(k, m);
                }
            }
        }
        if !unresolved.is_empty() {
            let need: Vec<Bytes> = unresolved.keys().cloned().collect();
            for (k, v) in tx.fetch_values(&cache.def.name, &need).await? {
                if let Some(m) = unresolved.remove(&k) {
                    rows.insert(k, m.with_value(v));
                }
            }
            if !unresolved.is_empty() {
                // Only possible if a row vanished between two statements of this transaction,
                // i.e. it was not locked as we expected: start over.
                return Err(BatchError::Retry("row disappeared during batch".into()));
            }
        }
        for (k, mem_before) in ks.into_iter().zip(before) {
            let cur = rows.remove(&k);
            slots.insert(
                (ci, k),
                Slot {
                    db_exists: cur.is_some(),
                    top_version: cur.as_ref().map_or(0, |r| r.version),
                    cur,
                    changed: false,
                    mem_before,
                },
            );
        }
    }
    // A cache another replica removed: its ops fail like ops on a removed cache handle.
    let gone: Vec<bool> = caches
        .iter()
        .map(|c| c.removed.load(Ordering::Acquire) || !present.contains(&c.def.name))
        .collect();
    // Versions taken with the reads are used unless a stored version is not below them (only
    // if the sequence was set back): then the allocation below retries past it.
    let versions = match versions {
        Some(v) if v.len() == versions_needed && v.first().is_none_or(|f| *f > floor) => v,
        _ => tx.alloc_versions(versions_needed, floor).await?,
    };
    // `now` is taken after the locks are held, so expiry is judged at the moment of decision.
    let mut ev = Eval {
        now: now_ms(),
        versions: versions.into_iter(),
        slots,
        changes: Vec::new(),
        events: Vec::new(),
        notify: true,
    };
    let mut replies = Vec::with_capacity(batch.len());
    for (req, ci) in batch.iter().zip(&cache_of) {
        let reply = match (&req.op, ci) {
            (Op::Key(c, _, _), Some(ci)) if gone[*ci] => {
                Err(StoreError::CacheNotFound(c.def.name.clone()))
            }
            (Op::Key(c, op, notify), Some(ci)) => Ok(ev.eval(*ci, &c.def.name, op, *notify)?),
            _ => Err(StoreError::Database(
                "internal error: non-key op in batch".into(),
            )),
        };
        replies.push(reply);
    }

    let mut writes = Vec::new();
    for (ci, cache) in caches.iter().enumerate() {
        let mut inserts: Vec<(&Bytes, &Row)> = Vec::new();
        let mut updates: Vec<(&Bytes, &Row)> = Vec::new();
        let mut deletes: Vec<Bytes> = Vec::new();
        for ((c, k), s) in ev.slots.iter().filter(|((c, _), s)| *c == ci && s.changed) {
            debug_assert_eq!(*c, ci);
            match (&s.cur, s.db_exists) {
                (Some(r), true) => updates.push((k, r)),
                (Some(r), false) => inserts.push((k, r)),
                (None, true) => deletes.push(k.clone()),
                (None, false) => {}
            }
        }
        if inserts.is_empty() && updates.is_empty() && deletes.is_empty() {
            continue;
        }
        // Key order, like the locks taken above: two processes inserting the same new keys
        // then wait for each other instead of deadlocking.
        inserts.sort_unstable_by(|a, b| a.0.cmp(b.0));
        updates.sort_unstable_by(|a, b| a.0.cmp(b.0));
        writes.push((cache.def.name.as_str(), deletes, updates, inserts));
    }
    let now = ev.now;
    // Another process inserted one of our new keys after we saw it absent: our decision for
    // it is void; re-running sees (and locks) their row.
    let raced = || BatchError::Retry("concurrent insert of the same key".into());
    // PostgreSQL: keys read as absent, per cache, to be checked again on a fresh snapshot
    // (see `Tx::lock_read_pg`).
    let mut absent: Vec<Vec<Bytes>> = vec![Vec::new(); caches.len()];
    if pg {
        for ((ci, k), s) in &ev.slots {
            if !s.db_exists {
                absent[*ci].push(k.clone());
            }
        }
    }
    let mut combined = None;
    if let [(name, deletes, updates, inserts)] = &writes[..] {
        let ci = caches
            .iter()
            .position(|c| c.def.name == *name)
            .unwrap_or_default();
        // The other caches' keys (if any) are checked below.
        let here = std::mem::take(&mut absent[ci]);
        combined = tx
            .write_one_cache_pg(
                name,
                deletes,
                updates,
                inserts,
                &ev.changes,
                &here,
                &core.feed.origin,
                now,
            )
            .await?;
        match &combined {
            Some(w) if w.inserted != inserts.len() as u64 || w.absent_found > 0 => {
                return Err(raced());
            }
            Some(_) => {}
            None => absent[ci] = here,
        }
    }
    for (ci, keys) in absent.iter().enumerate() {
        if !keys.is_empty() && tx.count_rows_pg(&caches[ci].def.name, keys).await? > 0 {
            return Err(raced());
        }
    }
    let seqs = match combined {
        Some(w) => w.seqs,
        None => {
            for (name, deletes, updates, inserts) in &writes {
                tx.delete_rows(name, deletes).await?;
                tx.update_rows(name, updates).await?;
                let inserted = tx.insert_rows(name, inserts).await?;
                if inserted != inserts.len() as u64 {
                    return Err(raced());
                }
            }
            tx.insert_changes(&ev.changes, &core.feed.origin, now)
                .await?
        }
    };
    let events = core.stage_events(&seqs, ev.events);
    match core.commit_fault.swap(0, Ordering::AcqRel) {
        0 => {}
        fault => {
            // Test hook (`Store::fail_next_commit`): what a connection broken during COMMIT
            // looks like from here, with either outcome.
            if fault == COMMIT_FAULT_AFTER {
                tx.commit().await?;
            }
            return Err(BatchError::Ambiguous(
                "connection lost during COMMIT (test hook)".to_string(),
            ));
        }
    }
    tx.commit()
        .await
        .map_err(|e| BatchError::Ambiguous(e.to_string()))?;
    Ok(Done {
        caches,
        slots: ev.slots,
        replies,
        events,
        seqs,
    })
}

/// Decides ops against the rows read in the transaction plus the effects of earlier ops of the
/// same batch.
struct Eval {
    now: i64,
    versions: std::vec::IntoIter<i64>,
    slots: HashMap<(usize, Bytes), Slot>,
    changes: Vec<Change>,
    /// Aligned with `changes`.
    events: Vec<ChangeEvent>,
    /// Whether the op being evaluated raises client-listener events (see `Op::Key`).
    notify: bool,
}

impl Eval {
    fn slot(&mut self, ci: usize, key: &Bytes) -> Result<&mut Slot, BatchError> {
        self.slots
            .get_mut(&(ci, key.clone()))
            .ok_or_else(|| BatchError::Fatal("internal error: key not prefetched".into()))
    }

    /// The entry as clients see it: absent if expired.
    fn live(&mut self, ci: usize, key: &Bytes) -> Result<Option<EntrySnapshot>, BatchError> {
        let now = self.now;
        Ok(self
            .slot(ci, key)?
            .cur
            .as_ref()
            .filter(|r| !r.is_expired(now))
            .map(Row::snapshot))
    }

    fn store(
        &mut self,
        ci: usize,
        cache: &str,
        key: &Bytes,
        value: &Bytes,
        lifespan: i64,
        max_idle: i64,
    ) -> Result<(), BatchError> {
        let notify = self.notify;
        let version = self
            .versions
            .next()
            .ok_or_else(|| BatchError::Fatal("internal error: versions exhausted".into()))?;
        let now = self.now;
        let prev = self.live(ci, key)?;
        // One copy, shared by memory and events: the caller's buffer usually belongs to a
        // connection's read buffer, which must not be pinned by the entry.
        let value = Bytes::copy_from_slice(value);
        let slot = self.slot(ci, key)?;
        slot.cur = Some(Row {
            value: value.clone(),
            version,
            created_ms: now,
            lifespan_ms: lifespan,
            last_used_ms: now,
            max_idle_ms: max_idle,
        });
        slot.changed = true;
        slot.top_version = slot.top_version.max(version);
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Created
        };
        self.changes.push(Change {
            cache: cache.to_string(),
            key: Some(key.clone()),
            kind: if prev.is_some() {
                "modified"
            } else {
                "created"
            },
            version: Some(version),
            prev_version: prev.as_ref().map(|p| p.version),
            value: None,
            notify,
        });
        self.events.push(ChangeEvent {
            cache: cache.to_string(),
            key: key.clone(),
            kind,
            version,
            value: Some(value),
            previous: prev.map(|p| p.value),
            listener_notification: notify,
        });
        Ok(())
    }

    /// Only called on a live entry.
    fn delete(&mut self, ci: usize, cache: &str, key: &Bytes) -> Result<(), BatchError> {
        let notify = self.notify;
        let slot = self.slot(ci, key)?;
        let prev = slot.cur.take();
        slot.changed = true;
        let version = prev.as_ref().map(|r| r.version);
        self.changes.push(Change {
            cache: cache.to_string(),
            key: Some(key.clone()),
            kind: "removed",
            version,
            prev_version: version,
            value: None,
            notify,
        });
        let previous = prev.map(|r| r.value);
        self.events.push(ChangeEvent {
            cache: cache.to_string(),
            key: key.clone(),
            kind: ChangeKind::Removed,
            version: version.unwrap_or(0),
            value: previous.clone(),
            previous,
            listener_notification: notify,
        });
        Ok(())
    }

    fn eval(
        &mut self,
        ci: usize,
        cache: &str,
        op: &KeyOp,
        notify: bool,
    ) -> Result<Reply, BatchError> {
        self.notify = notify;
        Ok(match op {
            KeyOp::Put {
                key,
                value,
                lifespan,
                max_idle,
            } => {
                let prev = self.live(ci, key)?;
                self.store(ci, cache, key, value, *lifespan, *max_idle)?;
                Reply::Put(prev)
            }
            KeyOp::PutIfAbsent {
                key,
                value,
                lifespan,
                max_idle,
            } => match self.live(ci, key)? {
                Some(cur) => Reply::PutIfAbsent(PutIfAbsentOutcome::Present(cur)),
                None => {
                    self.store(ci, cache, key, value, *lifespan, *max_idle)?;
                    Reply::PutIfAbsent(PutIfAbsentOutcome::Stored)
                }
            },
            KeyOp::Replace {
                key,
                value,
                lifespan,
                max_idle,
            } => match self.live(ci, key)? {
                None => Reply::Replace(ReplaceOutcome::Missing),
                Some(prev) => {
                    self.store(ci, cache, key, value, *lifespan, *max_idle)?;
                    Reply::Replace(ReplaceOutcome::Replaced(prev))
                }
            },
            KeyOp::ReplaceIfVersion {
                key,
                version,
                value,
                lifespan,
                max_idle,
            } => match self.live(ci, key)? {
                None => Reply::Versioned(VersionedOutcome::Missing),
                Some(cur) if cur.version != *version => {
                    Reply::Versioned(VersionedOutcome::Mismatch(cur))
                }
                Some(prev) => {
                    self.store(ci, cache, key, value, *lifespan, *max_idle)?;
                    Reply::Versioned(VersionedOutcome::Done(prev))
                }
            },
            KeyOp::Remove { key } => match self.live(ci, key)? {
                None => Reply::Remove(RemoveOutcome::Missing),
                Some(prev) => {
                    self.delete(ci, cache, key)?;
                    Reply::Remove(RemoveOutcome::Removed(prev))
                }
            },
            KeyOp::RemoveIfVersion { key, version } => match self.live(ci, key)? {
                None => Reply::Versioned(VersionedOutcome::Missing),
                Some(cur) if cur.version != *version => {
                    Reply::Versioned(VersionedOutcome::Mismatch(cur))
                }
                Some(prev) => {
                    self.delete(ci, cache, key)?;
                    Reply::Versioned(VersionedOutcome::Done(prev))
                }
            },
            KeyOp::PutAll {
                entries,
                lifespan,
                max_idle,
            } => {
                for (key, value) in entries {
                    self.store(ci, cache, key, value, *lifespan, *max_idle)?;
                }
                Reply::Unit
            }
        })
    }
}

/// Mirrors a committed batch into memory, then answers. Every key the batch read is set to what
/// SQL holds now, also keys no op changed: if another process had changed one, memory catches
/// up here (this is the "refresh after a failed conditional write" that lets clients' read /
/// replace-with-version loops converge). Memory only moves forward (see `CacheInner::install`),
/// so the feed applying a later change first cannot be undone here.
fn apply(core: &Core, batch: Vec<Request>, done: Done) {
    for ((ci, key), slot) in done.slots {
        let cache = &done.caches[ci];
        match slot.cur {
            Some(row) => {
                cache.install(&key, &row);
            }
            None if slot.changed || slot.db_exists => {
                cache.remove_upto(&key, slot.top_version, true);
            }
            None => {
                // Absent in SQL and untouched: drop what memory held before the read (it was
                // removed by another replica and the feed has not told us yet).
                if let Some(v) = slot.mem_before {
                    cache.remove_upto(&key, v, false);
                }
            }
        }
    }
    core.feed.local_committed(&done.seqs);
    for ev in done.events {
        core.feed.publish(ev);
    }
    for (req, reply) in batch.into_iter().zip(done.replies) {
        if let (Op::Key(cache, op, _), Ok(reply)) = (&req.op, &reply) {
            count(cache, op, reply);
        }
        // The caller may be gone (client disconnected); the op is committed regardless.
        let _ = req.respond.send(reply);
    }
}

fn count(cache: &CacheInner, op: &KeyOp, reply: &Reply) {
    let c = &cache.counters;
    let add = |a: &std::sync::atomic::AtomicU64, n: u64| {
        a.fetch_add(n, Ordering::Relaxed);
    };
    match (op, reply) {
        (KeyOp::Put { .. }, _)
        | (_, Reply::PutIfAbsent(PutIfAbsentOutcome::Stored))
        | (_, Reply::Replace(ReplaceOutcome::Replaced(_)))
        | (KeyOp::ReplaceIfVersion { .. }, Reply::Versioned(VersionedOutcome::Done(_))) => {
            add(&c.stores, 1)
        }
        (KeyOp::PutAll { entries, .. }, _) => add(&c.stores, entries.len() as u64),
        (_, Reply::Remove(RemoveOutcome::Removed(_)))
        | (KeyOp::RemoveIfVersion { .. }, Reply::Versioned(VersionedOutcome::Done(_))) => {
            add(&c.remove_hits, 1)
        }
        (_, Reply::Remove(RemoveOutcome::Missing))
        | (KeyOp::RemoveIfVersion { .. }, Reply::Versioned(VersionedOutcome::Missing)) => {
            add(&c.remove_misses, 1)
        }
        _ => {}
    }
}

async fn run_solo(core: &Core, req: Request) {
    let result = match &req.op {
        Op::Clear(cache) => clear(core, cache).await,
        Op::CreateCache(def) => create_cache(core, def).await,
        Op::AdoptCache(name) => adopt_cache(core, name).await,
        Op::RemoveCache(name) => remove_cache(core, name).await,
        Op::Maintenance => maintenance(core).await,
        Op::Shutdown | Op::Fence => Ok(Reply::Unit),
        Op::Key(..) => Err(StoreError::Database(
            "internal error: key op run alone".into(),
        )),
    };
    match &result {
        Ok(_) if !matches!(req.op, Op::Shutdown | Op::Fence) => {
            core.metrics
                .transactions_committed
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(StoreError::Database(why)) => {
            core.metrics
                .transactions_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("store operation failed: {why}");
        }
        _ => {}
    }
    let _ = req.respond.send(result);
}

async fn clear(core: &Core, cache: &Arc<CacheInner>) -> Result<Reply, StoreError> {
    if cache.removed.load(Ordering::Acquire) {
        return Err(StoreError::CacheNotFound(cache.def.name.clone()));
    }
    let mut tx = core.backend.begin().await?;
    // Exclusive: waits for batches writing this cache and keeps new ones out until COMMIT, so
    // every row written before has a lower version than the CLEAR's and every later one a
    // higher version (and a higher change seq).
    let present = tx.lock_caches(&[cache.def.name.as_str()], true).await?;
    if present.is_empty() {
        return Err(StoreError::CacheNotFound(cache.def.name.clone()));
    }
    let version = tx.alloc_versions(1, 0).await?.first().copied().unwrap_or(0);
    tx.clear_cache(&cache.def.name).await?;
    let seqs = tx
        .insert_changes(
            &[Change {
                cache: cache.def.name.clone(),
                key: None,
                kind: "clear",
                version: Some(version),
                prev_version: None,
                value: None,
                notify: true,
            }],
            &core.feed.origin,
            now_ms(),
        )
        .await?;
    tx.commit().await?;
    cache.clear_below(version);
    core.feed.local_committed(&seqs);
    core.feed.local_cleared(&cache.def.name, version);
    Ok(Reply::Unit)
}

async fn create_cache(core: &Core, def: &CacheDef) -> Result<Reply, StoreError> {
    if let Some(c) = core.cache(&def.name) {
        return Ok(Reply::Cache(c));
    }
    let mut tx = core.backend.begin().await?;
    let inserted = tx.insert_cache(def, now_ms()).await?;
    // If another process created it first, its definition (and rows) are the truth.
    let mut seqs = Vec::new();
    let mut created_version = None;
    let (actual, rows) = if inserted {
        // Other replicas register the cache when its first change row reaches them; this
        // one (a CLEAR of the empty cache, ordered before any write to it since the new cache
        // row stays locked until COMMIT) makes that happen even before anything is written.
        let version = tx.alloc_versions(1, 0).await?.first().copied().unwrap_or(0);
        created_version = Some(version);
        seqs = tx
            .insert_changes(
                &[Change {
                    cache: def.name.clone(),
                    key: None,
                    kind: "clear",
                    version: Some(version),
                    prev_version: None,
                    value: None,
                    notify: true,
                }],
                &core.feed.origin,
                now_ms(),
            )
            .await?;
        (def.clone(), Vec::new())
    } else {
        let actual = tx
            .select_cache(&def.name)
            .await?
            .unwrap_or_else(|| def.clone());
        let rows = tx.cache_rows(&def.name).await?;
        (actual, rows)
    };
    tx.commit().await?;
    let cache = Cache::new(
        actual,
        core.writer_tx.clone(),
        core.max_value_bytes,
        core.backend.clone(),
    );
    let now = now_ms();
    for (k, row) in rows {
        if !row.is_expired(now) {
            cache.inner.install(&k, &row);
        }
    }
    core.registry_write()
        .insert(def.name.clone(), cache.clone());
    core.feed.local_committed(&seqs);
    if let Some(version) = created_version {
        core.feed.local_cleared(&def.name, version);
    }
    Ok(Reply::Cache(cache))
}

async fn adopt_cache(core: &Core, name: &str) -> Result<Reply, StoreError> {
    if let Some(c) = core.cache(name) {
        return Ok(Reply::Adopted(Some(c)));
    }
    let mut tx = core.backend.begin().await?;
    let Some(def) = tx.select_cache(name).await? else {
        tx.commit().await?;
        return Ok(Reply::Adopted(None));
    };
    let rows = tx.cache_rows(name).await?;
    tx.commit().await?;
    let cache = Cache::new(
        def,
        core.writer_tx.clone(),
        core.max_value_bytes,
        core.backend.clone(),
    );
    let now = now_ms();
    for (k, row) in rows {
        if !row.is_expired(now) {
            cache.inner.install(&k, &row);
        }
    }
    core.registry_write()
        .insert(name.to_string(), cache.clone());
    tracing::info!(cache = %name, "cache created by another replica");
    Ok(Reply::Adopted(Some(cache)))
}

async fn remove_cache(core: &Core, name: &str) -> Result<Reply, StoreError> {
    let mut tx = core.backend.begin().await?;
    // Exclusive, as for CLEAR: no batch of this cache is in flight when the row goes.
    let present = tx.lock_caches(&[name], true).await?;
    let mut seqs = Vec::new();
    let mut removed_version = None;
    if !present.is_empty() {
        let version = tx.alloc_versions(1, 0).await?.first().copied().unwrap_or(0);
        removed_version = Some(version);
        // Followers drop the cache's entries on this and, finding the cache row gone, the
        // cache itself.
        seqs = tx
            .insert_changes(
                &[Change {
                    cache: name.to_string(),
                    key: None,
                    kind: "clear",
                    version: Some(version),
                    prev_version: None,
                    value: None,
                    notify: true,
                }],
                &core.feed.origin,
                now_ms(),
            )
            .await?;
    }
    let deleted = tx.delete_cache(name).await?;
    tx.commit().await?;
    core.feed.local_committed(&seqs);
    let known = core.registry_write().remove(name);
    if let Some(c) = &known {
        c.inner.removed.store(true, Ordering::Release);
        c.inner.map.clear();
        c.inner.dirty.clear();
    }
    if let Some(version) = removed_version {
        core.feed.local_cleared(name, version);
    }
    Ok(Reply::Removed(deleted || known.is_some()))
}

/// Flushes max-idle touches (every replica flushes its own) and, on the replica holding the
/// expiration lease (always on SQLite), deletes expired rows (recording `expired` changes with
/// their values) and prunes the change log, in one transaction.
async fn maintenance(core: &Core) -> Result<Reply, StoreError> {
    let sweeper = match &core.backend {
        db::Backend::Sqlite(_) => true,
        db::Backend::Postgres(..) => {
            let ttl = i64::try_from(core.expiration_lease.as_millis()).unwrap_or(i64::MAX);
            match core
                .backend
                .acquire_lease(db::EXPIRATION_LEASE, &core.feed.origin, ttl)
                .await
            {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!("expiration lease: {e}");
                    false
                }
            }
        }
    };
    let was = core.lease_held.swap(sweeper, Ordering::AcqRel);
    if was != sweeper && !core.backend.is_sqlite() {
        tracing::info!(held = sweeper, "expiration lease changed hands");
    }
    let caches: Vec<Cache> = core.registry_read().values().cloned().collect();
    let mut touches: Vec<(Cache, Vec<Touch>)> = Vec::new();
    for cache in caches {
        let inner = &cache.inner;
        let keys: Vec<Bytes> = inner.dirty.iter().map(|k| k.clone()).collect();
        let mut list = Vec::with_capacity(keys.len());
        for k in keys {
            // Remove before reading: a touch racing with us re-marks the key and is flushed
            // next time instead of being lost.
            inner.dirty.remove(&k);
            if let Some(e) = inner.map.get(&k) {
                let last_used = e.last_used_ms.load(Ordering::Relaxed);
                list.push(Touch {
                    version: e.version,
                    last_used_ms: last_used,
                    expires_ms: crate::entry::expires_at(
                        e.created_ms,
                        e.lifespan_ms,
                        last_used,
                        e.max_idle_ms,
                    ),
                    key: k.clone(),
                });
            }
        }
        if !list.is_empty() {
            // Key order for row locks, as everywhere else.
            list.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            touches.push((cache, list));
        }
    }

    let result = async {
        let mut tx = core.backend.begin().await?;
        for (cache, list) in &touches {
            tx.touch(cache.name(), list).await?;
        }
        let now = now_ms();
        if !sweeper {
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new(), Vec::new()));
        }
        let swept = tx.sweep(now, SWEEP_LIMIT as i64).await?;
        let changes: Vec<Change> = swept
            .iter()
            .map(|s| Change {
                cache: s.cache.clone(),
                key: Some(s.key.clone()),
                kind: "expired",
                version: Some(s.version),
                prev_version: Some(s.version),
                value: Some(s.value.clone()),
                notify: true,
            })
            .collect();
        let seqs = tx.insert_changes(&changes, &core.feed.origin, now).await?;
        let events = core.stage_events(
            &seqs,
            swept
                .iter()
                .map(|s| ChangeEvent {
                    cache: s.cache.clone(),
                    key: s.key.clone(),
                    kind: ChangeKind::Expired,
                    version: s.version,
                    value: Some(s.value.clone()),
                    previous: None,
                    listener_notification: true,
                })
                .collect(),
        );
        let retention = i64::try_from(core.changelog_retention.as_millis()).unwrap_or(i64::MAX);
        tx.prune_changes(now.saturating_sub(retention)).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((swept, events, seqs))
    }
    .await;

    match result {
        Ok((swept, events, seqs)) => {
            let flushed: usize = touches.iter().map(|(_, l)| l.len()).sum();
            core.metrics
                .touches_flushed
                .fetch_add(flushed as u64, Ordering::Relaxed);
            core.metrics
                .entries_expired
                .fetch_add(swept.len() as u64, Ordering::Relaxed);
            let n = swept.len();
            for s in swept {
                if let Some(c) = core.cache(&s.cache) {
                    c.inner.remove_upto(&s.key, s.version, true);
                }
            }
            core.feed.local_committed(&seqs);
            for ev in events {
                core.feed.publish(ev);
            }
            Ok(Reply::Maintenance { swept: n })
        }
        Err(e) => {
            // Keep the touches for the next attempt.
            for (cache, list) in touches {
                for t in list {
                    cache.inner.dirty.insert(t.key);
                }
            }
            Err(e.into())
        }
    }
}
