//! Two stores on one database behave like two replicas: conditional writes are decided in SQL,
//! so they cannot both win, and a replica whose memory is stale converges after a failed
//! conditional write. See tests/common/mod.rs for FERROD_TEST_PG_URL.
mod common;

use common::TestDb;
use ferrod_store::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const IMM: Expiration = Expiration::IMMORTAL;

both_backends!(cas_counter_across_replicas, put_if_absent_single_winner);

async fn cas_counter_across_replicas(db: &TestDb) {
    let a = Store::open(db.config()).await.unwrap();
    let bb = Store::open(db.config()).await.unwrap();
    a.cache("default")
        .unwrap()
        .put(b("counter"), b("0"), IMM)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = if t % 2 == 0 { &a } else { &bb }.cache("default").unwrap();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u64;
            for _ in 0..25 {
                // Replica b has never seen the counter: its first read misses, and only the
                // refresh after a failed conditional write brings it in.
                let (version, n) = match c.get(b"counter") {
                    Some(cur) => (
                        cur.version,
                        std::str::from_utf8(&cur.value)
                            .unwrap()
                            .parse::<u64>()
                            .unwrap(),
                    ),
                    None => (1, 0),
                };
                match c
                    .replace_if_version(b("counter"), version, b(&(n + 1).to_string()), IMM)
                    .await
                    .unwrap()
                {
                    VersionedOutcome::Done(_) => wins += 1,
                    VersionedOutcome::Mismatch(_) | VersionedOutcome::Missing => {}
                }
            }
            wins
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    a.shutdown().await;
    bb.shutdown().await;
    let check = Store::open(db.config()).await.unwrap();
    let fin = check.cache("default").unwrap().get(b"counter").unwrap();
    let n: u64 = std::str::from_utf8(&fin.value).unwrap().parse().unwrap();
    assert_eq!(
        n, total,
        "every successful replace_if_version incremented once"
    );
    assert!(total > 0);
    check.shutdown().await;
}

async fn put_if_absent_single_winner(db: &TestDb) {
    let a = Store::open(db.config()).await.unwrap();
    let bb = Store::open(db.config()).await.unwrap();
    let ca = a.cache("default").unwrap();
    let cb = bb.cache("default").unwrap();
    for round in 0..30 {
        let k = b(&format!("k{round}"));
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (c, k) = (ca.clone(), k.clone());
                async move { c.put_if_absent(k, b("a"), IMM).await.unwrap() }
            }),
            tokio::spawn({
                let (c, k) = (cb.clone(), k.clone());
                async move { c.put_if_absent(k, b("b"), IMM).await.unwrap() }
            }),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let winners = [&ra, &rb]
            .iter()
            .filter(|o| matches!(o, PutIfAbsentOutcome::Stored))
            .count();
        assert_eq!(winners, 1, "round {round}: {ra:?} {rb:?}");
        // the loser was told the winner's entry, and its memory now has it too
        let winner_value = if matches!(ra, PutIfAbsentOutcome::Stored) {
            b("a")
        } else {
            b("b")
        };
        for o in [&ra, &rb] {
            if let PutIfAbsentOutcome::Present(s) = o {
                assert_eq!(s.value, winner_value);
            }
        }
        let loser = if matches!(ra, PutIfAbsentOutcome::Stored) {
            &cb
        } else {
            &ca
        };
        assert_eq!(loser.peek(&k).unwrap().value, winner_value);
    }
    let retried = a.metrics().batches_retried + bb.metrics().batches_retried;
    eprintln!("batches re-run after a lost insert race: {retried}");
    a.shutdown().await;
    bb.shutdown().await;
}

/// PostgreSQL: every connection of the store is killed by the server; the store reconnects and
/// keeps memory equal to SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("skipped: FERROD_TEST_PG_URL not set");
        return;
    };
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("k"), b("0"), IMM).await.unwrap();
    for round in 1..=5 {
        assert!(
            db.count(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            .await
                >= 0
        );
        let mut ok = false;
        for _ in 0..20 {
            match c.put(b("k"), b(&round.to_string()), IMM).await {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(StoreError::Database(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            ok,
            "store did not recover after its connections were killed"
        );
        assert_eq!(c.get(b"k").unwrap().value, b(&round.to_string()));
    }
    let mem = c.peek(b"k").unwrap();
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(store.cache("default").unwrap().peek(b"k").unwrap(), mem);
    store.shutdown().await;
    db.cleanup().await;
}
