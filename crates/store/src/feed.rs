//! The change feed: committed changes of every replica, applied to memory and published to
//! subscribers (client listeners, the query index, the schema registry) exactly once each, per
//! key in commit order. Whole-cache changes (CLEAR, cache creation and removal, a reload after
//! the feed fell behind) are published as one `Cleared` / `Reloaded` event each, in the same
//! order, after memory reflects them.
//!
//! SQLite (one process): the writer publishes right after each commit, in commit order.
//!
//! PostgreSQL: every replica, the one that wrote included, learns changes from `ferrod_changes`.
//! See [`follow`] for how sequence gaps, lost notifications and pruning are handled.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};

use crate::cache::{Cache, CacheInner};
use crate::db::ChangeRow;
use crate::entry::Row;
use crate::store::Core;
use crate::writer::{Op, Reply};

/// What happened to an entry, or to a whole cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Modified,
    Removed,
    Expired,
    /// The whole cache changed at once, with no per-entry changes: it was cleared, created, or
    /// removed (then the store no longer has it). Published after memory reflects it. Client
    /// listeners are never told (Infinispan raises no entry events on CLEAR); consumers that
    /// mirror a cache's content re-read it from memory.
    Cleared,
    /// This replica's change feed fell behind the pruned change log and the cache was reloaded
    /// from SQL: the changes in between have no events of their own. Published after the
    /// reload; consumers that mirror a cache's content re-read it from memory.
    Reloaded,
}

impl ChangeKind {
    /// Whether this is a change of the whole cache (no key) rather than of one entry.
    pub fn is_whole_cache(self) -> bool {
        matches!(self, ChangeKind::Cleared | ChangeKind::Reloaded)
    }
}

/// One committed change of one entry (or of a whole cache, see [`ChangeKind::Cleared`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub cache: String,
    /// Empty for whole-cache changes.
    pub key: Bytes,
    pub kind: ChangeKind,
    /// The new version for Created/Modified; the removed/expired entry's version otherwise (0
    /// if unknown); for Cleared the CLEAR's version (entries older than it are gone), 0 for
    /// Reloaded.
    pub version: i64,
    /// Created/Modified: the new value (None if a replica learned of this change only after
    /// the entry had changed again); Expired: the expired value; Removed: the previous value
    /// if known.
    pub value: Option<Bytes>,
    /// Modified/Removed: the previous value when known.
    pub previous: Option<Bytes>,
    /// Whether client listeners are told: false for writes made with listener notification
    /// off (HotRod's SKIP_LISTENER_NOTIFICATION) and for whole-cache changes. Such changes are
    /// still published, for consumers that mirror the content (query index, schema registry).
    pub listener_notification: bool,
}

impl ChangeEvent {
    /// A whole-cache change ([`ChangeKind::Cleared`] or [`ChangeKind::Reloaded`]).
    pub fn whole_cache(cache: &str, kind: ChangeKind, version: i64) -> ChangeEvent {
        debug_assert!(kind.is_whole_cache());
        ChangeEvent {
            cache: cache.to_string(),
            key: Bytes::new(),
            kind,
            version,
            value: None,
            previous: None,
            listener_notification: false,
        }
    }
}

/// Feed state shared by the store handle, the writer and the follower.
pub(crate) struct Feed {
    pub events: broadcast::Sender<Arc<ChangeEvent>>,
    /// This process's id in `ferrod_changes.origin`.
    pub origin: String,
    ready: AtomicBool,
    /// Last change-log seq applied with nothing missing below it.
    position: AtomicI64,
    /// When the follower last completed a poll (ms since `started`); PostgreSQL only.
    last_ok_ms: AtomicI64,
    started: Instant,
    /// Health: a follower that has not completed a poll for this long is not ready.
    stale_after: Duration,
    follows: bool,
    /// Highest seq this process committed, for the notifier.
    pub notify: watch::Sender<i64>,
    /// Test hook: the follower skips polls while set.
    pub paused: AtomicBool,
    /// Events of this process's own writes, registered by the writer before COMMIT under the
    /// seq of their change row (with whether that COMMIT has succeeded yet), taken by the
    /// follower when it reaches that row.
    pub pending: Mutex<HashMap<i64, (Arc<ChangeEvent>, bool)>>,
}

impl Feed {
    pub fn new(capacity: usize, follows: bool, stale_after: Duration) -> Feed {
        let (events, _) = broadcast::channel(capacity.max(16));
        Feed {
            events,
            origin: new_origin(),
            ready: AtomicBool::new(!follows),
            position: AtomicI64::new(0),
            last_ok_ms: AtomicI64::new(0),
            started: Instant::now(),
            stale_after,
            follows,
            notify: watch::channel(0).0,
            paused: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn publish(&self, ev: Arc<ChangeEvent>) {
        // Err only means nobody subscribes right now.
        let _ = self.events.send(ev);
    }

    pub fn has_subscribers(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// This process's writer cleared, created or removed `cache` (with the change row's
    /// `version`); memory reflects it. Without a follower (SQLite) the writer's commits are the
    /// feed, so it is published here; with one, the follower publishes it when it reaches the
    /// change row, in seq order with every other change.
    pub fn local_cleared(&self, cache: &str, version: i64) {
        if !self.follows {
            self.publish(Arc::new(ChangeEvent::whole_cache(
                cache,
                ChangeKind::Cleared,
                version,
            )));
        }
    }

    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        if !self.follows {
            return true;
        }
        let last = self.last_ok_ms.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as i64;
        now - last <= self.stale_after.as_millis() as i64
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn mark_ok(&self) {
        let now = self.started.elapsed().as_millis() as i64;
        self.last_ok_ms.store(now, Ordering::Release);
    }

    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    pub fn set_position(&self, seq: i64) {
        self.position.fetch_max(seq, Ordering::AcqRel);
    }

    /// Called by the writer after a COMMIT with the change seqs it wrote (ascending). Without a
    /// follower (SQLite) the writer's commits are the feed, so the last one is the position;
    /// with one, the registered events of these seqs are marked committed (see
    /// [`Feed::take_committed_run`]) and the notifier wakes every replica.
    pub fn local_committed(&self, seqs: &[i64]) {
        let Some(&last) = seqs.last() else {
            return;
        };
        if !self.follows {
            self.set_position(last);
            return;
        }
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for seq in seqs {
                if let Some((_, committed)) = p.get_mut(seq) {
                    *committed = true;
                }
            }
        }
        self.notify.send_if_modified(|cur| {
            let newer = last > *cur;
            if newer {
                *cur = last;
            }
            newer
        });
    }

    pub fn follows(&self) -> bool {
        self.follows
    }

    pub fn register_pending(&self, items: impl IntoIterator<Item = (i64, Arc<ChangeEvent>)>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.extend(items.into_iter().map(|(seq, ev)| (seq, (ev, false))));
    }

    pub fn take_pending(&self, seq: i64) -> Option<Arc<ChangeEvent>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq)
            .map(|(ev, _)| ev)
    }

    /// If every seq in `from..=to` is a registered change of this process whose COMMIT
    /// succeeded, takes their events (in seq order); otherwise takes nothing.
    fn take_committed_run(&self, from: i64, to: i64) -> Option<Vec<Arc<ChangeEvent>>> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if to < from || !(from..=to).all(|seq| p.get(&seq).is_some_and(|(_, c)| *c)) {
            return None;
        }
        Some(
            (from..=to)
                .filter_map(|seq| p.remove(&seq).map(|(ev, _)| ev))
                .collect(),
        )
    }

    /// Drops registrations of changes that will never be seen (their transaction did not
    /// commit after all): everything at or below the contiguous position that is still here.
    pub fn prune_pending(&self, upto: i64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !p.is_empty() {
            p.retain(|seq, _| *seq > upto);
        }
    }
}

/// A random-enough id for this process (no extra dependency): hash-seeded randomness from the
/// standard library, the pid and the start time.
fn new_origin() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(crate::now_ms());
    format!("{:016x}", h.finish())
}

/// The NOTIFY channel writers signal on.
pub(crate) const CHANNEL: &str = "ferrod_changes";
/// Change rows read per query.
const PAGE: i64 = 2000;
/// A jump in seqs bigger than this is not tracked seq by seq (it can only be a huge rolled-back
/// transaction or pruning, which `pruned_through` detects).
const MAX_TRACKED_GAP: i64 = 100_000;
/// Missing seqs re-queried per poll.
const MAX_GAP_QUERY: usize = 10_000;

/// Where a follower stands in the change log.
///
/// Sequence numbers are taken when a change row is inserted, not when its transaction commits,
/// so a lower seq can become visible after a higher one. The follower therefore keeps the
/// highest seq it has seen plus the seqs below it that were not visible yet (`missing`, with
/// when each gap was first noticed), re-queries those, and gives one up only once it is older
/// than `gap_bound`: by then the transaction that took it has certainly ended (write
/// transactions are bounded by `write_timeout`), so the seq was rolled back. The contiguous
/// position is just below the oldest missing seq.
///
/// Delivering a row from above a gap before the gap is filled cannot break per-key order:
/// changes of one key take their seq while holding the key's row lock (the cache row's lock for
/// CLEAR), so a row of the same key with a lower seq committed, and became visible, first.
pub(crate) struct Cursor {
    pub max_seen: i64,
    pub missing: BTreeMap<i64, Instant>,
    pub gap_bound: Duration,
}

impl Cursor {
    pub fn position(&self) -> i64 {
        match self.missing.keys().next() {
            Some(first) => first - 1,
            None => self.max_seen,
        }
    }

    /// Where to start following when memory is (about to be) loaded from SQL: the highest
    /// visible seq, plus the recent seqs not visible yet, which may belong to transactions
    /// still in flight that the load will not see.
    pub async fn start(
        backend: &crate::db::Backend,
        gap_bound: Duration,
    ) -> Result<Cursor, sqlx::Error> {
        // Pruned rows are in what is about to be loaded (the log may even be empty).
        let pruned = backend.pruned_through().await?;
        let max_seen = backend.max_change_seq().await?.max(pruned);
        let mut missing = BTreeMap::new();
        // Generous: committed_ms is the writer's clock, which may be off.
        let window = i64::try_from(gap_bound.as_millis()).unwrap_or(i64::MAX / 4) * 2 + 60_000;
        if let Some(first) = backend
            .first_change_since(crate::now_ms().saturating_sub(window))
            .await?
        {
            let now = Instant::now();
            for (lo, hi) in backend.change_gaps(first).await? {
                // At or below `pruned` a gap is a pruned or rolled-back row, never one in
                // flight (that would be a transaction open for longer than the retention).
                let lo = lo.max(pruned + 1);
                let hi = hi.min(max_seen);
                if hi < lo || hi - lo > MAX_TRACKED_GAP {
                    continue;
                }
                for seq in lo..=hi {
                    missing.insert(seq, now);
                }
            }
        }
        Ok(Cursor {
            max_seen,
            missing,
            gap_bound,
        })
    }
}

/// Why a poll could not just continue.
pub(crate) enum PollError {
    Db(sqlx::Error),
    /// Rows this replica never saw were pruned: memory must be reloaded from SQL.
    FellBehind,
}

impl From<sqlx::Error> for PollError {
    fn from(e: sqlx::Error) -> Self {
        PollError::Db(e)
    }
}

/// One change row, validated.
enum Parsed {
    Put {
        legacy: bool,
        created: bool,
        key: Bytes,
        version: i64,
        prev_version: Option<i64>,
    },
    Removed {
        key: Bytes,
        version: i64,
    },
    Expired {
        key: Bytes,
        version: i64,
        value: Option<Bytes>,
    },
    Clear {
        version: Option<i64>,
    },
}

fn parse(row: &ChangeRow) -> Result<(String, Parsed), String> {
    let cache = row.cache.clone().ok_or("no cache")?;
    let kind = row.kind.as_deref().ok_or("no kind")?;
    let key = || {
        row.key
            .clone()
            .ok_or_else(|| format!("'{kind}' without a key"))
    };
    let version = || {
        row.version
            .ok_or_else(|| format!("'{kind}' without a version"))
    };
    let parsed = match kind {
        "created" | "modified" | "put" => Parsed::Put {
            legacy: kind == "put",
            created: kind == "created",
            key: key()?,
            version: version()?,
            prev_version: row.prev_version,
        },
        "removed" | "remove" => Parsed::Removed {
            key: key()?,
            version: row.version.unwrap_or(0),
        },
        "expired" => Parsed::Expired {
            key: key()?,
            version: version()?,
            value: row.value.clone(),
        },
        "clear" => Parsed::Clear {
            version: row.version,
        },
        other => return Err(format!("unknown kind '{other}'")),
    };
    Ok((cache, parsed))
}

/// Reads what became visible since the last poll (and any gap that filled), applies it to
/// memory and publishes it. Returns whether a full page was read (more may be waiting).
/// `announced`: the highest seq named by the notifications that woke the follower, if any.
pub(crate) async fn poll(
    core: &Core,
    cur: &mut Cursor,
    check_pruned: bool,
    announced: Option<i64>,
) -> Result<bool, PollError> {
    // Every change announced up to `announced` is this process's own and committed, so memory
    // has it already: only its events are due, and reading the rows back would cost a query
    // per write batch (the common case of a replica that is the only writer). Any other
    // replica's seq in the range, a gap, or a timer poll reads SQL as usual.
    if let Some(top) = announced.filter(|top| *top > cur.max_seen) {
        if !check_pruned && cur.missing.is_empty() {
            if let Some(events) = core.feed.take_committed_run(cur.max_seen + 1, top) {
                apply_own(core, events);
                cur.max_seen = top;
                let pos = cur.position();
                core.feed.set_position(pos);
                core.feed.prune_pending(pos);
                core.feed.mark_ok();
                core.metrics
                    .feed_reads_skipped
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
        }
    }
    let backend = &core.backend;
    if check_pruned {
        // Rows above what we have seen were pruned, or a seq we are still waiting for may have
        // been committed and pruned before we saw it (only if retention < gap bound): either
        // way changes may be lost to us.
        let pruned = backend.pruned_through().await?;
        let waiting = cur.missing.keys().next().is_some_and(|m| *m <= pruned);
        if pruned > cur.max_seen || waiting {
            return Err(PollError::FellBehind);
        }
    }
    let fresh = backend.changes_after(cur.max_seen, PAGE).await?;
    let full = fresh.len() as i64 >= PAGE;
    let mut filled = Vec::new();
    if !cur.missing.is_empty() {
        let ask: Vec<i64> = cur.missing.keys().take(MAX_GAP_QUERY).copied().collect();
        filled = backend.changes_in(&ask).await?;
    }
    let now = Instant::now();
    let mut new_gap = false;
    let mut expect = cur.max_seen + 1;
    for r in &fresh {
        if r.seq > expect {
            new_gap = true;
            if r.seq - expect <= MAX_TRACKED_GAP {
                for seq in expect..r.seq {
                    cur.missing.insert(seq, now);
                }
            } else {
                tracing::warn!(
                    from = expect,
                    to = r.seq - 1,
                    "change feed: not tracking a huge seq gap"
                );
            }
        }
        expect = expect.max(r.seq + 1);
    }
    // A gap that starts where rows were pruned is not a transaction in flight.
    if new_gap && backend.pruned_through().await? > cur.max_seen {
        return Err(PollError::FellBehind);
    }
    cur.max_seen = cur.max_seen.max(expect - 1);
    for r in &filled {
        cur.missing.remove(&r.seq);
    }
    let mut rows = filled;
    rows.extend(fresh);
    rows.sort_by_key(|r| r.seq);
    apply(core, rows).await;

    let bound = cur.gap_bound;
    let before = cur.missing.len();
    cur.missing.retain(|_, noticed| noticed.elapsed() < bound);
    if cur.missing.len() != before {
        tracing::debug!(
            skipped = before - cur.missing.len(),
            "change feed: seqs never committed (rolled back)"
        );
    }
    let pos = cur.position();
    core.feed.set_position(pos);
    core.feed.prune_pending(pos);
    core.feed.mark_ok();
    Ok(full)
}

/// This process's own committed changes, in seq order, as [`apply`] treats them when it reads
/// their rows: memory has the writes; a removal also drops what it removed for good.
fn apply_own(core: &Core, events: Vec<Arc<ChangeEvent>>) {
    for ev in events {
        // A cache removed since: its consumers find it gone (as in `apply`).
        if let Some(cache) = core.cache(&ev.cache) {
            settle_own(core, &cache.inner, ev);
        }
    }
}

/// One change of this process's own reached by the feed: memory has the write already; a
/// removal or expiry also drops what it removed for good. Then its event is published.
fn settle_own(core: &Core, inner: &CacheInner, ev: Arc<ChangeEvent>) {
    if matches!(ev.kind, ChangeKind::Removed | ChangeKind::Expired) {
        inner.remove_upto(&ev.key, ev.version, true);
    }
    core.feed.publish(ev);
}

/// Applies change rows (sorted by seq) to memory and publishes their events.
async fn apply(core: &Core, rows: Vec<ChangeRow>) {
    if rows.is_empty() {
        return;
    }
    // Validate, and take this process's own events (memory already has those writes). A
    // change of this process's own that raises no event (written with listener notification
    // off) is local too: the writer updates memory, there is nothing to publish.
    struct Item {
        cache: String,
        p: Parsed,
        /// This process's own event of the change, registered before COMMIT.
        local_ev: Option<Arc<ChangeEvent>>,
        /// Written by this process (memory has it already).
        local: bool,
        /// Whether client listeners are told.
        notify: bool,
    }
    let mut items: Vec<Item> = Vec::with_capacity(rows.len());
    for r in &rows {
        match parse(r) {
            Ok((cache, p)) => {
                let own = r.origin.as_deref() == Some(core.feed.origin.as_str());
                // Own key changes registered their event (silent ones too); own whole-cache
                // changes did not and are applied like another replica's (idempotent).
                let local_ev = if own {
                    core.feed.take_pending(r.seq)
                } else {
                    None
                };
                let local = local_ev.is_some();
                items.push(Item {
                    cache,
                    p,
                    local_ev,
                    local,
                    notify: r.notify,
                });
            }
            Err(why) => {
                tracing::warn!(seq = r.seq, "change feed: skipping a bad change row: {why}")
            }
        }
    }
    // One read per cache for every key that another replica wrote.
    let mut caches: HashMap<String, Option<Cache>> = HashMap::new();
    let mut refresh: HashMap<String, Vec<Bytes>> = HashMap::new();
    for Item {
        cache, p, local, ..
    } in &items
    {
        if !caches.contains_key(cache) {
            let c = match core.cache(cache) {
                Some(c) => Some(c),
                None => adopt(core, cache).await,
            };
            caches.insert(cache.clone(), c);
        }
        if let (Parsed::Put { key, .. }, false) = (p, local) {
            refresh.entry(cache.clone()).or_default().push(key.clone());
        }
    }
    let mut fetched: HashMap<String, HashMap<Bytes, Row>> = HashMap::new();
    let mut unread: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (cache, mut keys) in refresh {
        keys.sort();
        keys.dedup();
        let mut got = HashMap::new();
        let mut attempt = 0u64;
        loop {
            match core.backend.read_rows(&cache, &keys).await {
                Ok(rows) => {
                    got.extend(rows);
                    break;
                }
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::warn!("change feed: refreshing keys of '{cache}': {e}");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => {
                    // Memory of these keys stays behind until their next change (or a
                    // read-through); events still go out.
                    tracing::error!("change feed: giving up refreshing keys of '{cache}': {e}");
                    unread.insert(cache.clone());
                    break;
                }
            }
        }
        fetched.insert(cache, got);
    }

    for Item {
        cache: name,
        p,
        local_ev,
        notify,
        ..
    } in items
    {
        if let Parsed::Clear { version } = p {
            // A cache that is not here (any more) was removed, or created and removed since:
            // consumers find it gone.
            if let Some(Some(cache)) = caches.get(&name) {
                remote_clear(core, cache, version).await;
            }
            core.feed.publish(Arc::new(ChangeEvent::whole_cache(
                &name,
                ChangeKind::Cleared,
                version.unwrap_or(0),
            )));
            continue;
        }
        let Some(Some(cache)) = caches.get(&name) else {
            continue;
        };
        let inner = &cache.inner;
        // This process's own change (its event was registered).
        if let Some(ev) = local_ev {
            settle_own(core, inner, ev);
            continue;
        }
        let ev = match p {
            Parsed::Put {
                legacy,
                created,
                key,
                version,
                prev_version,
            } => {
                let (mem_version, mem_value, mem_live) = match inner.map.get(&key[..]) {
                    Some(e) => (
                        Some(e.version),
                        Some(e.value.clone()),
                        !e.is_expired(crate::now_ms()),
                    ),
                    None => (None, None, false),
                };
                let previous = match (prev_version, mem_version) {
                    (Some(p), Some(m)) if p == m => mem_value.clone(),
                    (None, Some(_)) if legacy && mem_live => mem_value.clone(),
                    _ => None,
                };
                let created = if legacy { !mem_live } else { created };
                let row = fetched.get(&name).and_then(|m| m.get(&key));
                let value = match row {
                    Some(r) if r.version == version => Some(r.value.clone()),
                    _ if mem_version == Some(version) => mem_value.clone(),
                    _ => None,
                };
                match row {
                    Some(r) => {
                        inner.install(&key, r);
                    }
                    // Removed again since; that removal's row follows. Until then, nothing
                    // older than this change may be served.
                    None if !unread.contains(&name) => {
                        inner.remove_upto(&key, version - 1, false);
                    }
                    None => {}
                }
                ChangeEvent {
                    cache: name,
                    key,
                    kind: if created {
                        ChangeKind::Created
                    } else {
                        ChangeKind::Modified
                    },
                    version,
                    value,
                    previous: if created { None } else { previous },
                    listener_notification: notify,
                }
            }
            Parsed::Removed { key, version } => {
                let previous = inner
                    .map
                    .get(&key[..])
                    .filter(|e| e.version == version)
                    .map(|e| e.value.clone());
                inner.remove_upto(&key, version, true);
                ChangeEvent {
                    cache: name,
                    key,
                    kind: ChangeKind::Removed,
                    version,
                    value: previous.clone(),
                    previous,
                    listener_notification: notify,
                }
            }
            Parsed::Expired {
                key,
                version,
                value,
            } => {
                let removed = inner.remove_upto(&key, version, true);
                let value =
                    value.or_else(|| removed.filter(|e| e.version == version).map(|e| e.value));
                ChangeEvent {
                    cache: name,
                    key,
                    kind: ChangeKind::Expired,
                    version,
                    value,
                    previous: None,
                    listener_notification: notify,
                }
            }
            Parsed::Clear { .. } => continue,
        };
        // Silent changes too: consumers mirroring the cache need them; listeners skip them.
        core.feed.publish(Arc::new(ev));
    }
}

/// A cache was cleared, created or removed: by another replica, or by this one (memory has
/// that already; applying it again changes nothing).
async fn remote_clear(core: &Core, cache: &Cache, version: Option<i64>) {
    let inner: &CacheInner = &cache.inner;
    match version {
        Some(v) => inner.clear_below(v),
        None => {
            inner.map.clear();
            inner.dirty.clear();
        }
    }
    // A removal writes the same row; the cache row being gone tells them apart.
    match core.backend.all_caches().await {
        Ok(defs) if !defs.iter().any(|d| d.name == inner.def.name) => {
            let mut reg = core.registry_write();
            if reg
                .get(&inner.def.name)
                .is_some_and(|c| Arc::ptr_eq(&c.inner, &cache.inner))
            {
                reg.remove(&inner.def.name);
                inner.removed.store(true, Ordering::Release);
                inner.map.clear();
                inner.dirty.clear();
                tracing::info!(cache = %inner.def.name, "cache removed by another replica");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "change feed: checking whether '{}' still exists: {e}",
            inner.def.name
        ),
    }
}

/// A cache another replica created: registered (with its rows) through the writer, like a
/// local creation, so there is only ever one handle per name.
async fn adopt(core: &Core, name: &str) -> Option<Cache> {
    match crate::cache::send(&core.writer_tx, Op::AdoptCache(name.to_string())).await {
        Ok(Reply::Adopted(c)) => c,
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("change feed: adopting cache '{name}': {e}");
            None
        }
    }
}

/// Reloads every cache from SQL after the feed fell behind the pruned change log; returns
/// the cursor to follow from.
pub(crate) async fn reload(core: &Core, gap_bound: Duration) -> Result<Cursor, sqlx::Error> {
    core.feed.set_ready(false);
    let cursor = Cursor::start(&core.backend, gap_bound).await?;
    let defs = core
        .backend
        .all_caches()
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    for def in &defs {
        let cache = match core.cache(&def.name) {
            Some(c) => c,
            None => match adopt(core, &def.name).await {
                Some(c) => c,
                None => continue,
            },
        };
        let inner = &cache.inner;
        // Versions held before the load: those the load does not find are gone.
        let before: Vec<(Bytes, i64)> = inner
            .map
            .iter()
            .map(|e| (e.key().clone(), e.version))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let now = crate::now_ms();
        core.backend
            .load_entries(&def.name, |k, row| {
                if !row.is_expired(now) {
                    inner.install(&k, &row);
                }
                seen.insert(k);
            })
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        for (k, v) in before {
            if !seen.contains(&k) {
                inner.remove_upto(&k, v, true);
            }
        }
        // The changes skipped have no events: consumers mirroring the cache re-read it.
        core.feed.publish(Arc::new(ChangeEvent::whole_cache(
            &def.name,
            ChangeKind::Reloaded,
            0,
        )));
    }
    let names: Vec<String> = core.registry_read().keys().cloned().collect();
    for name in names {
        if !defs.iter().any(|d| d.name == name) {
            let removed = core.registry_write().remove(&name);
            if let Some(c) = removed {
                c.inner.removed.store(true, Ordering::Release);
                c.inner.map.clear();
                c.inner.dirty.clear();
                core.feed.publish(Arc::new(ChangeEvent::whole_cache(
                    &name,
                    ChangeKind::Reloaded,
                    0,
                )));
            }
        }
    }
    tracing::warn!(
        position = cursor.max_seen,
        "change feed fell behind the pruned change log: reloaded every cache (events of the \
         missed changes are lost)"
    );
    Ok(cursor)
}

/// Catches up until a poll returns less than a page (used at startup and after a reload).
pub(crate) async fn catch_up(core: &Core, cur: &mut Cursor) -> Result<(), PollError> {
    while poll(core, cur, true, None).await? {}
    Ok(())
}

/// The follower task (PostgreSQL): woken by `NOTIFY ferrod_changes` and by a timer (the safety
/// net for notifications lost while the listening connection was down), it polls the change
/// log by seq.
pub(crate) async fn follow(
    core: Arc<Core>,
    url: String,
    mut cur: Cursor,
    poll_every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener: Option<PgListener> = None;
    let mut tick = tokio::time::interval(poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut more = false;
    loop {
        if *stop.borrow() {
            return;
        }
        if listener.is_none() {
            match PgListener::connect(&url).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => {
                        listener = Some(l);
                        // Whatever was notified while we were not listening.
                        more = true;
                    }
                    Err(e) => tracing::warn!("change feed: LISTEN failed: {e}"),
                },
                Err(e) => tracing::warn!("change feed: listener connection failed: {e}"),
            }
        }
        let mut timer = false;
        // The highest seq the notifications of this wake-up named (their payload).
        let mut announced: Option<i64> = None;
        if !more {
            let notified = async {
                match listener.as_mut() {
                    Some(l) => Some(l.try_recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => timer = true,
                n = notified => match n {
                    Some(Ok(Some(first))) => {
                        // Coalesce a burst into one poll. A payload that is not a seq (none
                        // expected) makes this an ordinary poll.
                        let mut top = first.payload().parse::<i64>().ok();
                        if let Some(l) = listener.as_mut() {
                            while let Some(n) = l.next_buffered() {
                                top = top.zip(n.payload().parse::<i64>().ok()).map(|(a, b)| a.max(b));
                            }
                        }
                        announced = top;
                    }
                    Some(Ok(None)) => {
                        tracing::info!("change feed: listener reconnected");
                    }
                    Some(Err(e)) => {
                        tracing::warn!("change feed: listener lost: {e}");
                        listener = None;
                    }
                    None => {}
                },
            }
        }
        if core.feed.paused.load(Ordering::Acquire) {
            more = false;
            continue;
        }
        match poll(&core, &mut cur, timer, announced).await {
            Ok(full) => more = full,
            Err(PollError::FellBehind) => {
                more = false;
                let res = async {
                    let mut c = reload(&core, cur.gap_bound).await.map_err(PollError::Db)?;
                    catch_up(&core, &mut c).await?;
                    Ok::<_, PollError>(c)
                }
                .await;
                match res {
                    Ok(c) => {
                        cur = c;
                        core.feed.set_ready(true);
                    }
                    Err(_) => {
                        tracing::warn!("change feed: reload failed; retrying");
                        tokio::time::sleep(poll_every).await;
                    }
                }
            }
            Err(PollError::Db(e)) => {
                more = false;
                tracing::warn!("change feed: poll failed: {e}");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(poll_every) => {}
                }
            }
        }
    }
}

/// Sends `NOTIFY ferrod_changes` after this process's commits, coalescing bursts.
///
/// Deliberately not inside the writing transaction: PostgreSQL serializes the commits of all
/// transactions that NOTIFY behind one cluster-wide lock held until their commit record is
/// flushed, which would stop concurrent replicas' commits from sharing WAL flushes (decision 5).
/// A NOTIFY-only statement writes no WAL to flush, so it holds that lock only briefly. A
/// notification lost because the process died between COMMIT and NOTIFY is covered by the
/// followers' periodic poll, like any other lost notification.
pub(crate) async fn notifier(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut rx = core.feed.notify.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let seq = *rx.borrow_and_update();
        if let Err(e) = core.backend.notify_changes(seq).await {
            tracing::debug!("NOTIFY {CHANNEL}: {e}");
        }
    }
}
