//! PostgreSQL becomes unreachable while a replica serves: writes fail at once with an error that
//! says so (instead of each waiting for a connection attempt to time out), reads keep being
//! served from memory, and writes work again by themselves once the database is back.
//!
//! The outage is a TCP proxy between ferrod and PostgreSQL that the test closes (listener gone,
//! every proxied connection cut: what ferrod sees when PostgreSQL restarts) and reopens on the
//! same port, so the test needs no PostgreSQL cluster of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferrod_codec::status;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to `upstream` on a fixed local port that can be taken down and brought back.
struct Proxy {
    port: u16,
    upstream: String,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = Proxy {
            port,
            upstream,
            accept: None,
            conns: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, conns) = (self.upstream.clone(), self.conns.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        }));
    }

    /// Stops listening (new connections are refused) and cuts every proxied connection.
    async fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        let tasks: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    async fn up(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("rebinding proxy port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind proxy port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

/// `postgres://user:pw@host:port/db?q` with host:port replaced.
fn via(url: &str, host_port: &str) -> String {
    let after_scheme = url.find("://").unwrap() + 3;
    let rest = &url[after_scheme..];
    let at = rest.find('@').map(|i| i + 1).unwrap_or(0);
    let end = rest[at..]
        .find(['/', '?'])
        .map(|i| at + i)
        .unwrap_or(rest.len());
    format!(
        "{}{}{}{}",
        &url[..after_scheme],
        &rest[..at],
        host_port,
        &rest[end..]
    )
}

fn host_port(url: &str) -> String {
    let after_scheme = url.find("://").unwrap() + 3;
    let rest = &url[after_scheme..];
    let at = rest.find('@').map(|i| i + 1).unwrap_or(0);
    let end = rest[at..]
        .find(['/', '?'])
        .map(|i| at + i)
        .unwrap_or(rest.len());
    let hp = &rest[at..end];
    if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:5432")
    }
}

#[tokio::test]
async fn postgres_unreachable_writes_fail_fast_reads_served_then_recovers() {
    let Some(db) = PgDb::create("pg_outage").await else {
        return;
    };
    let mut proxy = Proxy::start(host_port(&db.url)).await;
    let url = via(&db.url, &format!("127.0.0.1:{}", proxy.port));
    let mut server = Server::start_with(ServerOpts::default().database(&url)).await;
    let mut c = server.client_v(40).await;
    c.put("k", "before").await;
    let ver = c.version_of("k").await.unwrap();

    proxy.down().await;

    // The first write finds the database gone (its pooled connection is cut, a new one is
    // refused); every write after it is refused at once by the open circuit, and says why.
    let r = c.put_exp("k", "during-0", EXP_DEFAULT).await;
    assert_error(&r, status::SERVER_ERROR, "database");
    for i in 1..=5 {
        let t = Instant::now();
        let r = c.put_exp("k", &format!("during-{i}"), EXP_DEFAULT).await;
        assert_error(&r, status::SERVER_ERROR, "database unreachable");
        // Before the circuit each write waited for the pool's 30 s acquire timeout.
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "write {i} during the outage answered after {:?}",
            t.elapsed()
        );
        let r = c.req(ferrod_codec::Request::Remove { key: b("k") }).await;
        assert_error(&r, status::SERVER_ERROR, "database unreachable");
        // Reads are served from memory throughout, and memory shows no failed write.
        assert_eq!(c.get_with_version("k").await, Some((ver, b("before"))));
    }
    server.assert_running();

    proxy.up().await;

    // Recovers by itself: no restart, the same connection, writes succeed again.
    let mut recovered = None;
    for _ in 0..300 {
        let r = c.put_exp("k", "after", EXP_DEFAULT).await;
        if r.header.status == status::SUCCESS || r.header.status == status::SUCCESS_WITH_PREVIOUS {
            recovered = Some(r);
            break;
        }
        assert_error(&r, status::SERVER_ERROR, "database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered.is_some(), "writes did not recover after 30 s");
    let (v2, val) = c.get_with_version("k").await.unwrap();
    assert_eq!(val, b("after"));
    assert!(v2 > ver);

    // And the database has exactly what was acknowledged.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let row: (Vec<u8>, i64) =
        sqlx::query_as("SELECT value, version FROM ferrod_entries WHERE key = $1")
            .bind(&b"k"[..])
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(row, (b"after".to_vec(), v2));
    admin.close().await.unwrap();
    server.stop().await;
}
