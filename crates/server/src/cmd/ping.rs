//! PING (§9.1): also the handshake through which clients learn the version and media types.

use std::sync::Arc;

use ferrod_codec::{status, MediaType, PingInfo, RequestHeader, Response, ResponseBody};

use crate::context::{cache_not_found, ServerContext, SERVED_OPERATIONS, SERVER_PROTOCOL_VERSION};

pub fn ping(ctx: &Arc<ServerContext>, header: &RequestHeader) -> Response {
    let (key_type, value_type) = match ctx.cache(header) {
        Ok(cache) => {
            let def = cache.def();
            (
                MediaType::from_name(&def.key_media_type),
                MediaType::from_name(&def.value_media_type),
            )
        }
        Err(_) if header.cache_name.is_empty() => (MediaType::Unspecified, MediaType::Unspecified),
        Err(_) => return cache_not_found(header),
    };
    let info = PingInfo {
        key_type,
        value_type,
        server_version: SERVER_PROTOCOL_VERSION,
        operations: SERVED_OPERATIONS.to_vec(),
    };
    Response::new(
        header.message_id,
        header.opcode,
        status::SUCCESS,
        ResponseBody::Ping(info),
    )
}
