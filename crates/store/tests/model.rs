//! Property test: random op sequences on a few keys give the same outcomes from the store as
//! from a HashMap model (single task, no expiry). Runs on SQLite, and on PostgreSQL when
//! FERROD_TEST_PG_URL is set (see tests/common/mod.rs).
mod common;

use std::collections::HashMap;

use common::TestDb;
use ferrod_store::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Get(u8),
    Put(u8, u8),
    PutIfAbsent(u8, u8),
    Replace(u8, u8),
    /// `true`: use the key's current version, `false`: a stale/wrong one.
    ReplaceIfVersion(u8, bool, u8),
    Remove(u8),
    RemoveIfVersion(u8, bool),
    PutAll(Vec<(u8, u8)>),
    Clear,
    /// Several ops submitted together so they share a batch.
    Concurrent(Vec<(u8, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..4;
    let v = any::<u8>();
    prop_oneof![
        (k.clone()).prop_map(Op::Get),
        (k.clone(), v).prop_map(|(k, v)| Op::Put(k, v)),
        (k.clone(), v).prop_map(|(k, v)| Op::PutIfAbsent(k, v)),
        (k.clone(), v).prop_map(|(k, v)| Op::Replace(k, v)),
        (k.clone(), any::<bool>(), v).prop_map(|(k, b, v)| Op::ReplaceIfVersion(k, b, v)),
        (k.clone()).prop_map(Op::Remove),
        (k.clone(), any::<bool>()).prop_map(|(k, b)| Op::RemoveIfVersion(k, b)),
        proptest::collection::vec((k.clone(), v), 0..4).prop_map(Op::PutAll),
        Just(Op::Clear),
        proptest::collection::vec((k, v), 1..6).prop_map(Op::Concurrent),
    ]
}

fn key(k: u8) -> Bytes {
    Bytes::from(vec![b'k', k])
}

fn val(v: u8) -> Bytes {
    Bytes::from(vec![v; (v % 5) as usize])
}

/// Model: key -> (value, version). Versions come from the store (they are not predictable) but
/// the model checks everything that depends on them.
type Model = HashMap<u8, (Bytes, i64)>;

async fn check(cache: &Cache, model: &mut Model, op: &Op) {
    let ver = |m: &Model, k: u8, right: bool| match (m.get(&k), right) {
        (Some((_, v)), true) => *v,
        (Some((_, v)), false) => v + 1_000_000,
        (None, _) => 42,
    };
    match op {
        Op::Get(k) => {
            let got = cache.get(&key(*k)).map(|s| (s.value, s.version));
            assert_eq!(got.as_ref(), model.get(k));
        }
        Op::Put(k, v) => {
            let prev = cache
                .put(key(*k), val(*v), Expiration::IMMORTAL)
                .await
                .unwrap();
            assert_eq!(prev.map(|s| (s.value, s.version)).as_ref(), model.get(k));
            let new = cache.peek(&key(*k)).unwrap();
            assert!(model.get(k).is_none_or(|(_, old)| new.version > *old));
            model.insert(*k, (val(*v), new.version));
        }
        Op::PutIfAbsent(k, v) => {
            let out = cache
                .put_if_absent(key(*k), val(*v), Expiration::IMMORTAL)
                .await
                .unwrap();
            match (out, model.get(k)) {
                (PutIfAbsentOutcome::Present(s), Some(m)) => assert_eq!(&(s.value, s.version), m),
                (PutIfAbsentOutcome::Stored, None) => {
                    let new = cache.peek(&key(*k)).unwrap();
                    model.insert(*k, (val(*v), new.version));
                }
                (o, m) => panic!("store {o:?} model {m:?}"),
            }
        }
        Op::Replace(k, v) => {
            let out = cache
                .replace(key(*k), val(*v), Expiration::IMMORTAL)
                .await
                .unwrap();
            match (out, model.get(k)) {
                (ReplaceOutcome::Missing, None) => {}
                (ReplaceOutcome::Replaced(s), Some(m)) => {
                    assert_eq!(&(s.value, s.version), m);
                    let new = cache.peek(&key(*k)).unwrap();
                    model.insert(*k, (val(*v), new.version));
                }
                (o, m) => panic!("store {o:?} model {m:?}"),
            }
        }
        Op::ReplaceIfVersion(k, right, v) => {
            let version = ver(model, *k, *right);
            let out = cache
                .replace_if_version(key(*k), version, val(*v), Expiration::IMMORTAL)
                .await
                .unwrap();
            match (out, model.get(k)) {
                (VersionedOutcome::Missing, None) => {}
                (VersionedOutcome::Mismatch(s), Some(m)) if !right => {
                    assert_eq!(&(s.value, s.version), m)
                }
                (VersionedOutcome::Done(s), Some(m)) if *right => {
                    assert_eq!(&(s.value, s.version), m);
                    let new = cache.peek(&key(*k)).unwrap();
                    model.insert(*k, (val(*v), new.version));
                }
                (o, m) => panic!("store {o:?} model {m:?}"),
            }
        }
        Op::Remove(k) => {
            let out = cache.remove(key(*k)).await.unwrap();
            match (out, model.remove(k)) {
                (RemoveOutcome::Missing, None) => {}
                (RemoveOutcome::Removed(s), Some(m)) => assert_eq!((s.value, s.version), m),
                (o, m) => panic!("store {o:?} model {m:?}"),
            }
        }
        Op::RemoveIfVersion(k, right) => {
            let version = ver(model, *k, *right);
            let out = cache.remove_if_version(key(*k), version).await.unwrap();
            match (out, model.get(k).cloned()) {
                (VersionedOutcome::Missing, None) => {}
                (VersionedOutcome::Mismatch(s), Some(m)) if !right => {
                    assert_eq!((s.value, s.version), m)
                }
                (VersionedOutcome::Done(s), Some(m)) if *right => {
                    assert_eq!((s.value, s.version), m);
                    model.remove(k);
                }
                (o, m) => panic!("store {o:?} model {m:?}"),
            }
        }
        Op::PutAll(entries) => {
            let list = entries.iter().map(|(k, v)| (key(*k), val(*v))).collect();
            cache.put_all(list, Expiration::IMMORTAL).await.unwrap();
            for (k, v) in entries {
                let new = cache.peek(&key(*k)).unwrap();
                model.insert(*k, (val(*v), new.version));
            }
        }
        Op::Clear => {
            cache.clear().await.unwrap();
            model.clear();
        }
        Op::Concurrent(puts) => {
            // All queued before the writer answers any: within the batch each put must see
            // the previous one's value.
            let futs = puts
                .iter()
                .map(|(k, v)| cache.put(key(*k), val(*v), Expiration::IMMORTAL));
            let prevs = futures::future::join_all(futs).await;
            for ((k, v), prev) in puts.iter().zip(prevs) {
                let prev = prev.unwrap().map(|s| s.value);
                assert_eq!(prev, model.get(k).map(|(v, _)| v.clone()));
                // the version is only known for the last put of a key; use a placeholder
                model.insert(*k, (val(*v), -1));
            }
            for (k, _) in puts {
                let cur = cache.peek(&key(*k)).unwrap();
                model.insert(*k, (cur.value, cur.version));
            }
        }
    }
    // memory view equals the model after every op
    assert_eq!(cache.size(), model.len() as u64);
}

fn run_model(db: TestDb, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(Store::open(db.config())).unwrap();
    let counter = std::sync::atomic::AtomicU64::new(0);
    let cfg = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(ops in proptest::collection::vec(op(), 1..40))| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let cache = store
                .get_or_create_cache(CacheDef::new(format!("model{n}")))
                .await
                .unwrap();
            let mut model = Model::new();
            for op in &ops {
                check(&cache, &mut model, op).await;
            }
        });
    });
    rt.block_on(async {
        store.shutdown().await;
        db.cleanup().await;
    });
}

#[test]
fn model_sqlite() {
    run_model(TestDb::sqlite(), 64);
}

#[test]
fn model_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        eprintln!("skipped: FERROD_TEST_PG_URL not set");
        return;
    };
    drop(rt);
    run_model(db, 32);
}
