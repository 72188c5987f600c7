//! The change feed: replicas follow each other through `ferrod_changes`, subscribers get every
//! committed change exactly once, per key in commit order; shared expiration under a lease.
//! PostgreSQL tests skip without FERROD_TEST_PG_URL (see tests/common/mod.rs); each one runs
//! in its own database.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{sleep_ms, TestDb};
use ferrod_store::*;
use sqlx::Connection;
use tokio::sync::broadcast::{error::TryRecvError, Receiver};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const IMM: Expiration = Expiration::IMMORTAL;

fn lifespan(ms: i64) -> Expiration {
    Expiration::new(Expiry::Millis(ms), Expiry::Infinite)
}

fn idle(ms: i64) -> Expiration {
    Expiration::new(Expiry::Infinite, Expiry::Millis(ms))
}

/// Polls `f` until it holds (max 5 s).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for: {what}"
        );
        sleep_ms(10).await;
    }
}

/// Receives exactly `n` events (max 5 s), then checks nothing more arrives for a moment.
async fn recv_exactly(rx: &mut Receiver<Arc<ChangeEvent>>, n: usize) -> Vec<Arc<ChangeEvent>> {
    let out = recv_n(rx, n).await;
    sleep_ms(300).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("unexpected extra event: {other:?}"),
    }
    out
}

/// Receives `n` events (max 5 s).
async fn recv_n(rx: &mut Receiver<Arc<ChangeEvent>>, n: usize) -> Vec<Arc<ChangeEvent>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => out.push(e),
            Ok(Err(e)) => panic!("subscriber: {e}"),
            Err(_) => panic!("got {} of {n} events: {out:#?}", out.len()),
        }
    }
    out
}

async fn pg() -> Option<TestDb> {
    let db = TestDb::postgres().await;
    if db.is_none() {
        eprintln!("skipped: FERROD_TEST_PG_URL not set");
    }
    db
}

/// Replica configuration: short timers so the tests run fast.
fn replica(db: &TestDb) -> StoreConfig {
    StoreConfig {
        feed_poll_interval: Duration::from_millis(200),
        write_timeout: Duration::from_millis(500),
        ..db.config()
    }
}

async fn raw_pg(db: &TestDb) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(db.url()).await.unwrap()
}

async fn max_seq(db: &TestDb) -> i64 {
    db.count("SELECT COALESCE(MAX(seq), 0)::int8 FROM ferrod_changes")
        .await
}

// ---------------------------------------------------------------------------------------------
// Events of one store (SQLite: published by the writer; PostgreSQL: by the follower).

both_backends!(events_of_one_store);

async fn events_of_one_store(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    assert!(store.is_ready());
    let c = store.cache("default").unwrap();
    let mut rx = store.subscribe();

    c.put(b("k"), b("v1"), IMM).await.unwrap();
    let v1 = c.peek(b"k").unwrap().version;
    c.put(b("k"), b("v2"), IMM).await.unwrap();
    let v2 = c.peek(b"k").unwrap().version;
    assert_eq!(
        c.put_if_absent(b("k"), b("x"), IMM).await.unwrap(),
        PutIfAbsentOutcome::Present(c.peek(b"k").unwrap())
    );
    c.put_all(vec![(b("a"), b("1")), (b("b"), b("2"))], IMM)
        .await
        .unwrap();
    c.remove(b("k")).await.unwrap();
    c.remove(b("k")).await.unwrap(); // missing: no event
    c.put(b("short"), b("sv"), lifespan(300)).await.unwrap();
    let vs = c.peek(b"short").unwrap().version;
    // An expired row overwritten is a creation.
    c.put(b("gone"), b("g1"), lifespan(300)).await.unwrap();
    sleep_ms(400).await;
    c.put(b("gone"), b("g2"), IMM).await.unwrap();
    let vg = c.peek(b"gone").unwrap().version;
    assert_eq!(store.run_maintenance().await.unwrap(), 1);
    c.clear().await.unwrap(); // no per-entry events: one for the cache
    c.put(b("after"), b("x"), IMM).await.unwrap();

    let evs = recv_exactly(&mut rx, 11).await;
    let kinds: Vec<(ChangeKind, &[u8])> = evs.iter().map(|e| (e.kind, &e.key[..])).collect();
    use ChangeKind::*;
    assert_eq!(
        kinds,
        vec![
            (Created, &b"k"[..]),
            (Modified, b"k"),
            (Created, b"a"),
            (Created, b"b"),
            (Removed, b"k"),
            (Created, b"short"),
            (Created, b"gone"),
            (Created, b"gone"),
            (Expired, b"short"),
            (Cleared, b""),
            (Created, b"after"),
        ]
    );
    let listeners: Vec<bool> = evs.iter().map(|e| e.listener_notification).collect();
    assert_eq!(listeners, [vec![true; 9], vec![false], vec![true]].concat());
    assert_eq!(evs[9].cache, "default");
    assert!(
        evs[9].version > evs[7].version && evs[9].version < evs[10].version,
        "the CLEAR's version: {:?}",
        evs[9]
    );
    assert_eq!(evs[0].version, v1);
    assert_eq!(evs[0].value, Some(b("v1")));
    assert_eq!(evs[0].previous, None);
    assert_eq!(evs[0].cache, "default");
    assert_eq!(evs[1].version, v2);
    assert_eq!(evs[1].value, Some(b("v2")));
    assert_eq!(evs[1].previous, Some(b("v1")));
    assert_eq!(evs[4].version, v2, "removed: the removed entry's version");
    assert_eq!(evs[4].previous, Some(b("v2")));
    assert_eq!(evs[7].version, vg);
    assert_eq!(evs[7].previous, None);
    assert_eq!(evs[8].version, vs);
    assert_eq!(
        evs[8].value,
        Some(b("sv")),
        "expired events carry the value"
    );
    until("position reaches the last change", || {
        store.feed_position() > 0
    })
    .await;
    store.shutdown().await;
}

/// A replica's own committed writes are not read back from SQL: when a notification names only
/// its own seqs, the follower publishes their events from memory (metric feed_reads_skipped).
/// Once another replica's change is in the range it reads SQL as before. Either way every
/// event arrives once, in per-key version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_published_without_reading_them_back() {
    let Some(db) = pg().await else {
        return;
    };
    let a = Store::open(replica(&db)).await.unwrap();
    let ca = a.cache("default").unwrap();
    let mut rx = a.subscribe();
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let c = ca.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let k = format!("k{t}-{}", i % 5);
                    c.put(b(&k), b(&i.to_string()), IMM).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let evs = recv_exactly(&mut rx, 200).await;
    let mut last: HashMap<Vec<u8>, (i64, Option<Bytes>)> = HashMap::new();
    for e in &evs {
        if let Some((v, _)) = last.get(&e.key[..]) {
            assert!(e.version > *v, "per-key order: {e:?} after version {v}");
        }
        last.insert(e.key.to_vec(), (e.version, e.value.clone()));
    }
    assert_eq!(last.len(), 40);
    for t in 0..8 {
        for j in 0..5 {
            let (_, v) = &last[format!("k{t}-{j}").as_bytes()];
            assert_eq!(v, &Some(b(&(20 + j).to_string())), "k{t}-{j}");
        }
    }
    // Whether a wake-up finds only committed own changes depends on scheduling (a timer poll
    // or a notification that arrives late reads SQL instead): on a loaded machine a round
    // can end without one, so a few more rounds of the same writes are allowed.
    for round in 0..10 {
        if a.metrics().feed_reads_skipped > 0 {
            break;
        }
        for t in 0..8 {
            ca.put(b(&format!("again{round}-{t}")), b("v"), IMM)
                .await
                .unwrap();
        }
        recv_exactly(&mut rx, 8).await;
    }
    let skipped = a.metrics().feed_reads_skipped;
    assert!(skipped > 0, "no wake-up was served without reading SQL");

    // With another replica writing in between, a reads SQL for the mixed ranges.
    let other = Store::open(replica(&db)).await.unwrap();
    let cb = other.cache("default").unwrap();
    for i in 0..20 {
        let (ra, rb) = tokio::join!(
            ca.put(b(&format!("x{i}")), b("a"), IMM),
            cb.put(b(&format!("y{i}")), b("b"), IMM)
        );
        ra.unwrap();
        rb.unwrap();
    }
    let evs = recv_exactly(&mut rx, 40).await;
    let mut keys: Vec<String> = evs
        .iter()
        .map(|e| String::from_utf8(e.key.to_vec()).unwrap())
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..20)
        .flat_map(|i| [format!("x{i}"), format!("y{i}")])
        .collect();
    want.sort();
    assert_eq!(keys, want);
    for i in 0..20 {
        assert_eq!(ca.peek(format!("y{i}").as_bytes()).unwrap().value, b("b"));
    }
    other.shutdown().await;
    a.shutdown().await;
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Writes with listener notification off (HotRod SKIP_LISTENER_NOTIFICATION).

both_backends!(silent_writes_are_published_for_consumers_but_not_for_listeners);

async fn silent_writes_are_published_for_consumers_but_not_for_listeners(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let quiet = c.with_listener_notification(false);
    assert!(c.listener_notification() && !quiet.listener_notification());
    assert!(quiet
        .with_listener_notification(true)
        .listener_notification());
    let mut rx = store.subscribe();

    quiet.put(b("q"), b("1"), IMM).await.unwrap();
    c.put(b("n"), b("1"), IMM).await.unwrap();
    quiet.put(b("q"), b("2"), IMM).await.unwrap();
    quiet
        .put_all(vec![(b("qa"), b("1")), (b("qb"), b("2"))], IMM)
        .await
        .unwrap();
    let vq = quiet.peek(b"q").unwrap().version;
    assert!(matches!(
        quiet
            .replace_if_version(b("q"), vq, b("3"), IMM)
            .await
            .unwrap(),
        VersionedOutcome::Done(_)
    ));
    quiet.remove(b("qa")).await.unwrap();
    c.put(b("n"), b("2"), IMM).await.unwrap();
    // Memory has every write, silent or not (the handles share the cache).
    assert_eq!(c.peek(b"q").unwrap().value, b("3"));
    assert!(c.peek(b"qa").is_none());
    assert_eq!(c.peek(b"qb").unwrap().value, b("2"));

    // Every change is published (the query index and the schema registry need them); only
    // the notifying ones are for client listeners.
    let evs = recv_exactly(&mut rx, 8).await;
    let got: Vec<(ChangeKind, &[u8], bool)> = evs
        .iter()
        .map(|e| (e.kind, &e.key[..], e.listener_notification))
        .collect();
    use ChangeKind::*;
    assert_eq!(
        got,
        vec![
            (Created, &b"q"[..], false),
            (Created, b"n", true),
            (Modified, b"q", false),
            (Created, b"qa", false),
            (Created, b"qb", false),
            (Modified, b"q", false),
            (Removed, b"qa", false),
            (Modified, b"n", true),
        ]
    );
    // The change log still records the silent writes (followers must apply them).
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_changes WHERE NOT notify")
            .await,
        6
    );
    // Expiration of an entry written silently still raises Expired.
    quiet.put(b("short"), b("s"), lifespan(200)).await.unwrap();
    sleep_ms(300).await;
    // The background reaper may have swept it already.
    store.run_maintenance().await.unwrap();
    let evs = recv_exactly(&mut rx, 2).await;
    assert_eq!(
        (
            evs[0].kind,
            evs[0].key.clone(),
            evs[0].listener_notification
        ),
        (Created, b("short"), false)
    );
    assert_eq!(
        (
            evs[1].kind,
            evs[1].key.clone(),
            evs[1].listener_notification
        ),
        (Expired, b("short"), true)
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_writes_reach_other_replicas_marked_silent() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let bs = Store::open(replica(&db)).await.unwrap();
    let (ca, cb) = (a.cache("default").unwrap(), bs.cache("default").unwrap());
    let (qa, qb) = (
        ca.with_listener_notification(false),
        cb.with_listener_notification(false),
    );
    let (mut rxa, mut rxb) = (a.subscribe(), bs.subscribe());

    qa.put(b("k"), b("v1"), IMM).await.unwrap();
    qa.put_all(vec![(b("x"), b("1")), (b("y"), b("2"))], IMM)
        .await
        .unwrap();
    qb.put(b("fromb"), b("b1"), IMM).await.unwrap();
    until("B sees A's silent writes", || {
        cb.peek(b"k").is_some_and(|e| e.value == b("v1"))
            && cb.peek(b"x").is_some()
            && cb.peek(b"y").is_some()
    })
    .await;
    until("A sees B's silent write", || ca.peek(b"fromb").is_some()).await;
    qa.remove(b("x")).await.unwrap();
    until("B drops the silently removed key", || {
        cb.peek(b"x").is_none()
    })
    .await;
    qb.put(b("k"), b("v2"), IMM).await.unwrap();
    until("A sees B's silent overwrite", || {
        ca.peek(b"k").is_some_and(|e| e.value == b("v2"))
    })
    .await;

    // A notifying write afterwards. Each subscriber got every change once, only this one
    // for listeners.
    ca.put(b("loud"), b("1"), IMM).await.unwrap();
    for rx in [&mut rxa, &mut rxb] {
        let evs = recv_exactly(rx, 7).await;
        let mut silent: Vec<(ChangeKind, Bytes)> = evs[..6]
            .iter()
            .map(|e| {
                assert!(!e.listener_notification, "silent: {e:?}");
                (e.kind, e.key.clone())
            })
            .collect();
        silent.sort_by(|x, y| (&x.1, format!("{:?}", x.0)).cmp(&(&y.1, format!("{:?}", y.0))));
        use ChangeKind::*;
        assert_eq!(
            silent,
            vec![
                (Created, b("fromb")),
                (Created, b("k")),
                (Modified, b("k")),
                (Created, b("x")),
                (Removed, b("x")),
                (Created, b("y")),
            ]
        );
        assert_eq!(
            (
                evs[6].kind,
                evs[6].key.clone(),
                evs[6].listener_notification
            ),
            (Created, b("loud"), true)
        );
    }
    until("positions meet", || {
        a.feed_position() == bs.feed_position() && a.feed_position() > 0
    })
    .await;
    for k in ["k", "y", "fromb", "loud"] {
        assert_eq!(ca.peek(k.as_bytes()), cb.peek(k.as_bytes()), "key {k}");
    }
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Replicas on PostgreSQL.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_a_appears_on_b() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let bs = Store::open(replica(&db)).await.unwrap();
    assert!(a.is_ready() && bs.is_ready());
    let (ca, cb) = (a.cache("default").unwrap(), bs.cache("default").unwrap());
    let mut rx = bs.subscribe();

    ca.put(b("k"), b("v1"), IMM).await.unwrap();
    let v1 = ca.peek(b"k").unwrap().version;
    until("B sees the put", || {
        cb.peek(b"k").is_some_and(|e| e.version == v1)
    })
    .await;
    assert_eq!(cb.peek(b"k").unwrap(), ca.peek(b"k").unwrap());
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].kind, ChangeKind::Created);
    assert_eq!((ev[0].version, ev[0].value.clone()), (v1, Some(b("v1"))));

    ca.put(b("k"), b("v2"), IMM).await.unwrap();
    let v2 = ca.peek(b"k").unwrap().version;
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].kind, ChangeKind::Modified);
    assert_eq!(ev[0].version, v2);
    assert_eq!(ev[0].value, Some(b("v2")));
    assert_eq!(ev[0].previous, Some(b("v1")), "B held the previous value");
    assert_eq!(cb.peek(b"k").unwrap().value, b("v2"));

    ca.remove(b("k")).await.unwrap();
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].kind, ChangeKind::Removed);
    assert_eq!(ev[0].version, v2);
    assert_eq!(ev[0].previous, Some(b("v2")));
    assert!(cb.peek(b"k").is_none());

    // Writes on B are seen by A, and B's own subscriber gets them once too.
    let mut rxa = a.subscribe();
    cb.put(b("fromb"), b("x"), IMM).await.unwrap();
    assert_eq!(
        cb.get(b"fromb").unwrap().value,
        b("x"),
        "own writes at once"
    );
    until("A sees B's put", || ca.peek(b"fromb").is_some()).await;
    assert_eq!(recv_exactly(&mut rxa, 1).await[0].key, b("fromb"));
    assert_eq!(recv_exactly(&mut rx, 1).await[0].key, b("fromb"));

    // CLEAR empties the other replica without per-entry events: B publishes one Cleared,
    // once its memory is empty, and A publishes the same for its own CLEAR.
    ca.put(b("c1"), b("x"), IMM).await.unwrap();
    until("B sees c1", || cb.peek(b"c1").is_some()).await;
    let _ = recv_exactly(&mut rx, 1).await;
    let _ = recv_exactly(&mut rxa, 1).await;
    ca.clear().await.unwrap();
    let ev = recv_n(&mut rx, 1).await;
    assert_eq!(
        (ev[0].kind, ev[0].cache.as_str(), ev[0].key.clone()),
        (ChangeKind::Cleared, "default", Bytes::new())
    );
    assert_eq!(cb.size(), 0, "B's memory is cleared before the event");
    assert!(!ev[0].listener_notification);
    let ev_a = recv_n(&mut rxa, 1).await;
    assert_eq!(ev_a, ev, "the same event on the replica that cleared");
    ca.put(b("c2"), b("y"), IMM).await.unwrap();
    until("B sees the write after the clear", || {
        cb.peek(b"c2").is_some()
    })
    .await;
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(
        (ev[0].kind, ev[0].key.clone()),
        (ChangeKind::Created, b("c2"))
    );

    // A cache created on A shows up on B (before anything is written to it); removing it
    // removes it on B. Both publish a Cleared for the cache.
    let na = a.get_or_create_cache(CacheDef::new("other")).await.unwrap();
    let ev = recv_n(&mut rx, 1).await;
    assert_eq!(
        (ev[0].kind, ev[0].cache.as_str()),
        (ChangeKind::Cleared, "other")
    );
    assert!(bs.cache("other").is_some(), "B registered the new cache");
    na.put(b("o"), b("1"), IMM).await.unwrap();
    until("B adopts the new cache", || {
        bs.cache("other").is_some_and(|c| c.peek(b"o").is_some())
    })
    .await;
    assert_eq!(recv_exactly(&mut rx, 1).await[0].cache, "other");
    a.remove_cache("other").await.unwrap();
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(
        (ev[0].kind, ev[0].cache.as_str()),
        (ChangeKind::Cleared, "other")
    );
    assert!(bs.cache("other").is_none(), "B dropped the removed cache");

    until("positions meet", || {
        a.feed_position() == bs.feed_position() && a.feed_position() > 0
    })
    .await;
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_across_replicas() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let bs = Store::open(replica(&db)).await.unwrap();
    let mut rxs = [a.subscribe(), bs.subscribe()];
    let keys = ["k0", "k1", "k2", "k3"];
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = if t % 2 == 0 { &a } else { &bs }.cache("default").unwrap();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for i in 0..40 {
                let k = keys[(t + i) % 4];
                if i % 7 == 3 {
                    if matches!(c.remove(b(k)).await.unwrap(), RemoveOutcome::Removed(_)) {
                        n += 1;
                    }
                } else {
                    c.put(b(k), b(&format!("{t}-{i}")), IMM).await.unwrap();
                    n += 1;
                }
            }
            n
        }));
    }
    let mut changes = 0usize;
    for t in tasks {
        changes += t.await.unwrap();
    }
    let top = max_seq(&db).await;
    until("both followers caught up", || {
        a.feed_position() >= top && bs.feed_position() >= top
    })
    .await;
    let mut sql: HashMap<String, Option<i64>> = HashMap::new();
    for k in keys {
        let v = db
            .count(&format!(
                "SELECT COALESCE((SELECT version FROM ferrod_entries WHERE key = '{k}'::bytea), -1)"
            ))
            .await;
        sql.insert(k.to_string(), (v >= 0).then_some(v));
    }
    for (store, rx) in [&a, &bs].into_iter().zip(rxs.iter_mut()) {
        let evs = recv_exactly(rx, changes).await;
        let mut last: HashMap<Bytes, (i64, ChangeKind)> = HashMap::new();
        for e in &evs {
            if let Some((v, kind)) = last.get(&e.key) {
                let grows = match e.kind {
                    // A removal carries the version it removed: the one before it.
                    ChangeKind::Removed => e.version == *v && *kind != ChangeKind::Removed,
                    _ => e.version > *v,
                };
                assert!(grows, "per-key order broken at {e:?} after {v} {kind:?}");
            }
            last.insert(e.key.clone(), (e.version, e.kind));
        }
        let c = store.cache("default").unwrap();
        for k in keys {
            let sql_v = sql[k];
            let ev_v = last
                .get(&b(k))
                .and_then(|(v, kind)| (*kind != ChangeKind::Removed).then_some(*v));
            assert_eq!(ev_v, sql_v, "last event of {k} is SQL's row");
            assert_eq!(
                c.peek(k.as_bytes()).map(|e| e.version),
                sql_v,
                "memory of {k}"
            );
        }
    }
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

/// Seqs are taken at insert, not at commit: a transaction holding a low seq commits after a
/// higher one. The follower must deliver the late one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_seq_commit() {
    let Some(db) = pg().await else { return };
    let mut cfg = replica(&db);
    // Longer than the transaction held open below, so the gap is waited for.
    cfg.write_timeout = Duration::from_secs(5);
    let a = Store::open(cfg.clone()).await.unwrap();
    let bs = Store::open(cfg).await.unwrap();
    let mut rx = bs.subscribe();

    let mut raw = raw_pg(&db).await;
    sqlx::query("BEGIN").execute(&mut raw).await.unwrap();
    let version: i64 = sqlx::query_scalar("SELECT nextval('ferrod_version_seq')")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ferrod_entries (cache, key, value, version, created_ms, lifespan_ms, \
         last_used_ms, max_idle_ms) VALUES ('default', 'low', 'lv', $1, 0, -1, 0, -1)",
    )
    .bind(version)
    .execute(&mut raw)
    .await
    .unwrap();
    let low: i64 = sqlx::query_scalar(
        "INSERT INTO ferrod_changes (cache, key, kind, version, committed_ms, origin) \
         VALUES ('default', 'low', 'created', $1, \
         (extract(epoch FROM clock_timestamp()) * 1000)::int8, 'raw') RETURNING seq",
    )
    .bind(version)
    .fetch_one(&mut raw)
    .await
    .unwrap();

    let ca = a.cache("default").unwrap();
    ca.put(b("high"), b("hv"), IMM).await.unwrap();
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(
        ev[0].key,
        b("high"),
        "rows above a gap are delivered at once"
    );
    assert!(
        bs.feed_position() < low,
        "position stays below the missing seq"
    );

    sqlx::query("COMMIT").execute(&mut raw).await.unwrap();
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].key, b("low"));
    assert_eq!(ev[0].kind, ChangeKind::Created);
    assert_eq!(ev[0].version, version);
    assert_eq!(ev[0].value, Some(b("lv")));
    let cb = bs.cache("default").unwrap();
    assert_eq!(cb.peek(b"low").unwrap().value, b("lv"));
    let top = max_seq(&db).await;
    until("position passes both", || bs.feed_position() >= top).await;
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

/// A seq taken by a transaction that rolls back never appears: after the gap bound
/// (4 x write_timeout) the position moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_seq_is_skipped() {
    let Some(db) = pg().await else { return };
    let cfg = replica(&db); // write_timeout 500 ms: gap bound 2 s
    let a = Store::open(cfg).await.unwrap();
    let mut raw = raw_pg(&db).await;
    sqlx::query("BEGIN").execute(&mut raw).await.unwrap();
    let lost: i64 = sqlx::query_scalar(
        "INSERT INTO ferrod_changes (cache, key, kind, version, committed_ms) \
         VALUES ('default', 'x', 'created', 1, \
         (extract(epoch FROM clock_timestamp()) * 1000)::int8) RETURNING seq",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    let ca = a.cache("default").unwrap();
    ca.put(b("after"), b("v"), IMM).await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut raw).await.unwrap();
    let top = max_seq(&db).await;
    assert!(top > lost);
    sleep_ms(500).await;
    assert!(a.feed_position() < lost, "not skipped before the bound");
    let start = Instant::now();
    while a.feed_position() < top {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "gap never skipped"
        );
        sleep_ms(50).await;
    }
    a.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_connection_killed() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let bs = Store::open(replica(&db)).await.unwrap();
    let mut rx = bs.subscribe();
    let ca = a.cache("default").unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..150 {
            ca.put(b(&format!("k{i}")), b("v"), IMM).await.unwrap();
            sleep_ms(5).await;
        }
    });
    let mut killed = 0;
    for _ in 0..4 {
        sleep_ms(150).await;
        killed += db
            .count(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .await;
    }
    writer.await.unwrap();
    assert!(killed >= 4, "killed {killed} listening connections");
    let evs = recv_exactly(&mut rx, 150).await;
    let mut keys: Vec<Bytes> = evs.iter().map(|e| e.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 150, "every change exactly once");
    let cb = bs.cache("default").unwrap();
    for i in 0..150 {
        assert!(cb.peek(format!("k{i}").as_bytes()).is_some(), "k{i} on B");
    }
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_change_rows_are_skipped() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let mut rx = a.subscribe();
    let now_ms = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";
    db.exec(&format!(
        "INSERT INTO ferrod_changes (cache, key, kind, version, committed_ms) VALUES \
         ('default', 'x', 'bogus', 1, {now_ms}), \
         ('default', NULL, 'created', 2, {now_ms}), \
         ('default', 'y', 'modified', NULL, {now_ms}), \
         ('no_such_cache', 'z', 'created', 3, {now_ms})"
    ))
    .await;
    let ca = a.cache("default").unwrap();
    ca.put(b("good"), b("v"), IMM).await.unwrap();
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].key, b("good"));
    let top = max_seq(&db).await;
    until("position passes the garbage", || a.feed_position() >= top).await;
    assert!(a.is_ready());
    a.shutdown().await;
    db.cleanup().await;
}

fn sweeping(db: &TestDb) -> StoreConfig {
    StoreConfig {
        reaper_interval: Duration::from_millis(100),
        expiration_lease: Duration::from_millis(1000),
        ..replica(db)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweeper_and_expired_events_everywhere() {
    let Some(db) = pg().await else { return };
    let a = Store::open(sweeping(&db)).await.unwrap();
    let bs = Store::open(sweeping(&db)).await.unwrap();
    let (mut rxa, mut rxb) = (a.subscribe(), bs.subscribe());
    let ca = a.cache("default").unwrap();
    let mut versions = HashMap::new();
    let entries = (0..20)
        .map(|i| (b(&format!("e{i}")), b(&format!("val{i}"))))
        .collect();
    ca.put_all(entries, lifespan(500)).await.unwrap();
    for i in 0..20 {
        let k = format!("e{i}");
        versions.insert(b(&k), ca.peek(k.as_bytes()).unwrap().version);
    }
    for rx in [&mut rxa, &mut rxb] {
        assert!(recv_n(rx, 20)
            .await
            .iter()
            .all(|e| e.kind == ChangeKind::Created));
    }
    until("rows swept", || {
        a.metrics().entries_expired + bs.metrics().entries_expired >= 20
    })
    .await;
    for rx in [&mut rxa, &mut rxb] {
        let evs = recv_exactly(rx, 20).await;
        for e in evs {
            assert_eq!(e.kind, ChangeKind::Expired);
            assert_eq!(e.version, versions[&e.key]);
            let i = std::str::from_utf8(&e.key[1..]).unwrap();
            assert_eq!(e.value, Some(b(&format!("val{i}"))));
        }
    }
    let (ea, eb) = (a.metrics().entries_expired, bs.metrics().entries_expired);
    assert!(
        (ea, eb) == (20, 0) || (ea, eb) == (0, 20),
        "one replica sweeps: {ea} / {eb}"
    );
    assert!(a.holds_expiration_lease() != bs.holds_expiration_lease());
    assert_eq!(bs.cache("default").unwrap().size(), 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_entries").await, 0);
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_taken_over_when_holder_dies() {
    let Some(db) = pg().await else { return };
    let a = Store::open(sweeping(&db)).await.unwrap();
    until("A holds the lease", || a.holds_expiration_lease()).await;
    let bs = Store::open(sweeping(&db)).await.unwrap();
    sleep_ms(300).await;
    assert!(!bs.holds_expiration_lease());
    // Dropped without shutdown: its lease is not released, it just stops being renewed.
    drop(a);
    let mut rx = bs.subscribe();
    let cb = bs.cache("default").unwrap();
    cb.put(b("k"), b("v"), lifespan(100)).await.unwrap();
    let evs = recv_exactly(&mut rx, 2).await;
    assert_eq!(evs[1].kind, ChangeKind::Expired);
    assert_eq!(evs[1].value, Some(b("v")));
    assert!(bs.holds_expiration_lease());
    bs.shutdown().await;
    // A clean shutdown hands the lease over at once.
    let c = Store::open(sweeping(&db)).await.unwrap();
    until("C takes the released lease", || c.holds_expiration_lease()).await;
    c.shutdown().await;
    db.cleanup().await;
}

/// B's clock says the entry is idle, but A keeps reading it: B treats it as absent meanwhile,
/// never expires it, and sees it alive again once A's touches reach SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_idle_kept_alive_by_reads_on_other_replica() {
    let Some(db) = pg().await else { return };
    let cfg = StoreConfig {
        reaper_interval: Duration::from_millis(100),
        ..replica(&db)
    };
    let a = Store::open(cfg.clone()).await.unwrap();
    let bs = Store::open(cfg).await.unwrap();
    let mut rxb = bs.subscribe();
    let (ca, cb) = (a.cache("default").unwrap(), bs.cache("default").unwrap());
    // Max-idle 1.5 s, read on A for 4 s: long enough that a feed slowed by a loaded machine
    // still delivers the entry to B before it would be idle there, short next to the reads.
    ca.put(b("s"), b("v"), idle(1500)).await.unwrap();
    until("B sees it", || cb.peek(b"s").is_some()).await;
    let start = Instant::now();
    let (mut b_hits, mut rounds) = (0, 0);
    let mut events = Vec::new();
    while start.elapsed() < Duration::from_millis(4000) {
        assert!(ca.get(b"s").is_some(), "A keeps it alive");
        if cb.get(b"s").is_some() {
            b_hits += 1;
        }
        rounds += 1;
        while let Ok(e) = rxb.try_recv() {
            events.push(e);
        }
        sleep_ms(100).await;
    }
    assert!(cb.get_fresh(b"s").await.unwrap().is_some());
    assert!(
        b_hits * 2 > rounds,
        "B sees it most of the time ({b_hits} of {rounds})"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_entries").await, 1);
    let kinds: Vec<ChangeKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [ChangeKind::Created],
        "no expiration while read on A"
    );
    // Nobody reads it any more: it expires, once, everywhere.
    let start = Instant::now();
    let ev = loop {
        assert!(start.elapsed() < Duration::from_secs(10));
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(100), rxb.recv()).await {
            break e;
        }
    };
    assert_eq!(ev.kind, ChangeKind::Expired);
    assert!(ca.peek(b"s").is_none() && cb.peek(b"s").is_none());
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_behind_pruned_log_reloads() {
    let Some(db) = pg().await else { return };
    let a = Store::open(StoreConfig {
        changelog_retention: Duration::ZERO,
        reaper_interval: Duration::from_secs(3600),
        ..replica(&db)
    })
    .await
    .unwrap();
    // B never runs maintenance, so A's run_maintenance holds the lease and prunes.
    let bs = Store::open(StoreConfig {
        reaper_interval: Duration::from_secs(3600),
        ..replica(&db)
    })
    .await
    .unwrap();
    let (ca, cb) = (a.cache("default").unwrap(), bs.cache("default").unwrap());
    ca.put(b("old"), b("v"), IMM).await.unwrap();
    until("B sees old", || cb.peek(b"old").is_some()).await;

    bs.pause_feed(true);
    sleep_ms(300).await; // a poll already under way finishes
    for i in 0..30 {
        ca.put(b(&format!("k{i}")), b("v"), IMM).await.unwrap();
    }
    ca.remove(b("old")).await.unwrap();
    sleep_ms(5).await;
    a.run_maintenance().await.unwrap(); // prunes every change row
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_changes").await, 0);
    assert!(cb.peek(b"k0").is_none() && cb.peek(b"old").is_some());

    let mut rx = bs.subscribe();
    bs.pause_feed(false);
    until("B reloaded", || {
        cb.size() == 30 && cb.peek(b"old").is_none() && bs.is_ready()
    })
    .await;
    // The missed changes have no events; each cache's reload has one, after memory.
    let evs = recv_exactly(&mut rx, 1).await;
    assert_eq!(
        (
            evs[0].kind,
            evs[0].cache.as_str(),
            evs[0].listener_notification
        ),
        (ChangeKind::Reloaded, "default", false)
    );
    // and follows again afterwards
    ca.put(b("later"), b("v"), IMM).await.unwrap();
    until("B follows after the reload", || cb.peek(b"later").is_some()).await;
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_fresh_reads_through_a_stale_miss() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let bs = Store::open(replica(&db)).await.unwrap();
    let (ca, cb) = (a.cache("default").unwrap(), bs.cache("default").unwrap());
    bs.pause_feed(true);
    sleep_ms(300).await; // a poll already under way finishes
    ca.put(b("k"), b("v"), IMM).await.unwrap();
    sleep_ms(300).await;
    assert!(
        cb.get(b"k").is_none(),
        "memory-only read misses while the feed lags"
    );
    let fresh = cb.get_fresh(b"k").await.unwrap().unwrap();
    assert_eq!(fresh, ca.peek(b"k").unwrap());
    assert_eq!(cb.peek(b"k").unwrap(), fresh, "memory updated");
    ca.remove(b("k")).await.unwrap();
    assert!(cb.get_fresh(b"k").await.unwrap().is_none());
    assert!(cb.peek(b"k").is_none());
    bs.pause_feed(false);
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

/// Mixed writes on two replicas, CLEARs included: once the feed has caught up, both memories
/// equal SQL (CLEAR and writes of its cache are ordered by the cache row lock, and memory never
/// goes back to a state older than one it has seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_with_clears() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let bs = Store::open(replica(&db)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let c = if t % 2 == 0 { &a } else { &bs }.cache("default").unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..60usize {
                let k = b(&format!("k{}", (t * 7 + i) % 24));
                match i % 10 {
                    0 if t == 0 || t == 1 => c.clear().await.unwrap(),
                    1 | 5 => {
                        c.remove(k).await.unwrap();
                    }
                    2 => {
                        c.put_if_absent(k, b(&format!("{t}-{i}")), IMM)
                            .await
                            .unwrap();
                    }
                    3 => {
                        if let Some(cur) = c.get(&k) {
                            c.replace_if_version(k, cur.version, b("cas"), IMM)
                                .await
                                .unwrap();
                        }
                    }
                    _ => {
                        c.put(k, b(&format!("{t}-{i}")), IMM).await.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let top = max_seq(&db).await;
    until("both caught up", || {
        a.feed_position() >= top && bs.feed_position() >= top
    })
    .await;
    let mut conn = raw_pg(&db).await;
    let rows: Vec<(Vec<u8>, i64)> =
        sqlx::query_as("SELECT key, version FROM ferrod_entries WHERE cache = 'default'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let sql: HashMap<Vec<u8>, i64> = rows.into_iter().collect();
    for s in [&a, &bs] {
        let c = s.cache("default").unwrap();
        let mut mem: HashMap<Vec<u8>, i64> = HashMap::new();
        for k in c.keys() {
            mem.insert(k.to_vec(), c.peek(&k).unwrap().version);
        }
        assert_eq!(mem, sql, "memory equals SQL");
    }
    a.shutdown().await;
    bs.shutdown().await;
    db.cleanup().await;
}

/// Rows as a ferrod from before migration 2 writes them during a rolling upgrade: kinds
/// `put`/`remove`, no origin, no previous version, no NOTIFY. The poll picks them up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_change_rows_are_followed() {
    let Some(db) = pg().await else { return };
    let a = Store::open(replica(&db)).await.unwrap();
    let mut rx = a.subscribe();
    let c = a.cache("default").unwrap();
    let now_ms = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";
    let write = |sql: String| {
        let db = &db;
        async move { db.exec(&format!("BEGIN; {sql}; COMMIT")).await }
    };
    write(format!(
        "INSERT INTO ferrod_entries (cache, key, value, version, created_ms, lifespan_ms, \
         last_used_ms, max_idle_ms) VALUES ('default', 'old', 'o1', 1000001, {now_ms}, -1, \
         {now_ms}, -1); INSERT INTO ferrod_changes (cache, key, kind, version, committed_ms) \
         VALUES ('default', 'old', 'put', 1000001, {now_ms})"
    ))
    .await;
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].kind, ChangeKind::Created);
    assert_eq!(ev[0].value, Some(b("o1")));
    assert_eq!(c.peek(b"old").unwrap().version, 1000001);
    write(format!(
        "UPDATE ferrod_entries SET value = 'o2', version = 1000002 WHERE key = 'old'; \
         INSERT INTO ferrod_changes (cache, key, kind, version, committed_ms) \
         VALUES ('default', 'old', 'put', 1000002, {now_ms})"
    ))
    .await;
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].kind, ChangeKind::Modified);
    assert_eq!(ev[0].previous, Some(b("o1")));
    write(format!(
        "DELETE FROM ferrod_entries WHERE key = 'old'; \
         INSERT INTO ferrod_changes (cache, key, kind, version, committed_ms) \
         VALUES ('default', 'old', 'remove', 1000002, {now_ms})"
    ))
    .await;
    let ev = recv_exactly(&mut rx, 1).await;
    assert_eq!(ev[0].kind, ChangeKind::Removed);
    assert_eq!(ev[0].previous, Some(b("o2")));
    assert!(c.peek(b"old").is_none());
    a.shutdown().await;
    db.cleanup().await;
}
