//! The query side of the server: one in-memory [`QueryIndex`] per queried cache, kept in step
//! with the store, over the schemas of this replica's registry (`crate::schemas`).
//!
//! A cache's index is built the first time the cache is queried (caches never queried cost
//! nothing) from the entries in memory, then maintained from the store's change stream, which
//! carries this replica's committed writes and every other replica's. For each change the
//! entry is re-read from the cache's map (the replica's truth) rather than taken from the
//! event, so the order in which changes are applied cannot leave a stale entity behind. A
//! query first waits until this replica's acknowledged writes have been published (SQLite
//! publishes them before acknowledging; on PostgreSQL the feed follower publishes them a moment
//! later) and every published change is applied, so it sees its replica's own writes; other
//! replicas' writes show once the change feed delivers them, as for reads. A whole-cache change
//! (a CLEAR on any replica, the cache removed or re-created, a reload after this replica's feed
//! fell behind) rebuilds the cache's index from memory, as does falling behind the change
//! stream. Queries only consider entries still alive in the cache, so entries expired but not
//! yet reaped never show. An index built with older schemas (a `.proto` was registered or
//! changed since) is rebuilt before it is used.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use ferrod_query::ickle::{IndexedFields, QueryIndex};
use ferrod_query::schema::Schemas;
use ferrod_query::wrapped::{self, WrappedValue};
use ferrod_store::{Cache, ChangeEvent, Store};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use crate::schemas::SchemaState;

/// The longest a query waits for the change feed to publish this replica's own writes.
const OWN_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What an entity result carries back: the stored value, sent to clients as it was written,
/// and its version (DELETE removes only what it matched).
#[derive(Debug, Clone)]
pub struct Stored {
    pub value: Bytes,
    pub version: i64,
}

struct CacheIndex {
    index: QueryIndex<Stored>,
    schemas: Arc<Schemas>,
}

pub struct QueryService {
    store: Store,
    schema_state: Arc<SchemaState>,
    indexes: RwLock<HashMap<String, CacheIndex>>,
    barrier: mpsc::Sender<oneshot::Sender<()>>,
}

/// Read access to one cache's index (and the schemas it was built with) during a query.
pub struct IndexGuard<'a> {
    guard: RwLockReadGuard<'a, HashMap<String, CacheIndex>>,
    cache: String,
}

impl IndexGuard<'_> {
    pub fn index(&self) -> &QueryIndex<Stored> {
        &self.guard[&self.cache].index
    }

    pub fn schemas(&self) -> &Arc<Schemas> {
        &self.guard[&self.cache].schemas
    }
}

impl QueryService {
    /// Subscribes to the store and spawns the task that applies its changes (it ends with the
    /// store's change stream). Needs a tokio runtime.
    pub fn start(store: Store, schema_state: Arc<SchemaState>) -> Arc<QueryService> {
        let rx = store.subscribe();
        let (barrier, barriers) = mpsc::channel(1024);
        let service = Arc::new(QueryService {
            store,
            schema_state,
            indexes: RwLock::new(HashMap::new()),
            barrier,
        });
        tokio::spawn(service.clone().follow(rx, barriers));
        service
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, CacheIndex>> {
        self.indexes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, CacheIndex>> {
        self.indexes.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn follow(
        self: Arc<Self>,
        mut rx: broadcast::Receiver<Arc<ChangeEvent>>,
        mut barriers: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => self.apply(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!("query indexes fell behind the change stream by {n} changes; rebuilding");
                        self.rebuild_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(done) = barriers.recv() => {
                    loop {
                        match rx.try_recv() {
                            Ok(ev) => self.apply(&ev),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => self.rebuild_all(),
                            Err(_) => break,
                        }
                    }
                    let _ = done.send(());
                }
            }
        }
    }

    /// Waits until every write this replica acknowledged so far, and every change published so
    /// far, is applied to the indexes. On PostgreSQL the follower publishes this replica's own
    /// writes too, a moment after they were acknowledged: wait for it (bounded, so a stalled
    /// feed makes queries stale rather than stuck, like reads of other replicas' writes).
    pub async fn caught_up(&self) {
        let target = self.store.local_commit_position();
        self.store.wait_for_feed(target, OWN_WRITES_WAIT).await;
        let (tx, rx) = oneshot::channel();
        if self.barrier.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn apply(&self, ev: &ChangeEvent) {
        let mut indexes = self.write();
        if !indexes.contains_key(&ev.cache) {
            return;
        }
        if ev.kind.is_whole_cache() {
            // Memory already reflects it (and maybe later changes, whose events follow).
            self.rebuild_locked(&mut indexes, &ev.cache);
            return;
        }
        let Some(ci) = indexes.get_mut(&ev.cache) else {
            return;
        };
        let Some(cache) = self.store.cache(&ev.cache) else {
            indexes.remove(&ev.cache);
            return;
        };
        refresh_key(&mut ci.index, &cache, &ci.schemas, &ev.key);
    }

    fn rebuild_all(&self) {
        let mut indexes = self.write();
        let names: Vec<String> = indexes.keys().cloned().collect();
        for name in names {
            self.rebuild_locked(&mut indexes, &name);
        }
    }

    /// Rebuilds one cache's index from memory with the schemas registered now
    /// (`@@cache@reindex`, `@@cache@updateindexschema`). A cache not queried yet stays
    /// unindexed until it is.
    pub fn reindex(&self, cache: &str) {
        let mut indexes = self.write();
        if indexes.contains_key(cache) {
            self.rebuild_locked(&mut indexes, cache);
        }
    }

    fn rebuild_locked(&self, indexes: &mut HashMap<String, CacheIndex>, name: &str) {
        let Some(cache) = self.store.cache(name) else {
            indexes.remove(name);
            return;
        };
        let schemas = self.schema_state.schemas();
        let mut index = QueryIndex::new(indexed_fields(&schemas));
        for key in cache.keys() {
            refresh_key(&mut index, &cache, &schemas, &key);
        }
        debug!("query index of cache '{name}': {} entities", index.len());
        indexes.insert(name.to_string(), CacheIndex { index, schemas });
    }

    /// The cache's index, built now if this is the cache's first query or if the schemas
    /// changed since it was built.
    pub fn index(&self, cache: &Cache) -> IndexGuard<'_> {
        let name = cache.name().to_string();
        let generation = self.schema_state.schemas().generation();
        {
            let indexes = self.read();
            if indexes
                .get(&name)
                .is_some_and(|ci| ci.schemas.generation() == generation)
            {
                return IndexGuard {
                    guard: indexes,
                    cache: name,
                };
            }
        }
        {
            let mut indexes = self.write();
            let current = indexes
                .get(&name)
                .is_some_and(|ci| ci.schemas.generation() == generation);
            if !current {
                self.rebuild_locked(&mut indexes, &name);
            }
        }
        IndexGuard {
            guard: self.read(),
            cache: name,
        }
    }

    /// How many entities this replica's index of the cache holds (None if the cache has not
    /// been queried here, or was removed): for STATS.
    pub fn indexed_entities(&self, cache: &str) -> Option<usize> {
        self.read().get(cache).map(|ci| ci.index.len())
    }
}

/// The indexed fields of every message: the ones with an index annotation (`@Basic`,
/// `@Keyword`, `@Text`...). Only they get posting lists; every field can be queried.
fn indexed_fields(schemas: &Schemas) -> IndexedFields {
    let mut out = IndexedFields::new();
    for m in schemas.pool().all_messages() {
        let Some(ann) = schemas.annotations(m.full_name()) else {
            continue;
        };
        let fields: HashSet<String> = ann.indexed_fields().map(|(f, _)| f.to_string()).collect();
        if !fields.is_empty() {
            out.insert(m.full_name().to_string(), fields);
        }
    }
    out
}

/// Brings one key of an index in line with the cache's map: the decoded entity, or nothing
/// when the key is gone or its value is not an entity of a registered type.
fn refresh_key(index: &mut QueryIndex<Stored>, cache: &Cache, schemas: &Schemas, key: &Bytes) {
    match cache
        .peek(key)
        .map(|e| (wrapped::decode(&e.value, schemas), e))
    {
        Some((Ok(WrappedValue::Message(message)), entry)) => {
            index.upsert(
                key.clone(),
                message,
                Stored {
                    value: entry.value.clone(),
                    version: entry.version,
                },
            );
        }
        _ => {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrod_query::schema::PROTOBUF_METADATA_CACHE_NAME;
    use ferrod_store::{Expiration, StoreConfig};
    use prost_reflect::{DynamicMessage, Value};

    use crate::schemas::TextEncoding;

    const SCHEMA: &str =
        "package t;\n/** @Indexed */\nmessage E {\n  /** @Basic */\n  optional string name = 1;\n}\n";

    /// An index that fell behind the change stream (its follower was held up while more
    /// changes than the stream buffers were published) is rebuilt from memory: the entity
    /// whose change it missed is indexed all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // Holding the index lock across the writes is the point: it stalls the index's follower.
    #[allow(clippy::await_holding_lock)]
    async fn a_lagging_index_is_rebuilt_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(format!(
            "sqlite://{}",
            dir.path().join("ferrod.db").display()
        ));
        cfg.caches = crate::config::builtin_caches();
        cfg.event_buffer = 16;
        let store = Store::open(cfg).await.unwrap();
        let forever = Expiration::IMMORTAL;
        store
            .cache(PROTOBUF_METADATA_CACHE_NAME)
            .unwrap()
            .put(
                TextEncoding::Plain.encode("t.proto"),
                TextEncoding::Plain.encode(SCHEMA),
                forever,
            )
            .await
            .unwrap();
        let state = Arc::new(SchemaState::default());
        let schemas = state.resync(&store);
        let entity = {
            let mut m = DynamicMessage::new(schemas.message("t.E").expect("t.E registered"));
            m.set_field_by_name("name", Value::String("one".into()));
            Bytes::from(WrappedValue::Message(m).encode(&schemas))
        };
        let service = QueryService::start(store.clone(), state);
        let cache = store.cache(crate::config::DEFAULT_CACHE_NAME).unwrap();
        assert_eq!(service.index(&cache).index().len(), 0);

        let stall = service.write();
        let filler = || Bytes::from_static(b"not an entity");
        cache
            .put(Bytes::from_static(b"first"), filler(), forever)
            .await
            .unwrap();
        // The follower takes the first change and waits for the lock; the entity's change and
        // 40 more overflow the 16 the stream keeps for it.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        cache
            .put(Bytes::from_static(b"entity"), entity, forever)
            .await
            .unwrap();
        for i in 0..40 {
            cache
                .put(Bytes::from(format!("f{i}")), filler(), forever)
                .await
                .unwrap();
        }
        drop(stall);
        service.caught_up().await;
        let guard = service.index(&cache);
        assert_eq!(guard.index().len(), 1);
        assert!(guard.index().get(b"entity").is_some());
        drop(guard);
        store.shutdown().await;
    }
}
