//! BULK_GET, BULK_GET_KEYS, GET_ALL and PUT_ALL.

use std::sync::Arc;

use bytes::Bytes;
use ferrod_codec::{status, Expiration as WireExpiration, RequestHeader, Response, ResponseBody};

use super::{check_size, expiration, status_only, store_error, Action};
use crate::context::ServerContext;

type Reply = Result<Response, Box<Response>>;

/// `count` 0 means every entry.
pub fn bulk_get(ctx: &Arc<ServerContext>, h: &RequestHeader, count: u32) -> Reply {
    let cache = ctx.cache(h)?;
    let limit = if count == 0 {
        usize::MAX
    } else {
        count as usize
    };
    let entries: Vec<(Bytes, Bytes)> = cache
        .keys()
        .into_iter()
        .filter_map(|k| cache.peek(&k).map(|e| (k, e.value)))
        .take(limit)
        .collect();
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::BulkGet(entries),
    ))
}

pub fn bulk_get_keys(ctx: &Arc<ServerContext>, h: &RequestHeader) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::BulkGetKeys(cache.keys()),
    ))
}

/// Only the keys found are returned.
pub fn get_all(ctx: &Arc<ServerContext>, h: &RequestHeader, keys: &[Bytes]) -> Reply {
    let cache = ctx.cache(h)?;
    let entries = keys
        .iter()
        .filter_map(|k| cache.get(k).map(|e| (k.clone(), e.value)))
        .collect();
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::GetAll(entries),
    ))
}

pub fn put_all(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    exp: WireExpiration,
    entries: Vec<(Bytes, Bytes)>,
) -> Action {
    let cache = match ctx.cache(&h) {
        Ok(c) => c,
        Err(resp) => return Action::Respond(*resp),
    };
    for (k, v) in &entries {
        if let Err(resp) = check_size(ctx, &h, &[k, v]) {
            return Action::Respond(*resp);
        }
    }
    Action::Write(Box::pin(async move {
        match cache.put_all(entries, expiration(&h, &exp)).await {
            Ok(()) => status_only(&h, status::SUCCESS),
            Err(e) => store_error(&h, e),
        }
    }))
}
