//! Accept loop: bounded connections (HotRod and HTTP alike), a shutdown signal threaded to every
//! connection. `transport::serve` decides what each connection speaks.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};
use tracing::{error, info, warn};

use crate::context::ServerContext;
use crate::transport::{self, Transport};

/// Serves until `shutdown` resolves, then stops accepting, tells every connection to close once its
/// client waits for no answer (see `connection::DRAIN_SERVE`), and waits for them.
pub async fn run(
    ctx: Arc<ServerContext>,
    transport: Arc<Transport>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (notify, _) = broadcast::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        error!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let permit = match limit.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        warn!(%peer, "connection refused: the limit of {} connections is reached", ctx.config.max_connections);
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let rx = notify.subscribe();
                let transport = transport.clone();
                tasks.spawn(async move {
                    transport::serve(ctx, transport, stream, peer.to_string(), rx).await;
                    drop(permit);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let _ = notify.send(());
    // Logged once every connection has been told: from now on a pipelining client's requests are
    // not started.
    info!(
        "shutting down: answering the requests in flight on {} connections, then closing them",
        tasks.len()
    );
    while tasks.join_next().await.is_some() {}
}
