//! One module per group of commands. `dispatch` turns a decoded frame into either an immediate
//! response (reads, answered from memory) or a future that completes once the write committed.

mod admin;
mod bulk;
mod iteration;
mod keyed;
mod listener;
mod ping;
pub mod query;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ferrod_codec::{
    flags, op, status, EntryMetadata, Expiration as WireExpiration, Expiry as WireExpiry,
    PreviousValue, Request, RequestFrame, RequestHeader, Response, ResponseBody,
};
use ferrod_store::{EntrySnapshot, Expiration, Expiry, StoreError};

use crate::context::{now_ms, ServerContext};
use crate::schemas;

pub use iteration::Iterations;
pub use stream::Streams;

pub type WriteFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

pub enum Action {
    Respond(Response),
    /// Several frames in order (initial-state events before the ADD_CLIENT_LISTENER response),
    /// then, once they are queued, the listener's held live events are released.
    Frames(
        Vec<ferrod_codec::Outbound>,
        Option<std::sync::Arc<crate::listeners::Listener>>,
    ),
    /// A write: its SQL transaction commits before the future completes.
    Write(WriteFuture),
}

/// Per-connection state some commands keep (open iterations and streams die with the connection).
#[derive(Default)]
pub struct ConnectionState {
    pub iterations: Iterations,
    pub streams: Streams,
    /// Unique within the process; listeners remember which connection registered them.
    pub connection_id: u64,
    /// Where listener events for this connection go; `None` only in tests without listeners.
    pub event_sink: Option<crate::listeners::EventSink>,
    pub listener_count: usize,
    /// SASL exchange and authenticated identity. Its `peer_identity` is the verified TLS client
    /// certificate's user name (`tls::PeerIdentity::user_name`), which SASL EXTERNAL authenticates
    /// as; `None` for plain connections and TLS without a client certificate.
    pub auth: crate::auth::Session,
}

/// Whether a request must first see every earlier write of its connection committed. Writes are
/// submitted in arrival order and the store keeps that order, so only non-writes wait.
pub fn waits_for_earlier_writes(req: &Request) -> bool {
    !is_write(req)
}

fn is_write(req: &Request) -> bool {
    matches!(
        req,
        Request::Put { .. }
            | Request::PutIfAbsent { .. }
            | Request::Replace { .. }
            | Request::ReplaceIfUnmodified { .. }
            | Request::Remove { .. }
            | Request::RemoveIfUnmodified { .. }
            | Request::PutAll { .. }
            | Request::Clear
            | Request::Exec { .. }
            | Request::PutStream { .. }
            | Request::NextPutStream {
                last_chunk: true,
                ..
            }
    )
}

pub fn dispatch(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    frame: RequestFrame,
) -> Action {
    // Authentication and authorization come before anything else looks at the request.
    if let Some(auth) = &ctx.auth {
        if let Err(refused) = auth.check(&state.auth, &frame.header, &frame.request) {
            return Action::Respond(*refused);
        }
    }
    if !schemas::is_metadata_write(&frame.header, &frame.request) {
        return dispatch_request(ctx, state, frame);
    }
    // A write to ___protobuf_metadata: validated as Infinispan does, and answered only once
    // this replica's registry and the `.errors` keys reflect it.
    if let Err(resp) = schemas::check_write(&frame.header, &frame.request) {
        return Action::Respond(*resp);
    }
    let encoding = schemas::request_encoding(&frame.request);
    match dispatch_request(ctx, state, frame) {
        Action::Write(write) => {
            let ctx = ctx.clone();
            Action::Write(Box::pin(async move {
                let response = write.await;
                schemas::after_write(&ctx.schema_state, &ctx.store, encoding, response).await
            }))
        }
        other => other,
    }
}

fn dispatch_request(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    frame: RequestFrame,
) -> Action {
    let RequestFrame { header, request } = frame;
    if let Some(resp) = oversized_key(ctx, &header, &request) {
        return Action::Respond(resp);
    }
    match request {
        Request::Ping => Action::Respond(ping::ping(ctx, &header)),
        Request::Get { key } => read(ctx, header, key, keyed::get),
        Request::GetWithVersion { key } => read(ctx, header, key, keyed::get_with_version),
        Request::GetWithMetadata { key } => read(ctx, header, key, keyed::get_with_metadata),
        Request::ContainsKey { key } => read(ctx, header, key, keyed::contains_key),
        Request::Put {
            key,
            expiration,
            value,
        } => keyed::put(ctx, header, key, expiration, value),
        Request::PutIfAbsent {
            key,
            expiration,
            value,
        } => keyed::put_if_absent(ctx, header, key, expiration, value),
        Request::Replace {
            key,
            expiration,
            value,
        } => keyed::replace(ctx, header, key, expiration, value),
        Request::ReplaceIfUnmodified {
            key,
            expiration,
            version,
            value,
        } => keyed::replace_if_unmodified(ctx, header, key, expiration, version, value),
        Request::Remove { key } => keyed::remove(ctx, header, key),
        Request::RemoveIfUnmodified { key, version } => {
            keyed::remove_if_unmodified(ctx, header, key, version)
        }
        Request::Clear => admin::clear(ctx, header),
        Request::Size => respond(admin::size(ctx, &header)),
        Request::Stats => respond(admin::stats(ctx, &header)),
        Request::Exec { task, params } => admin::exec(ctx, header, task, params),
        Request::AuthMechList => Action::Respond(match &ctx.auth {
            Some(auth) => auth.mech_list(&state.auth, &header),
            None => Response::new(
                header.message_id,
                op::AUTH_MECH_LIST,
                status::SUCCESS,
                ResponseBody::AuthMechs(Vec::new()),
            ),
        }),
        Request::Auth {
            mechanism,
            response,
        } => Action::Respond(match &ctx.auth {
            Some(auth) => auth.auth(
                &mut state.auth,
                &header,
                &mechanism,
                &response,
                state.connection_id,
            ),
            None => Response::error(
                header.message_id,
                status::SERVER_ERROR,
                "authentication is not enabled on this server",
            ),
        }),
        Request::BulkGet { count } => respond(bulk::bulk_get(ctx, &header, count)),
        Request::BulkGetKeys { .. } => respond(bulk::bulk_get_keys(ctx, &header)),
        Request::GetAll { keys } => respond(bulk::get_all(ctx, &header, &keys)),
        Request::PutAll {
            expiration,
            entries,
        } => bulk::put_all(ctx, header, expiration, entries),
        Request::IterationStart {
            segments,
            filter_converter,
            batch_size,
            include_metadata,
        } => Action::Respond(iteration::start(
            ctx,
            state,
            &header,
            segments,
            filter_converter,
            batch_size,
            include_metadata,
        )),
        Request::IterationNext { iteration_id } => {
            Action::Respond(iteration::next(state, &header, &iteration_id))
        }
        Request::IterationEnd { iteration_id } => {
            Action::Respond(iteration::end(state, &header, &iteration_id))
        }
        Request::GetStream { key, offset } => {
            respond(stream::get_stream(ctx, &header, &key, offset))
        }
        Request::PutStream {
            key,
            expiration,
            version,
            value,
        } => stream::put_stream(ctx, header, key, expiration, version, value),
        Request::StartGetStream { key, batch_size } => {
            respond(stream::start_get(ctx, state, &header, &key, batch_size))
        }
        Request::NextGetStream { stream_id } => {
            Action::Respond(stream::next_get(state, &header, stream_id))
        }
        Request::EndGetStream { stream_id } => {
            Action::Respond(stream::end_get(state, &header, stream_id))
        }
        Request::StartPutStream {
            key,
            expiration,
            version,
        } => respond(stream::start_put(
            ctx, state, &header, key, expiration, version,
        )),
        Request::NextPutStream {
            stream_id,
            last_chunk,
            chunk,
        } => stream::next_put(ctx, state, header, stream_id, last_chunk, chunk),
        Request::EndPutStream { stream_id } => {
            Action::Respond(stream::end_put(state, &header, stream_id))
        }
        Request::Query { query } => query::query(ctx, &state.auth, header, query),
        Request::AddClientListener {
            listener_id,
            include_current_state,
            filter,
            converter,
            use_raw_data,
            interests,
        } => {
            let req = listener::AddListener {
                listener_id,
                include_current_state,
                filter,
                converter,
                use_raw_data,
                interests,
            };
            let (frames, release) = listener::add(ctx, state, &header, req);
            Action::Frames(frames, release)
        }
        Request::RemoveClientListener { listener_id } => {
            Action::Respond(listener::remove(ctx, state, &header, &listener_id))
        }
        other => Action::Respond(unsupported(&header, other.opcode())),
    }
}

fn respond(r: Result<Response, Box<Response>>) -> Action {
    Action::Respond(r.unwrap_or_else(|e| *e))
}

type KeyRead = fn(&Arc<ServerContext>, &RequestHeader, &[u8]) -> Result<Response, Box<Response>>;

/// A keyed read, answered from memory. With replicas sharing PostgreSQL a miss is not trusted
/// (DESIGN decision 4): another replica's write reaches memory only after the feed's lag, so a
/// client that wrote through replica A and reads through replica B (round robin over replica
/// addresses, or a Service spreading its connections) would not find what it just wrote. The
/// row is read from SQL first (which brings memory up to date) and the read answered again.
/// If SQL cannot be read, memory's answer stands: reads keep being served during an outage.
fn read(
    ctx: &Arc<ServerContext>,
    header: RequestHeader,
    key: bytes::Bytes,
    answer: KeyRead,
) -> Action {
    let first = answer(ctx, &header, &key);
    let miss = matches!(&first, Ok(r) if r.header.status == status::KEY_DOES_NOT_EXIST);
    if !miss || ctx.store.is_sqlite() {
        return respond(first);
    }
    let Ok(cache) = ctx.cache(&header) else {
        return respond(first);
    };
    let ctx = ctx.clone();
    Action::Write(Box::pin(async move {
        match cache.get_fresh(&key).await {
            Ok(None) => first.unwrap_or_else(|e| *e),
            Ok(Some(_)) => answer(&ctx, &header, &key).unwrap_or_else(|e| *e),
            Err(e) => {
                tracing::debug!("read-through after a miss failed, answering from memory: {e}");
                first.unwrap_or_else(|e| *e)
            }
        }
    }))
}

/// A decoded op this server does not serve: a clear error, and the connection stays usable.
pub fn unsupported(header: &RequestHeader, opcode: u8) -> Response {
    Response::error(
        header.message_id,
        status::SERVER_ERROR,
        format!(
            "operation {} (0x{opcode:02X}) is not supported by ferrod",
            op::name(opcode)
        ),
    )
}

pub fn store_error(header: &RequestHeader, e: StoreError) -> Response {
    let st = match e {
        StoreError::CacheNotFound(_) => return crate::context::cache_not_found(header),
        StoreError::Closed => status::ILLEGAL_LIFECYCLE_STATE,
        _ => status::SERVER_ERROR,
    };
    Response::error(header.message_id, st, e.to_string())
}

/// The store's expiration from the wire's, with the per-version rules applied.
pub fn expiration(header: &RequestHeader, e: &WireExpiration) -> Expiration {
    let conv = |x: WireExpiry| match x {
        WireExpiry::Default => Expiry::Default,
        WireExpiry::Infinite => Expiry::Infinite,
        WireExpiry::Millis(ms) => Expiry::Millis(ms),
    };
    let (l, m) = e.resolve(header.version, header.flags, now_ms());
    Expiration::new(conv(l), conv(m))
}

/// HotRod metadata of an entry: lifespan and max-idle in whole seconds, timestamps in epoch ms.
pub fn metadata(e: &EntrySnapshot) -> EntryMetadata {
    EntryMetadata {
        lifespan: (e.lifespan_ms > 0).then(|| {
            (
                e.created_ms,
                (e.lifespan_ms / 1000).min(u32::MAX as i64) as u32,
            )
        }),
        max_idle: (e.max_idle_ms > 0).then(|| {
            (
                e.last_used_ms,
                (e.max_idle_ms / 1000).min(u32::MAX as i64) as u32,
            )
        }),
        version: e.version,
    }
}

pub fn previous(e: EntrySnapshot) -> PreviousValue {
    PreviousValue {
        metadata: metadata(&e),
        value: e.value,
    }
}

pub fn force_return(header: &RequestHeader) -> bool {
    header.has_flag(flags::FORCE_RETURN_VALUE)
}

pub fn status_only(header: &RequestHeader, st: u8) -> Response {
    Response::new(header.message_id, header.opcode, st, ResponseBody::Empty)
}

/// The keys a request names, for the key-size limit.
fn request_keys(req: &Request) -> Box<dyn Iterator<Item = &Bytes> + '_> {
    match req {
        Request::Get { key }
        | Request::GetWithVersion { key }
        | Request::GetWithMetadata { key }
        | Request::ContainsKey { key }
        | Request::Put { key, .. }
        | Request::PutIfAbsent { key, .. }
        | Request::Replace { key, .. }
        | Request::ReplaceIfUnmodified { key, .. }
        | Request::Remove { key }
        | Request::RemoveIfUnmodified { key, .. }
        | Request::GetStream { key, .. }
        | Request::PutStream { key, .. }
        | Request::StartPutStream { key, .. }
        | Request::StartGetStream { key, .. } => Box::new(std::iter::once(key)),
        Request::GetAll { keys } => Box::new(keys.iter()),
        Request::PutAll { entries, .. } => Box::new(entries.iter().map(|(k, _)| k)),
        _ => Box::new(std::iter::empty()),
    }
}

/// A request naming a key longer than `max_key_bytes` is refused before it reaches a cache,
/// reads included: no such key can have been stored under the current limit.
fn oversized_key(ctx: &ServerContext, header: &RequestHeader, req: &Request) -> Option<Response> {
    let max = ctx.config.max_key_bytes;
    let len = request_keys(req).map(Bytes::len).find(|len| *len > max)?;
    Some(Response::error(
        header.message_id,
        status::SERVER_ERROR,
        format!("key of {len} bytes exceeds the maximum of {max} bytes (max_key_bytes)"),
    ))
}

/// The reference's value limit is per value; keys are bounded by the same number.
pub fn check_size(
    ctx: &ServerContext,
    header: &RequestHeader,
    parts: &[&[u8]],
) -> Result<(), Box<Response>> {
    let max = ctx.config.max_value_bytes;
    for p in parts {
        if p.len() > max {
            return Err(Box::new(Response::error(
                header.message_id,
                status::SERVER_ERROR,
                format!(
                    "value of {} bytes exceeds the maximum of {max} bytes",
                    p.len()
                ),
            )));
        }
    }
    Ok(())
}
