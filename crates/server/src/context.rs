//! State shared by every connection of one server process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrod_codec::{flags, op, status, version, RequestHeader, Response};
use ferrod_store::{Cache, Store};

use crate::auth::Authenticator;
use crate::config::{Config, DEFAULT_CACHE_NAME};
use crate::listeners::ListenerRegistry;
use crate::schemas::SchemaState;

pub struct ServerContext {
    pub store: Store,
    pub config: Config,
    /// Epoch ms at startup, for STATS `timeSinceStart`.
    pub started_ms: i64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub listeners: Arc<ListenerRegistry>,
    /// SASL and authorization; `None` when no credentials file is configured (no auth).
    pub auth: Option<Arc<Authenticator>>,
    /// Schemas and per-cache query indexes (QUERY).
    pub query: Arc<crate::query::QueryService>,
    /// This replica's schema registry (`___protobuf_metadata`); see [`crate::schemas`].
    pub schema_state: Arc<SchemaState>,
    next_connection_id: AtomicU64,
}

/// The protocol version ferrod advertises in PING: the 4.1 streaming ops are served, so 4.1.
pub const SERVER_PROTOCOL_VERSION: u8 = 41;

/// Request op codes answered by this server (the PING op list, 3.0+).
pub const SERVED_OPERATIONS: &[u8] = &[
    op::PUT,
    op::GET,
    op::PUT_IF_ABSENT,
    op::REPLACE,
    op::REPLACE_IF_UNMODIFIED,
    op::REMOVE,
    op::REMOVE_IF_UNMODIFIED,
    op::CONTAINS_KEY,
    op::GET_WITH_VERSION,
    op::CLEAR,
    op::STATS,
    op::PING,
    op::BULK_GET,
    op::GET_WITH_METADATA,
    op::BULK_GET_KEYS,
    op::AUTH_MECH_LIST,
    op::AUTH,
    op::SIZE,
    op::EXEC,
    op::PUT_ALL,
    op::GET_ALL,
    op::ADD_CLIENT_LISTENER,
    op::REMOVE_CLIENT_LISTENER,
    op::QUERY,
    op::ITERATION_START,
    op::ITERATION_NEXT,
    op::ITERATION_END,
    op::GET_STREAM,
    op::PUT_STREAM,
    op::START_PUT_STREAM,
    op::NEXT_PUT_STREAM,
    op::END_PUT_STREAM,
    op::START_GET_STREAM,
    op::NEXT_GET_STREAM,
    op::END_GET_STREAM,
];

impl ServerContext {
    pub fn new(store: Store, config: Config) -> Self {
        // The registry starts from the schemas persisted in the (already loaded) cache.
        let schema_state = Arc::new(SchemaState::default());
        schema_state.resync(&store);
        ServerContext {
            query: crate::query::QueryService::start(store.clone(), schema_state.clone()),
            schema_state,
            store,
            config,
            started_ms: now_ms(),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            listeners: Arc::new(ListenerRegistry::default()),
            auth: None,
            next_connection_id: AtomicU64::new(1),
        }
    }

    pub fn with_auth(mut self, auth: Option<Authenticator>) -> Self {
        self.auth = auth.map(Arc::new);
        self
    }

    /// The cache a request addresses; the empty name is the default cache. A missing cache gets
    /// the error text clients look for by substring (reference §4).
    pub fn cache(&self, header: &RequestHeader) -> Result<Cache, Box<Response>> {
        let name = cache_name(header);
        let cache = self
            .store
            .cache(name)
            .ok_or_else(|| Box::new(cache_not_found(header)))?;
        // SKIP_LISTENER_NOTIFICATION (3.0+): the write still reaches every replica, silently.
        let skip =
            header.version >= version::V30 && header.has_flag(flags::SKIP_LISTENER_NOTIFICATION);
        Ok(if skip {
            cache.with_listener_notification(false)
        } else {
            cache
        })
    }

    /// The registered protobuf schemas as of now (built-ins included): message descriptors by
    /// full name or `@TypeId`, index annotations, per-file errors. Cheap; never waits.
    pub fn schemas(&self) -> Arc<ferrod_query::schema::Schemas> {
        self.schema_state.schemas()
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn add_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub fn cache_name(header: &RequestHeader) -> &str {
    if header.cache_name.is_empty() {
        DEFAULT_CACHE_NAME
    } else {
        &header.cache_name
    }
}

pub fn cache_not_found(header: &RequestHeader) -> Response {
    Response::error(
        header.message_id,
        status::PARSE_ERROR,
        format!(
            "org.infinispan.server.hotrod.CacheNotFoundException: Cache with name '{}' not found amongst the configured caches",
            header.cache_name
        ),
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
