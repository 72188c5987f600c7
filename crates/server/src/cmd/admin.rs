//! CLEAR, SIZE, STATS and EXEC with the admin tasks clients call (reference §14).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use ferrod_codec::{status, RequestHeader, Response, ResponseBody};

use super::{status_only, store_error, Action};
use crate::cache_config;
use crate::context::{now_ms, ServerContext};

type Reply = Result<Response, Box<Response>>;

pub fn clear(ctx: &Arc<ServerContext>, h: RequestHeader) -> Action {
    let cache = match ctx.cache(&h) {
        Ok(c) => c,
        Err(resp) => return Action::Respond(*resp),
    };
    Action::Write(Box::pin(async move {
        match cache.clear().await {
            // The store publishes the CLEAR to the query index (and the schema registry) as
            // it does other replicas' CLEARs; a query waits until it is applied.
            Ok(()) => status_only(&h, status::SUCCESS),
            Err(e) => store_error(&h, e),
        }
    }))
}

pub fn size(ctx: &Arc<ServerContext>, h: &RequestHeader) -> Reply {
    let cache = ctx.cache(h)?;
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::Size(cache.size()),
    ))
}

pub fn stats(ctx: &Arc<ServerContext>, h: &RequestHeader) -> Reply {
    let cache = ctx.cache(h)?;
    let s = cache.stats();
    let m = ctx.store.metrics();
    let entries = cache.size().to_string();
    let stats = vec![
        (
            "timeSinceStart",
            ((now_ms() - ctx.started_ms) / 1000).to_string(),
        ),
        ("currentNumberOfEntries", entries.clone()),
        ("stores", s.stores.to_string()),
        ("retrievals", s.retrievals.to_string()),
        ("hits", s.hits.to_string()),
        ("misses", s.misses.to_string()),
        ("removeHits", s.remove_hits.to_string()),
        ("removeMisses", s.remove_misses.to_string()),
        ("approximateEntries", entries.clone()),
        ("approximateEntriesUnique", entries),
        (
            "totalBytesRead",
            ctx.bytes_read.load(Ordering::Relaxed).to_string(),
        ),
        (
            "totalBytesWritten",
            ctx.bytes_written.load(Ordering::Relaxed).to_string(),
        ),
        // ferrod's own (whole server, not per cache): how writes reach SQL. Group commit shows as
        // far fewer transactions than ops.
        (
            "sqlTransactionsCommitted",
            m.transactions_committed.to_string(),
        ),
        ("sqlTransactionsFailed", m.transactions_failed.to_string()),
        ("sqlOpsCommitted", m.ops_committed.to_string()),
        // Entities in this replica's query index of the cache (0 until the cache is queried).
        (
            "queryIndexEntities",
            ctx.query
                .indexed_entities(cache.name())
                .unwrap_or(0)
                .to_string(),
        ),
    ];
    let stats = stats.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::Stats(stats),
    ))
}

fn param<'a>(params: &'a [(String, Bytes)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn ok_bytes(h: &RequestHeader, result: impl Into<Bytes>) -> Response {
    Response::new(
        h.message_id,
        h.opcode,
        status::SUCCESS,
        ResponseBody::Value(result.into()),
    )
}

fn task_error(h: &RequestHeader, msg: impl Into<String>) -> Response {
    Response::error(h.message_id, status::SERVER_ERROR, msg.into())
}

/// Admin tasks are `@@context@op` with UTF-8 parameters; results are raw UTF-8 bytes.
pub fn exec(
    ctx: &Arc<ServerContext>,
    h: RequestHeader,
    task: String,
    params: Vec<(String, Bytes)>,
) -> Action {
    let ctx = ctx.clone();
    match task.as_str() {
        "@@cache@names" => {
            let mut names: Vec<String> = ctx
                .store
                .cache_names()
                .into_iter()
                .filter(|n| !n.starts_with("___"))
                .collect();
            names.sort();
            let json = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
            Action::Respond(ok_bytes(&h, json))
        }
        "@@cache@create" | "@@cache@getorcreate" => {
            let Some(name) = param(&params, "name").map(str::to_string) else {
                return Action::Respond(task_error(
                    &h,
                    format!("task {task} requires the parameter 'name'"),
                ));
            };
            let configuration = param(&params, "configuration").unwrap_or("").to_string();
            let template = param(&params, "template").unwrap_or("");
            let def = match cache_config::parse(&name, &configuration, template) {
                Ok(d) => d,
                Err(e) => {
                    return Action::Respond(task_error(
                        &h,
                        format!("invalid configuration for cache '{name}': {e}"),
                    ))
                }
            };
            if task == "@@cache@create" && ctx.store.cache(&name).is_some() {
                return Action::Respond(task_error(&h, format!("cache '{name}' already exists")));
            }
            Action::Write(Box::pin(async move {
                match ctx.store.get_or_create_cache(def).await {
                    Ok(_) => ok_bytes(&h, Bytes::new()),
                    Err(e) => store_error(&h, e),
                }
            }))
        }
        "@@cache@remove" => {
            let Some(name) = param(&params, "name").map(str::to_string) else {
                return Action::Respond(task_error(
                    &h,
                    "task @@cache@remove requires the parameter 'name'",
                ));
            };
            if name == crate::config::DEFAULT_CACHE_NAME {
                return Action::Respond(task_error(&h, "the default cache cannot be removed"));
            }
            Action::Write(Box::pin(async move {
                match ctx.store.remove_cache(&name).await {
                    Ok(_) => ok_bytes(&h, Bytes::new()),
                    Err(e) => store_error(&h, e),
                }
            }))
        }
        // Both rebuild the cache's query index from memory with the schemas as registered now
        // (indexed fields come from the schema's annotations); the cache must exist, as on
        // Infinispan.
        "@@cache@reindex" | "@@cache@updateindexschema" => {
            let name = param(&params, "name").unwrap_or("");
            if ctx.store.cache(name).is_none() {
                return Action::Respond(task_error(&h, format!("cache '{name}' not found")));
            }
            ctx.query.reindex(name);
            Action::Respond(ok_bytes(&h, Bytes::new()))
        }
        other => Action::Respond(task_error(&h, format!("unknown task '{other}'"))),
    }
}
