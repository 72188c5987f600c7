//! Replicas sharing PostgreSQL: a keyed read that misses in memory is re-read from SQL before
//! it is answered (DESIGN decision 4), so a client that wrote through one replica finds its
//! entry through another even before the change feed delivered it there.

mod common;

use common::*;
use ferrod_codec::{status, Request};
use sqlx::Connection;

#[tokio::test]
async fn a_miss_in_memory_is_read_through_from_sql() {
    let Some(db) = PgDb::create("read_through").await else {
        return;
    };
    let server = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let mut c = server.client_v(40).await;
    c.put("seen", "1").await;

    // A row that reached SQL without passing through this replica's memory or the change log
    // (the feed will never deliver it): only a read-through can find it.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (cache,): (String,) = sqlx::query_as("SELECT cache FROM ferrod_entries LIMIT 1")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ferrod_entries (cache, key, value, version, created_ms, lifespan_ms, \
         last_used_ms, max_idle_ms, expires_ms) VALUES ($1, $2, $3, 424242, 0, -1, 0, -1, NULL)",
    )
    .bind(&cache)
    .bind(&b"only-in-sql"[..])
    .bind(&b"from-sql"[..])
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();

    assert!(c.contains("only-in-sql").await);
    assert_eq!(c.get_str("only-in-sql").await.as_deref(), Some("from-sql"));
    assert_eq!(
        c.get_with_version("only-in-sql").await,
        Some((424242, b("from-sql")))
    );
    let (meta, value) = c.get_with_metadata("only-in-sql").await.unwrap();
    assert_eq!((meta.version, value), (424242, b("from-sql")));
    // A key absent everywhere is still a miss.
    assert_eq!(c.get("absent").await, None);
    assert!(!c.contains("absent").await);
    let r = c.req(Request::GetWithMetadata { key: b("absent") }).await;
    assert_status(&r, status::KEY_DOES_NOT_EXIST);
}
