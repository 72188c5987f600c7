//! Single-key reads and writes with the status matrix of reference §7.3.

use std::sync::Arc;

use bytes::Bytes;
use ferrod_codec::{status, Expiration as WireExpiration, RequestHeader, Response, ResponseBody};
use ferrod_store::{PutIfAbsentOutcome, RemoveOutcome, ReplaceOutcome, VersionedOutcome};

use super::{
    check_size, expiration, force_return, metadata, previous, status_only, store_error, Action,
};
use crate::context::ServerContext;

type Reply = Result<Response, Box<Response>>;

pub fn get(ctx: &Arc<ServerContext>, h: &RequestHeader, key: &[u8]) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(match cache.get(key) {
        Some(e) => Response::new(
            h.message_id,
            h.opcode,
            status::SUCCESS,
            ResponseBody::Value(e.value),
        ),
        None => status_only(h, status::KEY_DOES_NOT_EXIST),
    })
}

pub fn get_with_version(ctx: &Arc<ServerContext>, h: &RequestHeader, key: &[u8]) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(match cache.get(key) {
        Some(e) => Response::new(
            h.message_id,
            h.opcode,
            status::SUCCESS,
            ResponseBody::Versioned {
                version: e.version,
                value: e.value,
            },
        ),
        None => status_only(h, status::KEY_DOES_NOT_EXIST),
    })
}

pub fn get_with_metadata(ctx: &Arc<ServerContext>, h: &RequestHeader, key: &[u8]) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(match cache.get(key) {
        Some(e) => Response::new(
            h.message_id,
            h.opcode,
            status::SUCCESS,
            ResponseBody::WithMetadata {
                metadata: metadata(&e),
                value: e.value,
            },
        ),
        None => status_only(h, status::KEY_DOES_NOT_EXIST),
    })
}

pub fn contains_key(ctx: &Arc<ServerContext>, h: &RequestHeader, key: &[u8]) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(status_only(
        h,
        if cache.contains_key(key) {
            status::SUCCESS
        } else {
            status::KEY_DOES_NOT_EXIST
        },
    ))
}

/// Validates and looks up the cache synchronously, so errors answer at once and the write is
/// handed to the store in arrival order.
macro_rules! prepare {
    ($ctx:expr, $h:expr, $($part:expr),+) => {
        match $ctx.cache(&$h).and_then(|c| check_size($ctx, &$h, &[$(&$part[..]),+]).map(|_| c)) {
            Ok(c) => c,
            Err(resp) => return Action::Respond(*resp),
        }
    };
}

fn with_previous(h: &RequestHeader, st: u8, prev: Option<ferrod_store::EntrySnapshot>) -> Response {
    let st = if st == status::SUCCESS {
        status::SUCCESS_WITH_PREVIOUS
    } else {
        status::NOT_EXECUTED_WITH_PREVIOUS
    };
    Response::new(
        h.message_id,
        h.opcode,
        st,
        ResponseBody::Previous(prev.map(previous)),
    )
}

/// `st` as the §7.3 matrix answers it: with FORCE_RETURN_VALUE, the entry travels with status
/// 0x03/0x04; without it, the status alone.
fn reply(h: &RequestHeader, st: u8, entry: Option<ferrod_store::EntrySnapshot>) -> Response {
    if force_return(h) {
        with_previous(h, st, entry)
    } else {
        status_only(h, st)
    }
}

pub fn put(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    key: Bytes,
    exp: WireExpiration,
    value: Bytes,
) -> Action {
    let cache = prepare!(ctx, h, key, value);
    Action::Write(Box::pin(async move {
        match cache.put(key, value, expiration(&h, &exp)).await {
            Ok(prev) => reply(&h, status::SUCCESS, prev),
            Err(e) => store_error(&h, e),
        }
    }))
}

pub fn put_if_absent(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    key: Bytes,
    exp: WireExpiration,
    value: Bytes,
) -> Action {
    let cache = prepare!(ctx, h, key, value);
    Action::Write(Box::pin(async move {
        match cache.put_if_absent(key, value, expiration(&h, &exp)).await {
            // Stored: never a body, even with FORCE_RETURN_VALUE.
            Ok(PutIfAbsentOutcome::Stored) => status_only(&h, status::SUCCESS),
            Ok(PutIfAbsentOutcome::Present(cur)) => reply(&h, status::NOT_EXECUTED, Some(cur)),
            Err(e) => store_error(&h, e),
        }
    }))
}

pub fn replace(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    key: Bytes,
    exp: WireExpiration,
    value: Bytes,
) -> Action {
    let cache = prepare!(ctx, h, key, value);
    Action::Write(Box::pin(async move {
        match cache.replace(key, value, expiration(&h, &exp)).await {
            Ok(ReplaceOutcome::Missing) => status_only(&h, status::NOT_EXECUTED),
            Ok(ReplaceOutcome::Replaced(prev)) => reply(&h, status::SUCCESS, Some(prev)),
            Err(e) => store_error(&h, e),
        }
    }))
}

fn versioned(
    h: &RequestHeader,
    outcome: Result<VersionedOutcome, ferrod_store::StoreError>,
) -> Response {
    match outcome {
        Ok(VersionedOutcome::Missing) => status_only(h, status::KEY_DOES_NOT_EXIST),
        Ok(VersionedOutcome::Mismatch(cur)) => reply(h, status::NOT_EXECUTED, Some(cur)),
        Ok(VersionedOutcome::Done(prev)) => reply(h, status::SUCCESS, Some(prev)),
        Err(e) => store_error(h, e),
    }
}

pub fn replace_if_unmodified(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    key: Bytes,
    exp: WireExpiration,
    version: i64,
    value: Bytes,
) -> Action {
    let cache = prepare!(ctx, h, key, value);
    Action::Write(Box::pin(async move {
        versioned(
            &h,
            cache
                .replace_if_version(key, version, value, expiration(&h, &exp))
                .await,
        )
    }))
}

pub fn remove(ctx: &Arc<ServerContext>, h: RequestHeader, key: Bytes) -> Action {
    let cache = prepare!(ctx, h, key);
    Action::Write(Box::pin(async move {
        match cache.remove(key).await {
            Ok(RemoveOutcome::Missing) => status_only(&h, status::KEY_DOES_NOT_EXIST),
            Ok(RemoveOutcome::Removed(prev)) => reply(&h, status::SUCCESS, Some(prev)),
            Err(e) => store_error(&h, e),
        }
    }))
}

pub fn remove_if_unmodified(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    key: Bytes,
    version: i64,
) -> Action {
    let cache = prepare!(ctx, h, key);
    Action::Write(Box::pin(async move {
        versioned(&h, cache.remove_if_version(key, version).await)
    }))
}
