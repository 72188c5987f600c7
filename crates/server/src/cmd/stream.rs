//! Streaming values: GET_STREAM/PUT_STREAM (2.6) and the chunked 4.1 operations (0xE4-0xEF).
//! 4.1 streams are per-connection state, valid only on the connection that opened them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferrod_codec::{status, Expiration as WireExpiration, RequestHeader, Response, ResponseBody};
use ferrod_store::{Cache, Expiration, PutIfAbsentOutcome, VersionedOutcome};

use super::{check_size, expiration, metadata, status_only, store_error, Action, ConnectionState};
use crate::context::ServerContext;

type Reply = Result<Response, Box<Response>>;

/// Open streams per connection, so a client cannot pin unbounded memory.
pub const MAX_OPEN_STREAMS: usize = 64;

struct GetStream {
    value: Bytes,
    offset: usize,
    batch_size: usize,
}

struct PutStream {
    cache: Cache,
    key: Bytes,
    expiration: Expiration,
    version: i64,
    value: BytesMut,
}

#[derive(Default)]
pub struct Streams {
    next_id: i32,
    gets: HashMap<i32, GetStream>,
    puts: HashMap<i32, PutStream>,
}

impl Streams {
    fn allocate(&mut self, h: &RequestHeader) -> Result<i32, Box<Response>> {
        if self.gets.len() + self.puts.len() >= MAX_OPEN_STREAMS {
            return Err(Box::new(Response::error(
                h.message_id,
                status::SERVER_ERROR,
                format!("too many open streams on this connection (limit {MAX_OPEN_STREAMS})"),
            )));
        }
        self.next_id = self.next_id.wrapping_add(1);
        Ok(self.next_id)
    }
}

fn unknown_stream(h: &RequestHeader, id: i32) -> Response {
    Response::error(
        h.message_id,
        status::SERVER_ERROR,
        format!("unknown stream id {id} on this connection"),
    )
}

/// 2.6 GET_STREAM: metadata plus the value from `offset`.
pub fn get_stream(ctx: &Arc<ServerContext>, h: &RequestHeader, key: &[u8], offset: u32) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(match cache.get(key) {
        Some(e) => {
            let start = (offset as usize).min(e.value.len());
            let value = e.value.slice(start..);
            Response::new(
                h.message_id,
                h.opcode,
                status::SUCCESS,
                ResponseBody::WithMetadata {
                    metadata: metadata(&e),
                    value,
                },
            )
        }
        None => status_only(h, status::KEY_DOES_NOT_EXIST),
    })
}

/// The write a completed put stream performs: version 0 = put, -1 = putIfAbsent,
/// anything else = replace-if-unmodified (reference §8).
fn finish_put(
    cache: Cache,
    h: RequestHeader,
    key: Bytes,
    value: Bytes,
    exp: Expiration,
    version: i64,
) -> Action {
    Action::Write(Box::pin(async move {
        let st = match version {
            0 => cache.put(key, value, exp).await.map(|_| status::SUCCESS),
            -1 => cache.put_if_absent(key, value, exp).await.map(|o| match o {
                PutIfAbsentOutcome::Stored => status::SUCCESS,
                PutIfAbsentOutcome::Present(_) => status::NOT_EXECUTED,
            }),
            v => cache
                .replace_if_version(key, v, value, exp)
                .await
                .map(|o| match o {
                    VersionedOutcome::Done(_) => status::SUCCESS,
                    VersionedOutcome::Mismatch(_) => status::NOT_EXECUTED,
                    VersionedOutcome::Missing => status::KEY_DOES_NOT_EXIST,
                }),
        };
        match st {
            Ok(st) => status_only(&h, st),
            Err(e) => store_error(&h, e),
        }
    }))
}

pub fn put_stream(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    key: Bytes,
    exp: WireExpiration,
    version: i64,
    value: Bytes,
) -> Action {
    let cache = match ctx
        .cache(&h)
        .and_then(|c| check_size(ctx, &h, &[&key, &value]).map(|_| c))
    {
        Ok(c) => c,
        Err(resp) => return Action::Respond(*resp),
    };
    let exp = expiration(&h, &exp);
    finish_put(cache, h, key, value, exp, version)
}

pub fn start_get(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    h: &RequestHeader,
    key: &[u8],
    batch: u32,
) -> Reply {
    let cache = ctx.cache(h)?;
    let Some(e) = cache.get(key) else {
        return Ok(status_only(h, status::KEY_DOES_NOT_EXIST));
    };
    let id = state.streams.allocate(h)?;
    let batch_size = (batch as usize).clamp(1, 8 * 1024 * 1024);
    let end = batch_size.min(e.value.len());
    let chunk = e.value.slice(..end);
    let complete = end == e.value.len();
    if !complete {
        state.streams.gets.insert(
            id,
            GetStream {
                value: e.value.clone(),
                offset: end,
                batch_size,
            },
        );
    }
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::GetStreamChunk {
            stream_id: id,
            complete,
            metadata: Some(metadata(&e)),
            chunk,
        },
    ))
}

pub fn next_get(state: &mut ConnectionState, h: &RequestHeader, id: i32) -> Response {
    let Some(s) = state.streams.gets.get_mut(&id) else {
        return unknown_stream(h, id);
    };
    let end = (s.offset + s.batch_size).min(s.value.len());
    let chunk = s.value.slice(s.offset..end);
    s.offset = end;
    let complete = end == s.value.len();
    if complete {
        state.streams.gets.remove(&id);
    }
    Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::GetStreamChunk {
            stream_id: id,
            complete,
            metadata: None,
            chunk,
        },
    )
}

pub fn end_get(state: &mut ConnectionState, h: &RequestHeader, id: i32) -> Response {
    state.streams.gets.remove(&id);
    status_only(h, status::SUCCESS)
}

pub fn start_put(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    h: &RequestHeader,
    key: Bytes,
    exp: WireExpiration,
    version: i64,
) -> Reply {
    let cache = ctx.cache(h)?;
    check_size(ctx, h, &[&key])?;
    let id = state.streams.allocate(h)?;
    let expiration = expiration(h, &exp);
    state.streams.puts.insert(
        id,
        PutStream {
            cache,
            key,
            expiration,
            version,
            value: BytesMut::new(),
        },
    );
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::StreamId(id),
    ))
}

pub fn next_put(
    ctx: &Arc<ServerContext>,
    state: &mut ConnectionState,
    h: RequestHeader,
    id: i32,
    last: bool,
    chunk: Bytes,
) -> Action {
    let Some(s) = state.streams.puts.get_mut(&id) else {
        return Action::Respond(unknown_stream(&h, id));
    };
    if s.value.len() + chunk.len() > ctx.config.max_value_bytes {
        state.streams.puts.remove(&id);
        return Action::Respond(Response::error(
            h.message_id,
            status::SERVER_ERROR,
            format!(
                "streamed value exceeds the maximum of {} bytes",
                ctx.config.max_value_bytes
            ),
        ));
    }
    s.value.extend_from_slice(&chunk);
    if !last {
        return Action::Respond(status_only(&h, status::SUCCESS));
    }
    let Some(s) = state.streams.puts.remove(&id) else {
        return Action::Respond(unknown_stream(&h, id));
    };
    finish_put(s.cache, h, s.key, s.value.freeze(), s.expiration, s.version)
}

pub fn end_put(state: &mut ConnectionState, h: &RequestHeader, id: i32) -> Response {
    state.streams.puts.remove(&id);
    status_only(h, status::SUCCESS)
}
