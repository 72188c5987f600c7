//! The few calls of Infinispan's REST API that clients of a HotRod server make on the same port
//! (HTTP/1.1 via hyper, plain or inside TLS):
//!
//! * Keycloak's multi-site health check (`RestInfinispanManagement`): the container `info()`
//!   (`GET /rest/v2/container`, reading `local_site` and `sites_view`), `backupStatuses()`
//!   (`GET /rest/v2/container/x-site/backups`) and `takeOffline(site)`
//!   (`POST /rest/v2/container/x-site/backups/{site}?action=take-offline`). ferrod has no
//!   cross-site replication (every replica shares one database), so it answers as an Infinispan
//!   without backups does: `local_site` null, an empty site view, no backup statuses, and an
//!   empty per-cache result for the site operations.
//! * Health for Kubernetes probes: `/rest/v2/container/health/status` and
//!   `/rest/v2/cache-managers/{name}/health/status` (text), `/rest/v2/container/health` and
//!   `/rest/v2/cache-managers/{name}/health` (JSON). Infinispan always answers 200 with its
//!   status; ferrod answers `HEALTHY` (200) when the store is ready and `DEGRADED` with 503
//!   while it is not (`Store::is_ready`: loading, catching up with the change feed, or cut off
//!   from the database), so an HTTP probe takes the replica out of service.
//!
//! Every other path is 404, a known path with another method 405 (with `Allow`).
//!
//! With authentication on (a credentials file), requests authenticate with HTTP BASIC against
//! the same users as HotRod (the password checked against the stored SCRAM-SHA-512 hash, as
//! PLAIN is), which is what Infinispan's REST client picks (mechanism `AUTO`, as Keycloak's
//! `RestInfinispanManagement` configures it) when the challenge offers `Basic`. As upstream's
//! `ContainerResource` / `XSiteResource`: the two `health/status` paths stay anonymous (probes),
//! container info and health JSON need a login, the x-site backup calls need ADMIN. A missing,
//! malformed or wrong `Authorization` gets 401 with `WWW-Authenticate: Basic realm="<realm>"`,
//! a user without the permission 403.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::auth::roles::{self, Permissions};
use crate::auth::Authenticator;
use crate::context::ServerContext;

/// Infinispan's REST context path.
const CONTEXT: &str = "/rest";
/// The name of ferrod's one cache container, as in an Infinispan server's default config.
pub const CONTAINER_NAME: &str = "default";
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve<S>(
    ctx: Arc<ServerContext>,
    stream: S,
    peer: String,
    mut shutdown: broadcast::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_for_log = peer.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        let peer = peer_for_log.clone();
        async move {
            let Some(authorization) = req.headers().get(AUTHORIZATION).cloned() else {
                return Ok::<_, Infallible>(answer(&ctx, req.method(), req.uri(), None, &peer));
            };
            // Checking a password derives its salted hash (thousands of HMAC rounds): off the
            // runtime's threads, so other connections are not held up meanwhile.
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let work = move || answer(&ctx, &method, &uri, Some(&authorization), &peer);
            Ok(tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
                debug!("REST request task failed: {e}");
                reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "")
            }))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, "HTTP connection ended: {e}");
            }
        }
        _ = shutdown.recv() => {
            // Finish the request in progress, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

fn not_found() -> Reply {
    reply(StatusCode::NOT_FOUND, "text/plain", "")
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// What a path names, once the context path and the container are resolved.
#[derive(Debug, PartialEq, Eq)]
enum Resource<'a> {
    Info,
    Health,
    HealthStatus,
    Backups,
    Backup(&'a str),
}

fn resource(path: &str) -> Option<Resource<'_>> {
    let rest = path.strip_prefix(CONTEXT)?.strip_prefix("/v2/")?;
    // /v2/container/... and the older (deprecated upstream) /v2/cache-managers/{name}/...
    let rest = if let Some(r) = rest.strip_prefix("container") {
        r
    } else {
        let r = rest.strip_prefix("cache-managers/")?;
        let (name, r) = r.split_once('/').unwrap_or((r, ""));
        if name != CONTAINER_NAME {
            return None;
        }
        if r.is_empty() {
            ""
        } else {
            &path[path.len() - r.len() - 1..]
        }
    };
    // Upstream routes accept a trailing slash.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest {
        "" => Some(Resource::Info),
        "/health" => Some(Resource::Health),
        "/health/status" => Some(Resource::HealthStatus),
        "/x-site/backups" => Some(Resource::Backups),
        r => {
            let site = r.strip_prefix("/x-site/backups/")?;
            (!site.is_empty() && !site.contains('/')).then_some(Resource::Backup(site))
        }
    }
}

fn query_param<'a>(uri: &'a hyper::Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What a resource asks of the caller when authentication is on (upstream's per-invocation
/// `anonymous` / `permission`).
fn required(res: &Resource<'_>) -> Option<Permissions> {
    match res {
        Resource::HealthStatus => None,
        Resource::Info | Resource::Health => Some(Permissions::NONE),
        Resource::Backups | Resource::Backup(_) => Some(Permissions::ADMIN),
    }
}

fn unauthorized(auth: &Authenticator) -> Reply {
    let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "");
    // The realm is a quoted-string: `"` and `\` would end it early.
    let realm: String = auth
        .realm
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// `Basic base64(user:password)` split into its parts; `None` when it is not that.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(token.trim()).ok()?;
    // RFC 7617 leaves the charset to the parties: Infinispan's REST client encodes ISO-8859-1,
    // others UTF-8. Valid UTF-8 is taken as such, anything else as ISO-8859-1 (every byte a
    // code point), so a password like "pässword" works from both.
    let text = String::from_utf8(decoded)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect());
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `Ok` when the request may go on; else the 401/403 to answer.
fn authorize(
    auth: &Authenticator,
    needed: Permissions,
    authorization: Option<&HeaderValue>,
    peer: &str,
) -> Result<(), Box<Reply>> {
    let Some(value) = authorization else {
        return Err(Box::new(unauthorized(auth)));
    };
    let Some((user, password)) = basic_credentials(value) else {
        info!(%peer, "HTTP authentication failed: the Authorization header is not Basic user:password");
        return Err(Box::new(unauthorized(auth)));
    };
    let identity = auth.login(&user, &password).map_err(|why| {
        info!(%peer, "HTTP authentication failed: {why}");
        Box::new(unauthorized(auth))
    })?;
    if roles::permissions_of(&identity.roles).implies(needed) {
        return Ok(());
    }
    Err(Box::new(reply(
        StatusCode::FORBIDDEN,
        "text/plain",
        format!(
            "ISPN000287: Unauthorized access: user '{user}' lacks '{}' permission on the cache container",
            needed.name()
        ),
    )))
}

/// Answers one request; pure apart from reading the store's state.
fn answer(
    ctx: &ServerContext,
    method: &Method,
    uri: &hyper::Uri,
    authorization: Option<&HeaderValue>,
    peer: &str,
) -> Reply {
    let Some(res) = resource(uri.path()) else {
        return not_found();
    };
    if let (Some(auth), Some(needed)) = (&ctx.auth, required(&res)) {
        if let Err(refused) = authorize(auth, needed, authorization, peer) {
            return *refused;
        }
    }
    let ready = ctx.store.is_ready();
    let action = query_param(uri, "action");
    match res {
        Resource::Info => match *method {
            Method::GET => json_reply(StatusCode::OK, container_info(ctx)),
            _ => method_not_allowed("GET"),
        },
        Resource::Health => match *method {
            Method::GET | Method::HEAD => {
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_reply(status, health(ctx, ready))
            }
            _ => method_not_allowed("GET, HEAD"),
        },
        Resource::HealthStatus => match *method {
            Method::GET | Method::HEAD if ready => reply(StatusCode::OK, "text/plain", "HEALTHY"),
            Method::GET | Method::HEAD => {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "DEGRADED")
            }
            _ => method_not_allowed("GET, HEAD"),
        },
        // No backup sites: the status of every (zero) site.
        Resource::Backups => match *method {
            Method::GET => json_reply(StatusCode::OK, json!({})),
            _ => method_not_allowed("GET"),
        },
        Resource::Backup(_) => match *method {
            // The status of a site that no cache backs up to: unknown.
            Method::GET => not_found(),
            // A site operation over every cache that backs up to `site`: none does, so the
            // per-cache result map is empty, as Infinispan answers.
            Method::POST => match action {
                Some(
                    "take-offline" | "bring-online" | "start-push-state" | "cancel-push-state",
                ) => json_reply(StatusCode::OK, json!({})),
                Some(other) => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("unknown action '{other}'"),
                ),
                None => reply(StatusCode::BAD_REQUEST, "text/plain", "missing action"),
            },
            _ => method_not_allowed("GET, POST"),
        },
    }
}

fn node_name(ctx: &ServerContext) -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("ferrod-{}", ctx.config.listen))
}

/// The fields of Infinispan's `CacheManagerInfo` that apply to a ferrod replica.
fn container_info(ctx: &ServerContext) -> serde_json::Value {
    let names = ctx.store.cache_names();
    let node = node_name(ctx);
    json!({
        "version": format!("ferrod {}", env!("CARGO_PKG_VERSION")),
        "name": CONTAINER_NAME,
        "coordinator": true,
        "cache_configuration_names": names,
        "cluster_name": "ferrod",
        "cache_manager_status": if ctx.store.is_ready() { "RUNNING" } else { "INITIALIZING" },
        "created_cache_count": names.len().to_string(),
        "running_cache_count": names.len().to_string(),
        "node_address": node,
        "cluster_members": [node],
        "cluster_members_physical_addresses": [ctx.config.listen.to_string()],
        "cluster_size": 1,
        "defined_caches": names.iter().map(|n| json!({"name": n, "started": true})).collect::<Vec<_>>(),
        "local_site": null,
        "relay_node": false,
        "relay_nodes_address": [],
        "sites_view": [],
        "rebalancing_enabled": true,
        "tracing_enabled": false,
    })
}

fn health(ctx: &ServerContext, ready: bool) -> serde_json::Value {
    let status = if ready { "HEALTHY" } else { "DEGRADED" };
    json!({
        "cluster_health": {
            "cluster_name": "ferrod",
            "health_status": status,
            "number_of_nodes": 1,
            "node_names": [node_name(ctx)],
        },
        "cache_health": ctx.store.cache_names().iter()
            .map(|n| json!({"status": status, "cache_name": n}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve() {
        assert_eq!(resource("/rest/v2/container"), Some(Resource::Info));
        assert_eq!(resource("/rest/v2/container/"), Some(Resource::Info));
        assert_eq!(
            resource("/rest/v2/container/health/status"),
            Some(Resource::HealthStatus)
        );
        assert_eq!(
            resource("/rest/v2/cache-managers/default/health/status"),
            Some(Resource::HealthStatus)
        );
        assert_eq!(
            resource("/rest/v2/cache-managers/default"),
            Some(Resource::Info)
        );
        assert_eq!(resource("/rest/v2/cache-managers/other/health"), None);
        assert_eq!(
            resource("/rest/v2/container/x-site/backups/"),
            Some(Resource::Backups)
        );
        assert_eq!(
            resource("/rest/v2/container/x-site/backups/site-b"),
            Some(Resource::Backup("site-b"))
        );
        assert_eq!(resource("/rest/v2/container/x-site/backups/a/b"), None);
        assert_eq!(resource("/rest/v2/containerx"), None);
        assert_eq!(resource("/rest/v2/caches"), None);
        assert_eq!(resource("/"), None);
    }

    /// A real store (SQLite in a temp dir): HEALTHY while it serves, DEGRADED with 503 once it is
    /// no longer ready (here: shut down).
    #[tokio::test]
    async fn health_follows_store_readiness() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("h.db").display());
        let cli = crate::Cli::try_parse_from(["ferrod", "--database-url", &url]).unwrap();
        let config = crate::Config::load(&cli).unwrap();
        let mut store_config = ferrod_store::StoreConfig::new(url);
        store_config.caches = config.caches.clone();
        let store = ferrod_store::Store::open(store_config).await.unwrap();
        let ctx = ServerContext::new(store.clone(), config);
        let status: hyper::Uri = "/rest/v2/container/health/status".parse().unwrap();
        let health: hyper::Uri = "/rest/v2/container/health".parse().unwrap();

        assert_eq!(
            answer(&ctx, &Method::GET, &status, None, "t").status(),
            StatusCode::OK
        );
        assert_eq!(
            answer(&ctx, &Method::GET, &health, None, "t").status(),
            StatusCode::OK
        );
        store.shutdown().await;
        let r = answer(&ctx, &Method::GET, &status, None, "t");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"DEGRADED");
        assert_eq!(
            answer(&ctx, &Method::HEAD, &status, None, "t").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let r = answer(&ctx, &Method::GET, &health, None, "t");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["cluster_health"]["health_status"], "DEGRADED");
        // Keycloak's calls do not depend on readiness.
        let info: hyper::Uri = "/rest/v2/container".parse().unwrap();
        assert_eq!(
            answer(&ctx, &Method::GET, &info, None, "t").status(),
            StatusCode::OK
        );
    }

    #[test]
    fn query_params() {
        let uri: hyper::Uri = "/x?a=1&action=take-offline&flag".parse().unwrap();
        assert_eq!(query_param(&uri, "action"), Some("take-offline"));
        assert_eq!(query_param(&uri, "flag"), Some(""));
        assert_eq!(query_param(&uri, "b"), None);
    }
}
