//! A write whose SQL transaction fails is answered with an error naming the database, memory is
//! left as it was (DESIGN decision 1: the map only ever shows committed data), and writes work
//! again once the database does. Also group commit (decision 5), observed through STATS.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrod_codec::status;
use sqlx::Connection;

#[tokio::test]
async fn sqlite_locked_by_another_connection_fails_writes_then_recovers() {
    let mut server =
        Server::start_with(ServerOpts::default().arg("--database-busy-timeout-ms=300")).await;
    let mut c = server.client_v(40).await;
    c.put("k", "old").await;
    let ver = c.version_of("k").await.unwrap();

    // Another process-level connection holds the write lock.
    let mut other = server.hold_sqlite_write_lock().await;

    let t = Instant::now();
    let r = c.put_exp("k", "new", EXP_DEFAULT).await;
    assert_error(&r, status::SERVER_ERROR, "database");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the busy timeout was 300 ms, answered after {:?}",
        t.elapsed()
    );
    // Every kind of write fails the same way, none shows in memory.
    let r = c.put_exp("fresh", "x", EXP_DEFAULT).await;
    assert_error(&r, status::SERVER_ERROR, "database");
    let r = c.req(ferrod_codec::Request::Remove { key: b("k") }).await;
    assert_error(&r, status::SERVER_ERROR, "database");
    assert_eq!(c.get_with_version("k").await, Some((ver, b("old"))));
    assert_eq!(c.get("fresh").await, None);
    assert_eq!(c.size().await, 1);
    server.assert_running();

    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();

    c.put("k", "new").await;
    let (v2, val) = c.get_with_version("k").await.unwrap();
    assert_eq!(val, b("new"));
    assert_ne!(v2, ver);
    // And it is durable.
    server.stop().await;
    server.restart().await;
    let mut c = server.client_v(40).await;
    assert_eq!(c.get_with_version("k").await, Some((v2, b("new"))));
    assert_eq!(c.get("fresh").await, None);
}

/// PostgreSQL: the role loses its write privilege on the entries table (a real misconfiguration,
/// deterministic, and reversible), then gets it back.
#[tokio::test]
async fn postgres_revoked_privileges_fail_writes_then_recover() {
    let Some(db) = PgDb::create("sql_failure").await else {
        return;
    };
    let mut server = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let mut c = server.client_v(40).await;
    c.put("k", "old").await;
    let ver = c.version_of("k").await.unwrap();

    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("REVOKE INSERT, UPDATE, DELETE ON ferrod_entries FROM CURRENT_USER")
        .execute(&mut admin)
        .await
        .unwrap();

    let r = c.put_exp("k", "new", EXP_DEFAULT).await;
    assert_error(&r, status::SERVER_ERROR, "database");
    let r = c.put_exp("fresh", "x", EXP_DEFAULT).await;
    assert_error(&r, status::SERVER_ERROR, "database");
    assert_eq!(c.get_with_version("k").await, Some((ver, b("old"))));
    assert_eq!(c.get("fresh").await, None);
    server.assert_running();

    sqlx::raw_sql("GRANT INSERT, UPDATE, DELETE ON ferrod_entries TO CURRENT_USER")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();

    c.put("k", "new").await;
    let (v2, val) = c.get_with_version("k").await.unwrap();
    assert_eq!(val, b("new"));
    assert_ne!(v2, ver);
    server.stop().await;
    server.restart().await;
    let mut c = server.client_v(40).await;
    assert_eq!(c.get_with_version("k").await, Some((v2, b("new"))));
    assert_eq!(c.get("fresh").await, None);
}

fn stat(stats: &[(String, String)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("STATS lacks {key}: {stats:?}"))
        .1
        .parse()
        .unwrap()
}

async fn group_commit(server: &Server) {
    const CONNS: usize = 64;
    const PUTS: usize = 50;
    let mut c = server.client().await;
    let before = c.stats().await;
    let mut tasks = Vec::new();
    for t in 0..CONNS {
        let addr = server.addr();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&addr).await;
            for i in 0..PUTS {
                c.put(&format!("gc-{t}-{i}"), "v").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = c.stats().await;
    let puts = (CONNS * PUTS) as u64;
    let txs = stat(&after, "sqlTransactionsCommitted") - stat(&before, "sqlTransactionsCommitted");
    let ops = stat(&after, "sqlOpsCommitted") - stat(&before, "sqlOpsCommitted");
    assert_eq!(ops, puts, "every put committed once");
    assert_eq!(stat(&after, "sqlTransactionsFailed"), 0);
    eprintln!("group commit: {puts} puts in {txs} transactions");
    assert!(
        txs * 4 <= puts,
        "{puts} concurrent puts took {txs} transactions: no group commit"
    );
    assert_eq!(c.size().await, puts);
}

#[tokio::test]
async fn group_commit_sqlite_64_connections_far_fewer_transactions_than_puts() {
    let server = Server::start().await;
    group_commit(&server).await;
}

#[tokio::test]
async fn group_commit_postgres_64_connections_far_fewer_transactions_than_puts() {
    let Some(db) = PgDb::create("group_commit").await else {
        return;
    };
    let server = Server::start_with(ServerOpts::default().database(&db.url)).await;
    group_commit(&server).await;
}
