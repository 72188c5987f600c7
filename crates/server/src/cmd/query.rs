//! QUERY (0x1F): an Ickle query or DELETE statement in a protobuf `QueryRequest`, answered
//! with a protobuf `QueryResponse` (both unwrapped, package
//! `org.infinispan.query.remote.client`, as the Java client's default QuerySerializer sends
//! and reads them).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrod_codec::{status, RequestHeader, Response, ResponseBody};
use ferrod_query::ickle::{self, IckleError, Paging, QueryRows, Value};
use ferrod_query::schema::Schemas;
use ferrod_query::wrapped::{self, WrappedValue};
use ferrod_store::VersionedOutcome;
use prost::Message;

use super::Action;
use crate::context::ServerContext;

/// Infinispan's `query.default-max-results`: rows returned when the request sets no limit
/// (the hit count still counts every match).
pub const DEFAULT_MAX_RESULTS: u64 = 100;

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRequest {
    #[prost(string, optional, tag = "1")]
    pub query_string: Option<String>,
    #[prost(int64, optional, tag = "3")]
    pub start_offset: Option<i64>,
    #[prost(int32, optional, tag = "4")]
    pub max_results: Option<i32>,
    #[prost(message, repeated, tag = "5")]
    pub named_parameters: Vec<NamedParameter>,
    #[prost(bool, optional, tag = "6")]
    pub local: Option<bool>,
    #[prost(int32, optional, tag = "7")]
    pub hit_count_accuracy: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedParameter {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// A WrappedMessage, embedded.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub value: Option<Bytes>,
}

/// Every scalar is proto2 `required`, so it is on the wire even when zero: Infinispan always
/// writes them, and readers rely on it (the npm client's protobufjs decoder rejects a response
/// without numResults, projectionSize or field 4 as "missing required").
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResponse {
    #[prost(int32, required, tag = "1")]
    pub num_results: i32,
    #[prost(int32, required, tag = "2")]
    pub projection_size: i32,
    /// WrappedMessages, embedded.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub results: Vec<Bytes>,
    #[prost(int32, required, tag = "4")]
    pub hit_count: i32,
    #[prost(bool, required, tag = "5")]
    pub hit_count_exact: bool,
}

fn error(h: &RequestHeader, msg: impl Into<String>) -> Response {
    Response::error(h.message_id, status::SERVER_ERROR, msg.into())
}

fn query_error(h: &RequestHeader, query: &str, e: &IckleError) -> Response {
    error(
        h,
        format!("org.infinispan.objectfilter.ParsingException: {e} (query: {query})"),
    )
}

pub fn query(
    ctx: &Arc<ServerContext>,
    session: &crate::auth::Session,
    h: RequestHeader,
    body: Bytes,
) -> Action {
    // The query itself needs BULK_READ (checked in dispatch); an Ickle DELETE also removes, so
    // it needs BULK_WRITE as upstream's query engine demands. Decided now, while the session is
    // at hand; applied once the statement is parsed.
    let delete_refusal = ctx.auth.as_ref().and_then(|auth| {
        auth.permits(
            session,
            &h,
            crate::auth::roles::Permissions::BULK_WRITE,
            false,
        )
        .err()
    });
    let cache = match ctx.cache(&h) {
        Ok(c) => c,
        Err(resp) => return Action::Respond(*resp),
    };
    // The Java client sends a JSON QueryRequest (and expects JSON back) when the request's
    // value media type is application/json; only the protobuf form is served.
    if h.value_type
        .name()
        .is_some_and(|n| n.eq_ignore_ascii_case("application/json"))
    {
        return Action::Respond(error(&h, "QUERY with application/json requests is not supported by ferrod; use application/x-protostream"));
    }
    let request = match QueryRequest::decode(&body[..]) {
        Ok(r) => r,
        Err(e) => return Action::Respond(error(&h, format!("malformed QueryRequest: {e}"))),
    };
    let Some(text) = request.query_string.clone() else {
        return Action::Respond(error(&h, "QueryRequest without a queryString"));
    };
    let ctx = ctx.clone();
    Action::Write(Box::pin(async move {
        // Every change published so far is in the index before the query runs.
        ctx.query.caught_up().await;
        let schemas = ctx.schemas();
        let statement = match ickle::parse(&text) {
            Ok(s) => s,
            Err(e) => return query_error(&h, &text, &e),
        };
        let resolver = |name: &str| schemas.message(name);
        let prepared = match statement.prepare(&resolver) {
            Ok(p) => p,
            Err(e) => return query_error(&h, &text, &e),
        };
        let params = match decode_params(&request.named_parameters, &schemas) {
            Ok(p) => p,
            Err(msg) => return error(&h, msg),
        };
        let bound = match prepared.bind(&params) {
            Ok(b) => b,
            Err(e) => return query_error(&h, &text, &e),
        };
        if prepared.is_delete() {
            if let Some(refused) = delete_refusal {
                return *refused;
            }
            let matched: Vec<(Bytes, i64)> = {
                let guard = ctx.query.index(&cache);
                let alive = |k: &Bytes, _: &crate::query::Stored| cache.contains_key(k);
                guard
                    .index()
                    .matching_keys_where(&bound, &alive)
                    .into_iter()
                    .filter_map(|k| {
                        guard
                            .index()
                            .get(&k)
                            .map(|(_, s)| s.version)
                            .map(|v| (k, v))
                    })
                    .collect()
            };
            // Each removal goes through the store like a client's removeWithVersion: committed
            // to SQL, fed to every replica, events raised. An entry changed since it matched
            // is left alone (it may no longer match).
            let removals = matched
                .into_iter()
                .map(|(k, v)| cache.remove_if_version(k, v));
            let mut removed = 0i32;
            for r in futures::future::join_all(removals).await {
                match r {
                    Ok(VersionedOutcome::Done(_)) => removed += 1,
                    Ok(_) => {}
                    Err(e) => return super::store_error(&h, e),
                }
            }
            ctx.query.caught_up().await;
            return respond(
                &h,
                QueryResponse {
                    num_results: 0,
                    projection_size: 0,
                    results: Vec::new(),
                    hit_count: removed,
                    hit_count_exact: true,
                },
            );
        }
        let paging = Paging {
            start_offset: request.start_offset.unwrap_or(0).max(0) as u64,
            max_results: Some(match request.max_results {
                Some(m) if m >= 0 => m as u64,
                _ => DEFAULT_MAX_RESULTS,
            }),
        };
        let response = {
            let guard = ctx.query.index(&cache);
            let alive = |k: &Bytes, _: &crate::query::Stored| cache.contains_key(k);
            let out = guard.index().execute_where(&bound, paging, &alive);
            let (num_results, results) = match out.rows {
                QueryRows::Entities(rows) => {
                    // The stored value (itself a WrappedMessage) travels as wrappedBytes, which
                    // the client unwraps again.
                    let results = rows
                        .iter()
                        .map(|(_, s)| {
                            Bytes::from(WrappedValue::Bytes(s.value.clone()).encode(&schemas))
                        })
                        .collect();
                    (rows.len(), results)
                }
                QueryRows::Projections(rows) => {
                    let results = rows
                        .iter()
                        .flatten()
                        .map(|v| Bytes::from(wrap(v, &schemas).encode(&schemas)))
                        .collect();
                    (rows.len(), results)
                }
            };
            QueryResponse {
                num_results: num_results as i32,
                projection_size: out.projection_size as i32,
                results,
                hit_count: out.hit_count.min(i32::MAX as u64) as i32,
                hit_count_exact: true,
            }
        };
        respond(&h, response)
    }))
}

fn respond(h: &RequestHeader, r: QueryResponse) -> Response {
    Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::Value(Bytes::from(r.encode_to_vec())),
    )
}

fn decode_params(
    params: &[NamedParameter],
    schemas: &Schemas,
) -> Result<HashMap<String, Value>, String> {
    let mut out = HashMap::new();
    for p in params {
        let name = p.name.clone().ok_or("a named parameter without a name")?;
        let bytes = p.value.clone().unwrap_or_default();
        let value = match wrapped::decode(&bytes, schemas) {
            Ok(v) => unwrap(v).ok_or_else(|| {
                format!("parameter ':{name}': this value type is not supported in queries")
            })?,
            Err(e) => return Err(format!("parameter ':{name}': {e}")),
        };
        out.insert(name, value);
    }
    Ok(out)
}

fn unwrap(v: WrappedValue) -> Option<Value> {
    Some(match v {
        WrappedValue::Null => Value::Null,
        WrappedValue::Double(d) => Value::Double(d),
        WrappedValue::Float(f) => Value::Float(f),
        WrappedValue::Int64(n) | WrappedValue::SFixed64(n) | WrappedValue::SInt64(n) => {
            Value::Int64(n)
        }
        WrappedValue::UInt64(n) | WrappedValue::Fixed64(n) => Value::UInt64(n),
        WrappedValue::Int32(n) | WrappedValue::SFixed32(n) | WrappedValue::SInt32(n) => {
            Value::Int32(n)
        }
        WrappedValue::UInt32(n) | WrappedValue::Fixed32(n) => Value::UInt32(n),
        WrappedValue::Short(n) => Value::Int32(n as i32),
        WrappedValue::Byte(n) => Value::Int32(n as i32),
        WrappedValue::Bool(b) => Value::Bool(b),
        WrappedValue::String(s) => Value::String(s),
        WrappedValue::Bytes(b) => Value::Bytes(b.to_vec()),
        WrappedValue::Enum { descriptor, number } => Value::Enum {
            type_name: Some(descriptor.full_name().to_string()),
            name: descriptor.get_value(number).map(|v| v.name().to_string()),
            number,
        },
        WrappedValue::Char(_)
        | WrappedValue::DateMillis(_)
        | WrappedValue::Instant { .. }
        | WrappedValue::Message(_) => return None,
    })
}

/// A projected value as Infinispan returns it: the Java type of the field, wrapped.
fn wrap(v: &Value, schemas: &Schemas) -> WrappedValue {
    match v {
        Value::Null => WrappedValue::Null,
        Value::Bool(b) => WrappedValue::Bool(*b),
        Value::Int32(n) => WrappedValue::Int32(*n),
        Value::Int64(n) => WrappedValue::Int64(*n),
        // Java has no unsigned types: uint32 is read as an int, uint64 as a long.
        Value::UInt32(n) => WrappedValue::Int32(*n as i32),
        Value::UInt64(n) => WrappedValue::Int64(*n as i64),
        Value::Float(f) => WrappedValue::Float(*f),
        Value::Double(d) => WrappedValue::Double(*d),
        Value::String(s) => WrappedValue::String(s.clone()),
        Value::Bytes(b) => WrappedValue::Bytes(Bytes::from(b.clone())),
        // As ProtoStream wraps a Java enum: its type (id or name) and number.
        Value::Enum {
            type_name, number, ..
        } => match type_name.as_deref().and_then(|t| schemas.enumeration(t)) {
            Some(descriptor) => WrappedValue::Enum {
                descriptor,
                number: *number,
            },
            None => WrappedValue::Int32(*number),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrod_query::schema::SchemaRegistry;

    #[test]
    fn empty_response_still_carries_every_required_field() {
        // A query matching nothing: numResults, projectionSize, hit count and exactness are
        // all on the wire although zero/false (the npm client fails to decode otherwise).
        let empty = QueryResponse {
            num_results: 0,
            projection_size: 0,
            results: Vec::new(),
            hit_count: 0,
            hit_count_exact: false,
        };
        assert_eq!(
            empty.encode_to_vec(),
            vec![0x08, 0x00, 0x10, 0x00, 0x20, 0x00, 0x28, 0x00]
        );
        // DELETE's answer: no rows, no projection, the removed count, exact.
        let deleted = QueryResponse {
            num_results: 0,
            projection_size: 0,
            results: Vec::new(),
            hit_count: 3,
            hit_count_exact: true,
        };
        assert_eq!(
            deleted.encode_to_vec(),
            vec![0x08, 0x00, 0x10, 0x00, 0x20, 0x03, 0x28, 0x01]
        );
    }

    #[test]
    fn projections_wrap_as_the_java_server_does() {
        let mut registry = SchemaRegistry::new();
        registry.put_file(
            "e.proto",
            "syntax = \"proto3\";\npackage t;\n/** @TypeId(70001) */\nenum State { ALIVE = 0; GONE = 1; }\n",
        );
        let schemas = registry.schemas();
        let state = Value::Enum {
            type_name: Some("t.State".into()),
            name: Some("GONE".into()),
            number: 1,
        };
        match wrap(&state, &schemas) {
            WrappedValue::Enum { descriptor, number } => {
                assert_eq!((descriptor.full_name(), number), ("t.State", 1));
            }
            other => panic!("enum projection wrapped as {other:?}"),
        }
        // The enum's @TypeId goes on the wire (field 19), then the number (field 18).
        assert_eq!(
            wrap(&state, &schemas).encode(&schemas),
            vec![0x98, 0x01, 0xF1, 0xA2, 0x04, 0x90, 0x01, 0x01]
        );
        let unknown = Value::Enum {
            type_name: Some("t.Nope".into()),
            name: None,
            number: 3,
        };
        assert_eq!(wrap(&unknown, &schemas), WrappedValue::Int32(3));
        assert_eq!(
            wrap(&Value::UInt32(u32::MAX), &schemas),
            WrappedValue::Int32(-1)
        );
        assert_eq!(
            wrap(&Value::Null, &schemas).encode(&schemas),
            Vec::<u8>::new()
        );
    }
}
