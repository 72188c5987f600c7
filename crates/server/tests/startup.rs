//! A replica whose database is unreachable at startup keeps retrying with backoff, reports
//! not-ready (its port stays closed) meanwhile, and comes up by itself once the database exists.

mod common;

use std::time::Duration;

use common::*;
use sqlx::Connection;

#[tokio::test]
async fn replica_waits_for_its_database_then_serves() {
    let Ok(base) = std::env::var("FERROD_TEST_PG_URL") else {
        eprintln!("NOTICE: FERROD_TEST_PG_URL is not set; skipping");
        return;
    };
    let name = format!("ferrod_late_{}", std::process::id());
    let url = replace_db(&base, &name);
    let opts = ServerOpts::default().database(&url);
    let starting = tokio::spawn(async move { Server::start_with(opts).await });

    // The database does not exist yet: the server must not be serving and must not have exited.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !starting.is_finished(),
        "ferrod reported ready without its database"
    );
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();

    let mut server = tokio::time::timeout(Duration::from_secs(45), starting)
        .await
        .expect("ferrod came up once its database existed")
        .unwrap();
    assert!(
        server.log().contains("database not available"),
        "{}",
        server.log()
    );
    let mut c = server.client().await;
    c.put("k", "v").await;
    assert_eq!(c.get_str("k").await.as_deref(), Some("v"));
    server.stop().await;
    drop(c);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}
