//! ITERATION_START / NEXT / END (reference §11). An iteration walks a snapshot of the keys taken at
//! start; entries removed meanwhile are skipped, values are read when their batch is sent.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrod_codec::{status, Factory, IterationEntry, RequestHeader, Response, ResponseBody};
use ferrod_store::Cache;

use super::{metadata, status_only, ConnectionState};
use crate::context::ServerContext;

/// The converter the Java client uses for `keySet()`: values come back empty.
pub const EMPTY_VALUE_CONVERTER: &str =
    "org.infinispan.server.hotrod.HotRodServer$ToEmptyBytesKeyValueFilterConverter";

pub struct Iteration {
    cache: Cache,
    keys: Vec<Bytes>,
    position: usize,
    batch_size: usize,
    include_metadata: bool,
    empty_values: bool,
}

#[derive(Default)]
pub struct Iterations {
    open: HashMap<String, Iteration>,
}

pub fn start(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    h: &RequestHeader,
    segments: Option<Bytes>,
    filter_converter: Option<Factory>,
    batch_size: u32,
    include_metadata: bool,
) -> Response {
    let cache = match ctx.cache(h) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let empty_values = match &filter_converter {
        None => false,
        Some(f) if f.name == EMPTY_VALUE_CONVERTER => true,
        Some(f) => {
            return Response::error(
                h.message_id,
                status::SERVER_ERROR,
                format!("unknown filter/converter factory '{}'", f.name),
            )
        }
    };
    // Each open iteration holds a snapshot of its cache's keys: a client that leaks iterators
    // must not grow memory without bound.
    let limit = ctx.config.max_iterations_per_connection;
    if state.iterations.open.len() >= limit {
        return Response::error(
            h.message_id,
            status::SERVER_ERROR,
            format!(
                "too many open iterations on this connection (limit {limit}, \
                 max_iterations_per_connection): end one before starting another"
            ),
        );
    }
    // A ferrod cache is not segmented: every key is in segment 0, as in an Infinispan local
    // cache. A segment mask without segment 0 therefore selects nothing.
    let keys = match segments {
        Some(mask) if mask.first().map(|b| b & 1 == 0).unwrap_or(true) => Vec::new(),
        _ => cache.keys(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    state.iterations.open.insert(
        id.clone(),
        Iteration {
            cache,
            keys,
            position: 0,
            batch_size: batch_size.clamp(1, 100_000) as usize,
            include_metadata,
            empty_values,
        },
    );
    Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::IterationId(id),
    )
}

pub fn next(state: &mut ConnectionState, h: &RequestHeader, id: &str) -> Response {
    let Some(it) = state.iterations.open.get_mut(id) else {
        return status_only(h, status::INVALID_ITERATION);
    };
    let mut entries = Vec::with_capacity(it.batch_size.min(it.keys.len()));
    while entries.len() < it.batch_size && it.position < it.keys.len() {
        let key = it.keys[it.position].clone();
        it.position += 1;
        let Some(e) = it.cache.peek(&key) else {
            continue;
        };
        entries.push(IterationEntry {
            metadata: it.include_metadata.then(|| metadata(&e)),
            key,
            values: vec![if it.empty_values {
                Bytes::new()
            } else {
                e.value
            }],
        });
    }
    // The end is a batch with no entries.
    Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::IterationBatch {
            finished_segments: Bytes::new(),
            projection_count: 1,
            entries,
        },
    )
}

pub fn end(state: &mut ConnectionState, h: &RequestHeader, id: &str) -> Response {
    match state.iterations.open.remove(id) {
        Some(_) => status_only(h, status::SUCCESS),
        None => status_only(h, status::INVALID_ITERATION),
    }
}
