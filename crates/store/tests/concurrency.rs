//! Group commit, FIFO order, concurrent conditional writes, cancellation. See
//! tests/common/mod.rs for how the suite gets a PostgreSQL database (env FERROD_TEST_PG_URL).
mod common;

use std::sync::Arc;

use common::TestDb;
use ferrod_store::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const IMM: Expiration = Expiration::IMMORTAL;

both_backends!(
    fifo_within_batch,
    cas_counter_16_tasks,
    concurrent_puts_one_key,
    group_commit_batches,
    cancelled_writes_keep_memory_equal_to_sql,
);

async fn fifo_within_batch(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    for round in 0..20 {
        let k = b(&format!("k{round}"));
        // join_all polls in order, so the ops are queued in this order and (mostly) land in
        // one batch; each must see the effect of the ones before it.
        let (put1, put2, rm, pia, rep, rm2) = tokio::join!(
            c.put(k.clone(), b("a"), IMM),
            c.put(k.clone(), b("b"), IMM),
            c.remove(k.clone()),
            c.put_if_absent(k.clone(), b("c"), IMM),
            c.replace(k.clone(), b("d"), IMM),
            c.remove_if_version(k.clone(), 0),
        );
        assert_eq!(put1.unwrap(), None);
        let p2 = put2.unwrap().unwrap();
        assert_eq!(p2.value, b("a"));
        match rm.unwrap() {
            RemoveOutcome::Removed(p) => {
                assert_eq!(p.value, b("b"));
                assert!(p.version > p2.version);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(pia.unwrap(), PutIfAbsentOutcome::Stored);
        match rep.unwrap() {
            ReplaceOutcome::Replaced(p) => assert_eq!(p.value, b("c")),
            o => panic!("{o:?}"),
        }
        match rm2.unwrap() {
            VersionedOutcome::Mismatch(cur) => {
                assert_eq!(cur.value, b("d"));
                assert_eq!(Some(cur), c.peek(&k));
            }
            o => panic!("{o:?}"),
        }
    }
    store.shutdown().await;
}

async fn cas_counter_16_tasks(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("counter"), b("0"), IMM).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u64;
            for _ in 0..40 {
                let cur = c.get(b"counter").unwrap();
                let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                match c
                    .replace_if_version(b("counter"), cur.version, b(&(n + 1).to_string()), IMM)
                    .await
                    .unwrap()
                {
                    VersionedOutcome::Done(prev) => {
                        assert_eq!(prev.version, cur.version);
                        wins += 1;
                    }
                    VersionedOutcome::Mismatch(now) => assert_ne!(now.version, cur.version),
                    VersionedOutcome::Missing => panic!("counter vanished"),
                }
            }
            wins
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let fin = c.get(b"counter").unwrap();
    let n: u64 = std::str::from_utf8(&fin.value).unwrap().parse().unwrap();
    assert_eq!(n, total);
    assert!(total >= 40, "at least one task must win each round");
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(store.cache("default").unwrap().get(b"counter").unwrap(), {
        let mut f = fin;
        f.last_used_ms = f.created_ms;
        f
    });
    store.shutdown().await;
}

async fn concurrent_puts_one_key(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut prevs = Vec::new();
            for i in 0..50 {
                let prev = c.put(b("k"), b(&format!("{t}-{i}")), IMM).await.unwrap();
                prevs.push(prev.map(|p| p.version));
            }
            prevs
        }));
    }
    let mut prev_versions = Vec::new();
    for t in tasks {
        prev_versions.extend(t.await.unwrap());
    }
    // Exactly one put saw no previous entry; every other previous version is distinct (each
    // put replaced a different entry): the puts form one chain.
    assert_eq!(prev_versions.iter().filter(|p| p.is_none()).count(), 1);
    let mut vs: Vec<i64> = prev_versions.into_iter().flatten().collect();
    let n = vs.len();
    vs.sort();
    vs.dedup();
    assert_eq!(vs.len(), n);
    let fin = c.peek(b"k").unwrap();
    assert!(fin.version > *vs.last().unwrap());
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(store.cache("default").unwrap().peek(b"k").unwrap(), fin);
    store.shutdown().await;
}

async fn group_commit_batches(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let before = store.metrics();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put(b(&format!("k{i}")), b("v"), IMM).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), None);
    }
    let after = store.metrics();
    let txs = after.transactions_committed - before.transactions_committed;
    assert_eq!(after.ops_committed - before.ops_committed, 1000);
    assert!(txs < 100, "1000 concurrent puts took {txs} transactions");
    assert_eq!(c.size(), 1000);
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_entries").await, 1000);
    store.shutdown().await;
}

/// Writers that each wait for their answer before they write again (every client that does not
/// pipeline): after a batch answered all of them, the next one waits for exactly those writers
/// and starts once they are all back, instead of waiting out its linger for one more that never
/// comes (which cost a third of every batch's cycle at 64 writers, benches/README.md). Counted,
/// not timed: a batch that waited the whole linger is counted in `batches_lingered_out`, which
/// was every batch before. On a single-threaded runtime, so that the writers answered by a
/// batch have all written again before the lane's timer is looked at, however busy the machine
/// (on two worker threads, a preempted writer thread made half the batches wait out the linger
/// while the other tests ran).
mod closed_loop_writers_do_not_wait_out_the_linger {
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite() {
        let db = crate::common::TestDb::sqlite();
        super::closed_loop_writers(&db).await;
        db.cleanup().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        let Some(db) = crate::common::TestDb::postgres().await else {
            eprintln!("skipped: FERROD_TEST_PG_URL not set");
            return;
        };
        super::closed_loop_writers(&db).await;
        db.cleanup().await;
    }
}

async fn closed_loop_writers(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let (writers, rounds) = (16, 40);
    // All writers start together, so the batches hold all of them from the first on.
    let start = Arc::new(tokio::sync::Barrier::new(writers));
    let before = store.metrics();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (c, start) = (c.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for r in 0..rounds {
                c.put(b(&format!("w{w}")), b(&format!("{r}")), IMM)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = store.metrics();
    let batches = after.transactions_committed - before.transactions_committed;
    let lingered_out = after.batches_lingered_out - before.batches_lingered_out;
    assert_eq!(
        after.ops_committed - before.ops_committed,
        (writers * rounds) as u64
    );
    assert!(
        lingered_out * 4 < batches,
        "{lingered_out} of {batches} batches waited out their linger"
    );
    for w in 0..writers {
        assert_eq!(
            c.peek(format!("w{w}").as_bytes()).unwrap().value,
            b(&format!("{}", rounds - 1))
        );
    }
    store.shutdown().await;
}

async fn cancelled_writes_keep_memory_equal_to_sql(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let c = c.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let k = b(&format!("k{}", i % 50));
            match i % 3 {
                0 => drop(c.put(k, b(&i.to_string()), IMM).await),
                1 => drop(c.remove(k).await),
                _ => drop(c.put_if_absent(k, b(&i.to_string()), IMM).await),
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
    }
    // Abort every other task at whatever point it has reached (before queueing, while
    // waiting for the commit, or after).
    for (i, t) in tasks.iter().enumerate() {
        if i % 2 == 0 {
            t.abort();
        }
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    // A write queued after everything else: when it is answered, all earlier ones are applied.
    c.put(b("barrier"), b("x"), IMM).await.unwrap();
    let memory: Vec<(Bytes, Option<EntrySnapshot>)> = (0..50)
        .map(|i| {
            let k = b(&format!("k{i}"));
            let v = c.peek(&k);
            (k, v)
        })
        .collect();
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    for (k, v) in memory {
        assert_eq!(c.peek(&k), v, "memory and SQL differ for {k:?}");
    }
    store.shutdown().await;
}
