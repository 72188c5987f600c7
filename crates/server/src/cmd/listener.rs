//! ADD_CLIENT_LISTENER / REMOVE_CLIENT_LISTENER (reference §10).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferrod_codec::{status, EventKind, Factory, Outbound, RequestHeader, Response};

use super::{status_only, ConnectionState};
use crate::context::{cache_name, ServerContext};
use crate::listeners::{Converter, InitialState, Listener};

pub struct AddListener {
    pub listener_id: Bytes,
    pub include_current_state: bool,
    pub filter: Option<Factory>,
    pub converter: Option<Factory>,
    pub use_raw_data: bool,
    pub interests: u32,
}

/// Registers the listener and returns the initial-state events (sent before the response, with
/// the request's message id) followed by the response, and, for an includeCurrentState
/// listener, the listener whose held live events the connection releases once those frames
/// are queued (`Listener::release_held`).
pub fn add(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    h: &RequestHeader,
    req: AddListener,
) -> (Vec<Outbound>, Option<Arc<Listener>>) {
    let version = h.version;
    let respond = |response: Response| (vec![Outbound::Response { response, version }], None);
    let cache = match ctx.cache(h) {
        Ok(c) => c,
        Err(resp) => return respond(*resp),
    };
    if let Some(f) = &req.filter {
        return respond(Response::error(
            h.message_id,
            status::SERVER_ERROR,
            format!(
                "unknown filter factory '{}': ferrod serves no server-side filters",
                f.name
            ),
        ));
    }
    let converter = match &req.converter {
        None => Converter::None,
        Some(f) => match Converter::by_name(&f.name, &cache.def().value_media_type) {
            Some(c) => c,
            None => {
                return respond(Response::error(
                    h.message_id,
                    status::SERVER_ERROR,
                    format!("unknown converter factory '{}'", f.name),
                ))
            }
        },
    };
    let Some(sink) = state.event_sink.clone() else {
        return respond(Response::error(
            h.message_id,
            status::SERVER_ERROR,
            "listeners are not available",
        ));
    };
    let include_state = req.include_current_state;
    let listener = Listener {
        id: req.listener_id.clone(),
        cache: cache_name(h).to_string(),
        interests: req.interests,
        converter,
        use_raw_data: req.use_raw_data,
        sink,
        connection_id: state.connection_id,
        initial: None,
    };
    let wants_state = include_state && listener.wants(EventKind::Created);
    let listener = Listener {
        initial: wants_state.then(|| Mutex::new(InitialState::holding())),
        ..listener
    };
    // Registered before the snapshot (holding its live events), so no change can fall between
    // the two; see `InitialState`.
    let Some(listener) = ctx.listeners.add(listener) else {
        return respond(Response::error(
            h.message_id,
            status::SERVER_ERROR,
            "a listener with this id is already registered on this cache",
        ));
    };
    let mut out = Vec::new();
    if wants_state {
        for key in cache.keys() {
            if let Some(e) = cache.peek(&key) {
                out.push(Outbound::Event(listener.initial_event(
                    h.message_id,
                    &key,
                    &e,
                )));
            }
        }
    }
    state.listener_count += 1;
    out.push(Outbound::Response {
        response: status_only(h, status::SUCCESS),
        version,
    });
    (out, wants_state.then_some(listener))
}

pub fn remove(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    h: &RequestHeader,
    id: &[u8],
) -> Response {
    if ctx.listeners.remove(cache_name(h), id, state.connection_id) {
        state.listener_count = state.listener_count.saturating_sub(1);
        status_only(h, status::SUCCESS)
    } else {
        status_only(h, status::NOT_EXECUTED)
    }
}
