//! The `ferrod` server: configuration, accept loop, per-connection request loop and the commands.

pub mod auth;
pub mod cache_config;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod context;
pub mod listeners;
pub mod query;
pub mod rest;
pub mod schemas;
pub mod server;
pub mod tls;
pub mod transport;

use std::sync::Arc;

use ferrod_store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tracing::info;

pub use config::{Cli, Config, ConfigError};
pub use context::ServerContext;

/// Opens the store (migrations, then every cache loaded into memory), binds, and serves until
/// `shutdown` resolves. The listener is bound only once the data is loaded, so a client that
/// can connect sees consistent data: until then the replica is "not ready" to a TCP probe.
/// A database that cannot be reached at startup is retried with backoff rather than ending the
/// process, so a replica started before (or during an outage of) its database comes up by itself.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error>> {
    let store_config = store_config(&config);
    // A bad credentials file stops startup before anything else happens.
    let auth = auth::Authenticator::from_config(&config)?;
    match &auth {
        Some(a) => info!(
            "authentication on: {} users, mechanisms {}",
            a.user_count(),
            a.mechanisms.join(", ")
        ),
        None => info!("authentication off: no credentials_file configured"),
    }
    tokio::pin!(shutdown);
    let mut backoff = std::time::Duration::from_millis(250);
    let store = loop {
        match Store::open(store_config.clone()).await {
            Ok(s) => break s,
            Err(e @ ferrod_store::StoreError::Database(_)) => {
                tracing::warn!("database not available ({e}); retrying in {backoff:?}");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(15));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    info!(
        "ferrod ready on {} (database {}, caches: {})",
        listener.local_addr()?,
        redact(&config.database_url),
        store.cache_names().join(", ")
    );
    let tls = match config.tls.clone() {
        Some(settings) => Some(tls::TlsState::new(settings).map_err(|e| e.to_string())?),
        None => None,
    };
    if let Some(t) = &tls {
        info!(
            "TLS {:?} on {} (client certificates: {:?}, {} SNI certificate(s))",
            t.settings.mode,
            config.listen,
            t.settings.client_auth,
            t.settings.sni.len()
        );
    }
    let tls_watch = tls.clone().map(|t| tokio::spawn(t.watch()));
    let transport = Arc::new(transport::Transport {
        tls,
        rest: config.rest,
    });
    let ctx = Arc::new(ServerContext::new(store.clone(), config).with_auth(auth));
    let dispatcher = tokio::spawn(listeners::dispatch(store.clone(), ctx.listeners.clone()));
    let schema_follower = tokio::spawn(schemas::follow(ctx.schema_state.clone(), store.clone()));
    server::run(ctx, transport, listener, shutdown).await;
    store.shutdown().await;
    dispatcher.abort();
    schema_follower.abort();
    if let Some(w) = tls_watch {
        w.abort();
    }
    info!("ferrod stopped");
    Ok(())
}

/// The store settings a server configuration implies.
pub fn store_config(config: &Config) -> StoreConfig {
    let mut store_config = StoreConfig::new(config.database_url.clone());
    store_config.max_value_bytes = config.max_value_bytes;
    store_config.caches = config.caches.clone();
    store_config.reaper_interval = config.reaper_interval;
    store_config.max_batch_ops = config.max_batch_ops;
    store_config.busy_timeout = config.database_busy_timeout;
    store_config.writer_lanes = config.writer_lanes;
    store_config
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
