//! The `___protobuf_metadata` cache and this replica's [`SchemaRegistry`].
//!
//! The cache is an ordinary persisted cache shared by all replicas. Each replica keeps a
//! registry in step with it: from the persisted content at startup, after every write a client
//! makes through this replica (before the client is answered), and from the store's change
//! stream for every other change of the cache: writes made on other replicas (silent ones
//! included), expirations, CLEARs and the cache's removal or re-creation on any replica, and a
//! reload after this replica's change feed fell behind. Each one makes the registry re-read the
//! cache from memory, so no periodic check is needed.
//!
//! As in Infinispan (`ProtobufMetadataManagerInterceptor`), the replica that handles a client's
//! write also maintains the error keys through the normal durable write path before it answers:
//! `<file>.errors` = that file's error message, `.errors` = the failing file names one per line;
//! both are removed once the files resolve (or are removed).
//!
//! Encoding: the Java client (ProtoStream marshaller, Keycloak) sends keys and values as
//! WrappedMessage strings with media type `application/x-protostream`, and Infinispan
//! announces `application/x-java-object` for this cache in PING (the server stores Java
//! strings and transcodes). ferrod stores the bytes the client sent and reads either a wrapped
//! string or plain UTF-8 text (clients using `text/plain`); the error keys are written in the
//! encoding of the key the client's write used, so that client reads them back.
//!
//! # For the query engine
//! `ctx.schemas()` returns the current [`Schemas`] snapshot (an `Arc`, cheap; never waits for a
//! rebuild): `schemas.message("keycloak.RemoteUserSessionEntity")`,
//! `schemas.message_by_type_id(65605)`, `schemas.field_index(message, field)` for the
//! `@Basic`/`@Keyword`/`@Text` index definition, and `ferrod_query::wrapped::decode(bytes,
//! &schemas)` for keys, values and query parameters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use ferrod_codec::{status, Request, RequestHeader, Response};
use ferrod_query::schema::{
    SchemaRegistry, Schemas, ERRORS_KEY_SUFFIX, PROTOBUF_METADATA_CACHE_NAME, PROTO_KEY_SUFFIX,
};
use ferrod_query::wrapped;
use ferrod_store::{Cache, Expiration, Expiry, Store, StoreError};
use tokio::sync::broadcast;
use tracing::{debug, warn};

/// How a key or value of the metadata cache was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    /// A ProtoStream WrappedMessage string (field 9): the Java client's default.
    Wrapped,
    /// Plain UTF-8 (`text/plain` clients).
    Plain,
}

impl TextEncoding {
    pub fn encode(self, s: &str) -> Bytes {
        match self {
            TextEncoding::Wrapped => Bytes::from(wrapped::encode_string(s)),
            TextEncoding::Plain => Bytes::copy_from_slice(s.as_bytes()),
        }
    }
}

/// The text of a key or value of the metadata cache, and how it was encoded.
pub fn decode_text(bytes: &[u8]) -> Option<(String, TextEncoding)> {
    if let Some(s) = wrapped::decode_string(bytes) {
        return Some((s, TextEncoding::Wrapped));
    }
    std::str::from_utf8(bytes)
        .ok()
        .map(|s| (s.to_string(), TextEncoding::Plain))
}

/// This replica's registry and the snapshot readers get.
pub struct SchemaState {
    registry: Mutex<SchemaRegistry>,
    current: RwLock<Arc<Schemas>>,
    /// Serializes error-key maintenance on this replica (Infinispan locks the `.errors` key).
    errors_lock: tokio::sync::Mutex<()>,
}

impl Default for SchemaState {
    fn default() -> Self {
        let registry = SchemaRegistry::new();
        let current = registry.schemas();
        SchemaState {
            registry: Mutex::new(registry),
            current: RwLock::new(current),
            errors_lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl SchemaState {
    /// The current snapshot of every schema that resolves (built-ins included).
    pub fn schemas(&self) -> Arc<Schemas> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the registry hold exactly the `.proto` files the metadata cache holds now (in
    /// memory on this replica). Returns the snapshot.
    pub fn resync(&self, store: &Store) -> Arc<Schemas> {
        let files = store
            .cache(PROTOBUF_METADATA_CACHE_NAME)
            .map(|c| proto_files(&c))
            .unwrap_or_default();
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if registry.replace_all(files) {
            let snapshot = registry.schemas();
            for (file, error) in snapshot.errors() {
                debug!("schema {file} does not resolve: {error}");
            }
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
            snapshot
        } else {
            registry.schemas()
        }
    }
}

/// The `.proto` entries of the metadata cache by file name.
fn proto_files(cache: &Cache) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for key in cache.keys() {
        let Some((name, _)) = decode_text(&key) else {
            continue;
        };
        if !name.ends_with(PROTO_KEY_SUFFIX) {
            continue;
        }
        let Some(entry) = cache.peek(&key) else {
            continue;
        };
        match decode_text(&entry.value) {
            Some((text, _)) => {
                files.insert(name, text);
            }
            None => warn!("schema {name} in {PROTOBUF_METADATA_CACHE_NAME} is not text; ignored"),
        }
    }
    files
}

fn is_metadata_cache(header: &RequestHeader) -> bool {
    header.cache_name == PROTOBUF_METADATA_CACHE_NAME
}

/// Whether a request writes to the metadata cache (and so must keep the registry in step).
pub fn is_metadata_write(header: &RequestHeader, request: &Request) -> bool {
    is_metadata_cache(header)
        && matches!(
            request,
            Request::Put { .. }
                | Request::PutIfAbsent { .. }
                | Request::Replace { .. }
                | Request::ReplaceIfUnmodified { .. }
                | Request::Remove { .. }
                | Request::RemoveIfUnmodified { .. }
                | Request::PutAll { .. }
                | Request::Clear
                | Request::PutStream { .. }
                | Request::StartPutStream { .. }
                | Request::NextPutStream { .. }
        )
}

fn invalid(header: &RequestHeader, message: String) -> Box<Response> {
    Box::new(Response::error(
        header.message_id,
        status::SERVER_ERROR,
        message,
    ))
}

/// Infinispan's rules for what may be written: keys are strings ending with `.proto` (or the
/// `.errors` keys), values are strings.
pub fn check_write(header: &RequestHeader, request: &Request) -> Result<(), Box<Response>> {
    let check_key = |key: &[u8]| -> Result<(), Box<Response>> {
        let Some((name, _)) = decode_text(key) else {
            return Err(invalid(
                header,
                "ISPN028007: The key must be a String : byte[]".into(),
            ));
        };
        if !name.ends_with(PROTO_KEY_SUFFIX) && !name.ends_with(ERRORS_KEY_SUFFIX) {
            return Err(invalid(
                header,
                format!("ISPN028009: The key must be a String ending with \".proto\" : {name}"),
            ));
        }
        Ok(())
    };
    let check_value = |value: &[u8]| -> Result<(), Box<Response>> {
        match decode_text(value) {
            Some(_) => Ok(()),
            None => Err(invalid(
                header,
                "ISPN028008: The value must be a String : byte[]".into(),
            )),
        }
    };
    match request {
        Request::Put { key, value, .. }
        | Request::PutIfAbsent { key, value, .. }
        | Request::Replace { key, value, .. }
        | Request::ReplaceIfUnmodified { key, value, .. }
        | Request::PutStream { key, value, .. } => {
            check_key(key)?;
            check_value(value)
        }
        Request::StartPutStream { key, .. } => check_key(key),
        Request::PutAll { entries, .. } => entries.iter().try_for_each(|(k, v)| {
            check_key(k)?;
            check_value(v)
        }),
        _ => Ok(()),
    }
}

/// The encoding of the key a request wrote, so the error keys are written the same way.
pub fn request_encoding(request: &Request) -> TextEncoding {
    let key = match request {
        Request::Put { key, .. }
        | Request::PutIfAbsent { key, .. }
        | Request::Replace { key, .. }
        | Request::ReplaceIfUnmodified { key, .. }
        | Request::Remove { key }
        | Request::RemoveIfUnmodified { key, .. }
        | Request::PutStream { key, .. }
        | Request::StartPutStream { key, .. } => Some(key),
        Request::PutAll { entries, .. } => entries.first().map(|(k, _)| k),
        _ => None,
    };
    key.and_then(|k| decode_text(k))
        .map_or(TextEncoding::Wrapped, |(_, e)| e)
}

/// How long a schema write waits for this replica to apply other replicas' earlier changes.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// After a client's write to the metadata cache committed on this replica: brings the
/// registry up to date and writes the error keys, then the client gets `response`.
pub async fn after_write(
    state: &SchemaState,
    store: &Store,
    encoding: TextEncoding,
    response: Response,
) -> Response {
    if status::is_error(response.header.status) {
        return response;
    }
    let Some(cache) = store.cache(PROTOBUF_METADATA_CACHE_NAME) else {
        return response;
    };
    let _guard = state.errors_lock.lock().await;
    // The error keys are computed from every file of the cache, as this replica holds it:
    // files another replica stored a moment ago must be in memory first, or the keys written
    // here would leave them out (bounded: a stalled feed makes them stale, not the write stuck).
    match store.catch_up_with_database(CATCH_UP_WAIT).await {
        Ok(true) => {}
        Ok(false) => warn!(
            "schema registry: this replica's change feed is behind; error keys may miss \
             files other replicas stored in the last {CATCH_UP_WAIT:?}"
        ),
        Err(e) => warn!("schema registry: could not read the change log's position: {e}"),
    }
    let snapshot = state.resync(store);
    match write_error_keys(&cache, &snapshot, encoding).await {
        Ok(()) => response,
        Err(e) => {
            warn!("updating the schema error keys failed: {e}");
            Response::error(
                response.header.message_id,
                status::SERVER_ERROR,
                format!("the schema was stored but its error keys could not be updated: {e}"),
            )
        }
    }
}

/// Makes the `.errors` keys of the cache say what `snapshot` says.
async fn write_error_keys(
    cache: &Cache,
    snapshot: &Schemas,
    encoding: TextEncoding,
) -> Result<(), StoreError> {
    // What the cache holds now: error key name -> (key bytes, key encoding, current text).
    let mut existing: HashMap<String, (Bytes, TextEncoding, Option<String>)> = HashMap::new();
    for key in cache.keys() {
        let Some((name, enc)) = decode_text(&key) else {
            continue;
        };
        if !name.ends_with(ERRORS_KEY_SUFFIX) {
            continue;
        }
        let text = cache
            .peek(&key)
            .and_then(|e| decode_text(&e.value).map(|(t, _)| t));
        existing.insert(name, (key, enc, text));
    }
    let mut wanted: BTreeMap<String, String> = snapshot
        .errors()
        .iter()
        .map(|(file, error)| (format!("{file}{ERRORS_KEY_SUFFIX}"), error.clone()))
        .collect();
    if let Some(summary) = snapshot.errors_summary() {
        wanted.insert(ERRORS_KEY_SUFFIX.to_string(), summary);
    }
    let forever = Expiration::new(Expiry::Infinite, Expiry::Infinite);
    for (name, text) in &wanted {
        match existing.get(name) {
            Some((_, _, Some(current))) if current == text => {}
            Some((key, enc, _)) => {
                cache.put(key.clone(), enc.encode(text), forever).await?;
            }
            None => {
                cache
                    .put(encoding.encode(name), encoding.encode(text), forever)
                    .await?;
            }
        }
    }
    for (name, (key, _, _)) in existing {
        if !wanted.contains_key(&name) {
            cache.remove(key).await?;
        }
    }
    Ok(())
}

/// Follows the store's change stream (changes from every replica) and keeps the registry in
/// step.
pub async fn follow(state: Arc<SchemaState>, store: Store) {
    // Subscribed first, then read: whatever changed before is in memory, whatever changes
    // after is received.
    let rx = store.subscribe();
    state.resync(&store);
    follow_changes(state, store, rx).await
}

async fn follow_changes(
    state: Arc<SchemaState>,
    store: Store,
    mut rx: broadcast::Receiver<Arc<ferrod_store::ChangeEvent>>,
) {
    loop {
        match rx.recv().await {
            Ok(change) if change.cache == PROTOBUF_METADATA_CACHE_NAME => {
                state.resync(&store);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("the schema registry fell behind the change stream by {n} changes; re-reading {PROTOBUF_METADATA_CACHE_NAME}");
                state.resync(&store);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrod_store::StoreConfig;
    use std::time::Duration;

    const FOREVER: Expiration = Expiration {
        lifespan: Expiry::Infinite,
        max_idle: Expiry::Infinite,
    };

    async fn store(dir: &tempfile::TempDir) -> Store {
        store_with_buffer(dir, StoreConfig::new("").event_buffer).await
    }

    async fn store_with_buffer(dir: &tempfile::TempDir, event_buffer: usize) -> Store {
        let mut cfg = StoreConfig::new(format!(
            "sqlite://{}",
            dir.path().join("ferrod.db").display()
        ));
        cfg.caches = crate::config::builtin_caches();
        cfg.event_buffer = event_buffer;
        Store::open(cfg).await.expect("store")
    }

    /// Polls (bounded) until `f` holds for the current snapshot.
    async fn eventually(state: &SchemaState, what: &str, f: impl Fn(&Schemas) -> bool) {
        for _ in 0..200 {
            if f(&state.schemas()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the registry never got to: {what}");
    }

    #[tokio::test]
    async fn follows_writes_that_bypass_the_command_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let cache = store
            .cache(PROTOBUF_METADATA_CACHE_NAME)
            .expect("built-in cache");
        let state = Arc::new(SchemaState::default());
        let follower = tokio::spawn(follow(state.clone(), store.clone()));

        // A write the registry only learns of from the change feed.
        cache
            .put(
                TextEncoding::Wrapped.encode("f.proto"),
                TextEncoding::Wrapped.encode("package f; message F {}"),
                FOREVER,
            )
            .await
            .unwrap();
        eventually(&state, "f.F registered", |s| s.message("f.F").is_some()).await;
        // Text keys and values are read too; other keys are ignored.
        cache
            .put(
                TextEncoding::Plain.encode("g.proto"),
                TextEncoding::Plain
                    .encode("import \"f.proto\"; package g; message G { optional f.F f = 1; }"),
                FOREVER,
            )
            .await
            .unwrap();
        eventually(&state, "g.G registered", |s| s.message("g.G").is_some()).await;

        // CLEAR sends no per-key change, but one for the cache.
        cache.clear().await.unwrap();
        eventually(&state, "everything unregistered", |s| {
            s.message("f.F").is_none() && s.message("g.G").is_none()
        })
        .await;
        assert!(state
            .schemas()
            .message(ferrod_query::schema::WRAPPED_MESSAGE)
            .is_some());

        // A write without listener notification (SKIP_LISTENER_NOTIFICATION) still counts.
        cache
            .with_listener_notification(false)
            .put(
                TextEncoding::Wrapped.encode("h.proto"),
                TextEncoding::Wrapped.encode("package h; message H {}"),
                FOREVER,
            )
            .await
            .unwrap();
        eventually(&state, "h.H registered", |s| s.message("h.H").is_some()).await;

        // Removing the cache forgets its schemas; a re-created cache starts empty.
        let def = cache.def().clone();
        assert!(store
            .remove_cache(PROTOBUF_METADATA_CACHE_NAME)
            .await
            .unwrap());
        eventually(&state, "h.H unregistered with the cache", |s| {
            s.message("h.H").is_none()
        })
        .await;
        let cache = store.get_or_create_cache(def).await.unwrap();
        cache
            .put(
                TextEncoding::Wrapped.encode("i.proto"),
                TextEncoding::Wrapped.encode("package i; message I {}"),
                FOREVER,
            )
            .await
            .unwrap();
        eventually(&state, "i.I registered in the new cache", |s| {
            s.message("i.I").is_some() && s.message("h.H").is_none()
        })
        .await;
        follower.abort();
        store.shutdown().await;
    }

    /// A follower that fell behind the change stream re-reads the cache: the schema whose
    /// change it missed is registered all the same.
    #[tokio::test]
    async fn a_lagging_follower_rereads_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_buffer(&dir, 16).await;
        let meta = store.cache(PROTOBUF_METADATA_CACHE_NAME).unwrap();
        let other = store.cache(crate::config::DEFAULT_CACHE_NAME).unwrap();
        let state = Arc::new(SchemaState::default());
        let rx = store.subscribe();
        meta.put(
            TextEncoding::Wrapped.encode("f.proto"),
            TextEncoding::Wrapped.encode("package f; message F {}"),
            FOREVER,
        )
        .await
        .unwrap();
        // Pushes the schema's change out of the 16-event buffer before the follower runs.
        for i in 0..40 {
            other
                .put(
                    Bytes::from(format!("k{i}")),
                    Bytes::from_static(b"v"),
                    FOREVER,
                )
                .await
                .unwrap();
        }
        let follower = tokio::spawn(follow_changes(state.clone(), store.clone(), rx));
        eventually(&state, "f.F registered after the lag", |s| {
            s.message("f.F").is_some()
        })
        .await;
        follower.abort();
        store.shutdown().await;
    }

    #[test]
    fn text_decoding() {
        assert_eq!(
            decode_text(&[0x4A, 0x03, b'a', b'b', b'c']),
            Some(("abc".into(), TextEncoding::Wrapped))
        );
        assert_eq!(
            decode_text(b"abc"),
            Some(("abc".into(), TextEncoding::Plain))
        );
        assert_eq!(decode_text(&[0xFF]), None);
    }
}
