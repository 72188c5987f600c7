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

/// key, kind, version, prev_version, seq, origin of a change row.
type LogRow = (Vec<u8>, String, Option<i64>, Option<i64>, i64, String);

/// PostgreSQL: two replicas (each with several writer lanes, so several transactions in flight)
/// race on keys that do not exist yet, where there is no row to lock. Per key: exactly one
/// put_if_absent wins; and in the change log, ordered by seq, every key's history is
/// consistent (versions of created/modified rows strictly increase, each modified/removed row
/// names the version before it, a created row follows absence), which is what followers and
/// listeners rely on. At the end both replicas' memory equals SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_new_key_races() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres().await else {
        eprintln!("skipped: FERROD_TEST_PG_URL not set");
        return;
    };
    let cfg = StoreConfig {
        writer_lanes: 4,
        ..db.config()
    };
    let a = Store::open(cfg.clone()).await.unwrap();
    let bb = Store::open(cfg).await.unwrap();
    let (ca, cb) = (a.cache("default").unwrap(), bb.cache("default").unwrap());

    // Phase 1: 8 tasks per replica, each key contended by one put_if_absent per replica.
    const KEYS: usize = 400;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = if t % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in (t / 2..KEYS).step_by(8) {
                let k = b(&format!("pia-{i}"));
                if matches!(
                    c.put_if_absent(k, b(&format!("t{t}")), IMM).await.unwrap(),
                    PutIfAbsentOutcome::Stored
                ) {
                    won.push(i);
                }
            }
            won
        }));
    }
    let mut wins = vec![0u32; KEYS];
    for t in tasks {
        for i in t.await.unwrap() {
            wins[i] += 1;
        }
    }
    for (i, w) in wins.iter().enumerate() {
        assert_eq!(*w, 1, "key pia-{i}: {w} put_if_absent winners");
    }

    // Phase 2: creations, overwrites and removals of fresh keys from both replicas at once.
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = if t % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            for round in 0..60 {
                let k = b(&format!("mix-{}", round % 20 + 20 * (round / 20 % 3)));
                match (t + round) % 4 {
                    0 => {
                        c.put_if_absent(k, b(&format!("p{t}")), IMM).await.unwrap();
                    }
                    1 => {
                        c.remove(k).await.unwrap();
                    }
                    _ => {
                        c.put(k, b(&format!("w{t}-{round}")), IMM).await.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let log: Vec<LogRow> = sqlx::query_as(
        "SELECT key, kind, version, prev_version, seq, origin FROM ferrod_changes \
         WHERE cache = 'default' AND key IS NOT NULL ORDER BY seq",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    // Key -> version of the live row after the changes seen so far (None: absent).
    let mut state: std::collections::HashMap<Vec<u8>, Option<i64>> = Default::default();
    let mut high: std::collections::HashMap<Vec<u8>, i64> = Default::default();
    for (i, (key, kind, version, prev, ..)) in log.iter().enumerate() {
        // The key's history up to here, for the failure messages.
        let name = format!(
            "{} {:?}",
            String::from_utf8_lossy(key),
            log[..=i]
                .iter()
                .filter(|c| c.0 == *key)
                .map(|c| format!("{} {} {:?} {:?} {}", c.4, c.1, c.2, c.3, &c.5[..4]))
                .collect::<Vec<_>>()
        );
        let cur = state.get(key).copied().flatten();
        match kind.as_str() {
            "created" => {
                assert_eq!(cur, None, "change {i}: {name} created while present");
                assert_eq!(
                    *prev, None,
                    "change {i}: {name} created with a previous version"
                );
            }
            "modified" => {
                assert!(cur.is_some(), "change {i}: {name} modified while absent");
                assert_eq!(
                    *prev, cur,
                    "change {i}: {name} modified from another version"
                );
            }
            "removed" => {
                assert!(cur.is_some(), "change {i}: {name} removed while absent");
                assert_eq!(*version, cur, "change {i}: {name} removed another version");
            }
            other => panic!("change {i}: unexpected kind {other}"),
        }
        if kind != "removed" {
            let v = version.expect("a version");
            let h = high.entry(key.clone()).or_insert(0);
            assert!(
                v > *h,
                "change {i}: {name} got version {v} after version {h} in the log"
            );
            *h = v;
            state.insert(key.clone(), Some(v));
        } else {
            state.insert(key.clone(), None);
        }
    }
    // The log's final state is SQL's.
    let rows: Vec<(Vec<u8>, i64)> =
        sqlx::query_as("SELECT key, version FROM ferrod_entries WHERE cache = 'default'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let live: std::collections::HashMap<Vec<u8>, i64> = rows.into_iter().collect();
    for (k, v) in &state {
        assert_eq!(live.get(k).copied(), *v, "{}", String::from_utf8_lossy(k));
    }
    conn.close().await.ok();
    // Both replicas' memory converges to SQL. (Not by waiting for the feed position: a seq
    // taken by a batch that was re-run stays a gap the follower waits out for a while.)
    let start = std::time::Instant::now();
    loop {
        let stale: Vec<String> = state
            .iter()
            .flat_map(|(k, v)| {
                [("a", &ca), ("b", &cb)]
                    .into_iter()
                    .filter(|(_, c)| c.peek(k).map(|e| e.version) != *v)
                    .map(move |(name, c)| {
                        format!(
                            "replica {name}, key {}: memory {:?}, SQL {v:?}",
                            String::from_utf8_lossy(k),
                            c.peek(k).map(|e| e.version)
                        )
                    })
            })
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "memory did not converge to SQL: {stale:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!(
        "changes checked: {}, batches re-run: {}",
        log.len(),
        a.metrics().batches_retried + bb.metrics().batches_retried
    );
    a.shutdown().await;
    bb.shutdown().await;
    db.cleanup().await;
}
