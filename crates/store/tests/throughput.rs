//! Rough throughput numbers (ignored by default):
//! `cargo test --release -p ferrod-store --test throughput -- --ignored --nocapture`
//! PostgreSQL too when FERROD_TEST_PG_URL is set (see tests/common/mod.rs).
mod common;

use std::time::Instant;

use common::TestDb;
use ferrod_store::*;

async fn run(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let (tasks, per_task) = (64, 300);
    let value = Bytes::from(vec![b'x'; 512]);
    let start = Instant::now();
    let before = store.metrics();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (c, value) = (c.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let k = Bytes::from(format!("k{t}-{}", i % 50));
                c.put(k, value.clone(), Expiration::IMMORTAL).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let m = store.metrics();
    let ops = tasks * per_task;
    eprintln!(
        "{}: {ops} puts from {tasks} tasks in {secs:.2}s = {:.0} ops/s, {} transactions",
        if db.is_sqlite() { "sqlite" } else { "postgres" },
        ops as f64 / secs,
        m.transactions_committed - before.transactions_committed
    );
    let start = Instant::now();
    let mut hits = 0;
    for i in 0..200_000 {
        hits += c
            .get(format!("k{}-{}", i % tasks, i % 50).as_bytes())
            .is_some() as u32;
    }
    eprintln!(
        "200k gets: {:.2}s ({hits} hits)",
        start.elapsed().as_secs_f64()
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_sqlite() {
    let db = TestDb::sqlite();
    run(&db).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    run(&db).await;
    db.cleanup().await;
}
