//! Single-op semantics, versions, expiration, sizes. See tests/common/mod.rs for how the suite
//! gets a PostgreSQL database (env FERROD_TEST_PG_URL).
mod common;

use common::{sleep_ms, TestDb};
use ferrod_store::*;

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

both_backends!(
    every_op_and_outcome,
    versions_unique_and_growing,
    lifespan_expiry,
    max_idle_extended_by_get,
    expired_counts_as_absent,
    reaper_deletes_rows,
    touches_flushed_to_sql,
    default_expiration_from_cache,
    large_values,
    too_large,
    clear_and_changelog,
    cache_admin,
);

async fn every_op_and_outcome(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(store.is_sqlite(), db.is_sqlite());
    let c = store.cache("default").unwrap();
    assert_eq!(c.name(), "default");

    // put: no previous, then previous
    assert_eq!(c.put(b("k"), b("v1"), IMM).await.unwrap(), None);
    let s1 = c.get(b"k").unwrap();
    assert_eq!(s1.value, b("v1"));
    assert!(s1.version > 0);
    assert_eq!((s1.lifespan_ms, s1.max_idle_ms), (-1, -1));
    let prev = c.put(b("k"), b("v2"), IMM).await.unwrap().unwrap();
    assert_eq!(prev, s1);
    let s2 = c.peek(b"k").unwrap();
    assert!(s2.version > s1.version);

    // put_if_absent
    match c.put_if_absent(b("k"), b("x"), IMM).await.unwrap() {
        PutIfAbsentOutcome::Present(cur) => assert_eq!(cur, s2),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        c.put_if_absent(b("n"), b("nv"), IMM).await.unwrap(),
        PutIfAbsentOutcome::Stored
    );
    assert_eq!(c.get(b"n").unwrap().value, b("nv"));

    // replace
    assert_eq!(
        c.replace(b("missing"), b("x"), IMM).await.unwrap(),
        ReplaceOutcome::Missing
    );
    assert!(c.peek(b"missing").is_none());
    match c.replace(b("k"), b("v3"), IMM).await.unwrap() {
        ReplaceOutcome::Replaced(p) => assert_eq!(p, s2),
        o => panic!("{o:?}"),
    }
    let s3 = c.peek(b"k").unwrap();
    assert_eq!(s3.value, b("v3"));

    // replace_if_version
    assert_eq!(
        c.replace_if_version(b("missing"), 1, b("x"), IMM)
            .await
            .unwrap(),
        VersionedOutcome::Missing
    );
    match c
        .replace_if_version(b("k"), s1.version, b("x"), IMM)
        .await
        .unwrap()
    {
        VersionedOutcome::Mismatch(cur) => assert_eq!(cur, s3),
        o => panic!("{o:?}"),
    }
    match c
        .replace_if_version(b("k"), s3.version, b("v4"), IMM)
        .await
        .unwrap()
    {
        VersionedOutcome::Done(p) => assert_eq!(p, s3),
        o => panic!("{o:?}"),
    }
    let s4 = c.peek(b"k").unwrap();
    assert_eq!(s4.value, b("v4"));

    // remove_if_version
    assert_eq!(
        c.remove_if_version(b("missing"), 1).await.unwrap(),
        VersionedOutcome::Missing
    );
    match c.remove_if_version(b("k"), s3.version).await.unwrap() {
        VersionedOutcome::Mismatch(cur) => assert_eq!(cur, s4),
        o => panic!("{o:?}"),
    }
    match c.remove_if_version(b("k"), s4.version).await.unwrap() {
        VersionedOutcome::Done(p) => assert_eq!(p, s4),
        o => panic!("{o:?}"),
    }
    assert!(c.get(b"k").is_none());

    // remove
    assert_eq!(c.remove(b("k")).await.unwrap(), RemoveOutcome::Missing);
    let sn = c.peek(b"n").unwrap();
    assert_eq!(c.remove(b("n")).await.unwrap(), RemoveOutcome::Removed(sn));
    assert!(!c.contains_key(b"n"));

    // put_all (a duplicated key ends with its last value)
    c.put_all(
        vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))],
        IMM,
    )
    .await
    .unwrap();
    assert_eq!(c.get(b"a").unwrap().value, b("3"));
    assert_eq!(c.get(b"b").unwrap().value, b("2"));
    c.put_all(vec![], IMM).await.unwrap();
    assert_eq!(c.size(), 2);
    let mut keys = c.keys();
    keys.sort();
    assert_eq!(keys, vec![b("a"), b("b")]);
    assert!(c.contains_key(b"a"));

    // empty key and value are legal
    assert_eq!(c.put(Bytes::new(), Bytes::new(), IMM).await.unwrap(), None);
    assert_eq!(c.get(b"").unwrap().value, Bytes::new());

    let st = c.stats();
    // put×3 (k,k,empty) + pia stored + replace + riv + put_all(3)
    assert_eq!(st.stores, 9, "{st:?}");
    assert_eq!(st.remove_hits, 2);
    assert_eq!(st.remove_misses, 2);
    assert_eq!((st.hits, st.misses), (5, 1), "{st:?}");
    assert_eq!(st.retrievals, st.hits + st.misses);
    assert!(st.started_ms > 0);

    // SQL holds exactly what memory holds
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_entries WHERE cache = 'default'")
            .await,
        3
    );
    store.shutdown().await;
    // after shutdown writes fail cleanly
    assert!(matches!(
        c.put(b("z"), b("z"), IMM).await,
        Err(StoreError::Closed)
    ));
}

async fn versions_unique_and_growing(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let other = store
        .get_or_create_cache(CacheDef::new("other"))
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut last = std::collections::HashMap::new();
    for i in 0..200 {
        let key = b(&format!("k{}", i % 7));
        let cache = if i % 3 == 0 { &other } else { &c };
        cache.put(key.clone(), b("v"), IMM).await.unwrap();
        let v = cache.peek(&key).unwrap().version;
        assert!(v > 0);
        assert!(seen.insert(v), "version {v} reused");
        let prev = last.insert((cache.name().to_string(), key), v).unwrap_or(0);
        assert!(v > prev);
    }
    // put_all versions are distinct too
    let entries: Vec<_> = (0..50).map(|i| (b(&format!("p{i}")), b("v"))).collect();
    c.put_all(entries, IMM).await.unwrap();
    for i in 0..50 {
        assert!(seen.insert(c.peek(format!("p{i}").as_bytes()).unwrap().version));
    }
    store.shutdown().await;
}

async fn lifespan_expiry(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("k"), b("v"), lifespan(300)).await.unwrap();
    let s = c.get(b"k").unwrap();
    assert_eq!(s.lifespan_ms, 300);
    assert_eq!(s.max_idle_ms, -1);
    let deadline = s.created_ms + 300;
    // Poll: whenever the clock is past the deadline, the entry must never be returned.
    loop {
        let before = now();
        let got = c.get(b"k");
        let after = now();
        if before >= deadline {
            assert!(got.is_none(), "returned after expiry");
            assert!(c.peek(b"k").is_none());
            assert!(!c.contains_key(b"k"));
            assert_eq!(c.size(), 0);
            assert!(c.keys().is_empty());
            break;
        }
        if after < deadline {
            assert!(got.is_some(), "expired too early");
        }
        sleep_ms(10).await;
    }
    store.shutdown().await;
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn max_idle_extended_by_get(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("k"), b("v"), idle(400)).await.unwrap();
    c.put(b("untouched"), b("v"), idle(400)).await.unwrap();
    let start = now();
    // Keep reading for 1.2 s: three times the idle time.
    while now() - start < 1200 {
        assert!(c.get(b"k").is_some(), "expired although read every 100ms");
        sleep_ms(100).await;
    }
    assert!(c.peek(b"untouched").is_none());
    // peek does not extend
    let last = c.peek(b"k").unwrap().last_used_ms;
    while now() < last + 400 {
        assert!(c.peek(b"k").is_some() || now() >= last + 400);
        sleep_ms(50).await;
    }
    assert!(c.get(b"k").is_none());
    store.shutdown().await;
}

async fn expired_counts_as_absent(db: &TestDb) {
    let mut cfg = db.config();
    // Keep the reaper out of the way: these rows must be expired but still present in SQL.
    cfg.reaper_interval = std::time::Duration::from_secs(3600);
    let store = Store::open(cfg).await.unwrap();
    let c = store.cache("default").unwrap();
    // Lifespan long enough for six commits on a loaded machine.
    for k in ["p", "pia", "r", "riv", "rm", "rmv"] {
        c.put(b(k), b("old"), lifespan(400)).await.unwrap();
    }
    let riv = c.peek(b"riv").unwrap().version;
    let rmv = c.peek(b"rmv").unwrap().version;
    sleep_ms(450).await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_entries").await,
        6,
        "rows still in SQL"
    );
    assert_eq!(c.put(b("p"), b("new"), IMM).await.unwrap(), None);
    assert_eq!(
        c.put_if_absent(b("pia"), b("new"), IMM).await.unwrap(),
        PutIfAbsentOutcome::Stored
    );
    assert_eq!(
        c.replace(b("r"), b("new"), IMM).await.unwrap(),
        ReplaceOutcome::Missing
    );
    assert_eq!(
        c.replace_if_version(b("riv"), riv, b("new"), IMM)
            .await
            .unwrap(),
        VersionedOutcome::Missing
    );
    assert_eq!(c.remove(b("rm")).await.unwrap(), RemoveOutcome::Missing);
    assert_eq!(
        c.remove_if_version(b("rmv"), rmv).await.unwrap(),
        VersionedOutcome::Missing
    );
    assert_eq!(c.get(b"p").unwrap().value, b("new"));
    assert_eq!(c.get(b"pia").unwrap().value, b("new"));
    assert!(c.get(b"r").is_none());
    assert_eq!(c.size(), 2);
    // the sweep removes the four expired rows and records them
    assert_eq!(store.run_maintenance().await.unwrap(), 4);
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_entries").await, 2);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_changes WHERE kind = 'expired'")
            .await,
        4
    );
    store.shutdown().await;
}

async fn reaper_deletes_rows(db: &TestDb) {
    let mut cfg = db.config();
    cfg.reaper_interval = std::time::Duration::from_millis(50);
    let store = Store::open(cfg).await.unwrap();
    let c = store.cache("default").unwrap();
    let entries: Vec<_> = (0..2500).map(|i| (b(&format!("k{i}")), b("v"))).collect();
    c.put_all(entries, lifespan(100)).await.unwrap();
    c.put(b("idle"), b("v"), idle(100)).await.unwrap();
    c.put(b("keep"), b("v"), IMM).await.unwrap();
    let start = now();
    // The reaper counts what it deleted after its COMMIT, so the rows can be gone a moment
    // before the count says so.
    loop {
        if db.count("SELECT COUNT(*) FROM ferrod_entries").await == 1
            && store.metrics().entries_expired >= 2501
        {
            break;
        }
        assert!(now() - start < 5000, "reaper did not delete expired rows");
        sleep_ms(50).await;
    }
    assert_eq!(c.size(), 1);
    assert!(c.get(b"keep").is_some());
    store.shutdown().await;
}

async fn default_expiration_from_cache(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let def = CacheDef {
        default_lifespan_ms: 60_000,
        default_max_idle_ms: 30_000,
        ..CacheDef::new("withdefaults")
    };
    let c = store.get_or_create_cache(def.clone()).await.unwrap();
    assert_eq!(c.def(), &def);
    c.put(b("d"), b("v"), Expiration::DEFAULT).await.unwrap();
    let s = c.peek(b"d").unwrap();
    assert_eq!((s.lifespan_ms, s.max_idle_ms), (60_000, 30_000));
    c.put(
        b("mixed"),
        b("v"),
        Expiration::new(Expiry::Millis(5000), Expiry::Default),
    )
    .await
    .unwrap();
    let s = c.peek(b"mixed").unwrap();
    assert_eq!((s.lifespan_ms, s.max_idle_ms), (5000, 30_000));
    c.put(
        b("inf"),
        b("v"),
        Expiration::new(Expiry::Infinite, Expiry::Millis(0)),
    )
    .await
    .unwrap();
    let s = c.peek(b"inf").unwrap();
    assert_eq!((s.lifespan_ms, s.max_idle_ms), (-1, -1));
    store.shutdown().await;
}

async fn large_values(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let big = Bytes::from(big);
    let big_key = Bytes::from(vec![7u8; 100_000]);
    c.put(big_key.clone(), big.clone(), IMM).await.unwrap();
    assert_eq!(c.get(&big_key).unwrap().value, big);
    // overwrite returns the big previous value
    let prev = c.put(big_key.clone(), b("small"), IMM).await.unwrap();
    assert_eq!(prev.unwrap().value, big);
    c.put(big_key.clone(), big.clone(), IMM).await.unwrap();
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    assert_eq!(c.get(&big_key).unwrap().value, big);
    store.shutdown().await;
}

async fn too_large(db: &TestDb) {
    let cfg = StoreConfig {
        max_value_bytes: 1000,
        ..db.config()
    };
    let store = Store::open(cfg).await.unwrap();
    let c = store.cache("default").unwrap();
    let big = Bytes::from(vec![0u8; 1001]);
    assert!(matches!(
        c.put(b("k"), big.clone(), IMM).await,
        Err(StoreError::TooLarge {
            size: 1001,
            max: 1000
        })
    ));
    assert!(matches!(
        c.put(big.clone(), b("v"), IMM).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        c.put_all(vec![(b("a"), b("a")), (b("k"), big.clone())], IMM)
            .await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(c.peek(b"a").is_none(), "put_all is all or nothing");
    c.put(b("k"), Bytes::from(vec![0u8; 1000]), IMM)
        .await
        .unwrap();
    store.shutdown().await;
}

async fn clear_and_changelog(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    let o = store.get_or_create_cache(CacheDef::new("o")).await.unwrap();
    c.put(b("a"), b("1"), IMM).await.unwrap();
    c.put(b("b"), b("1"), IMM).await.unwrap();
    c.remove(b("b")).await.unwrap();
    o.put(b("a"), b("1"), IMM).await.unwrap();
    c.clear().await.unwrap();
    assert_eq!(c.size(), 0);
    assert!(c.get(b"a").is_none());
    assert_eq!(o.size(), 1, "clear is per cache");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_entries WHERE cache = 'default'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_changes WHERE cache = 'default'")
            .await,
        4
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM ferrod_changes WHERE cache = 'default' AND kind = 'clear' \
             AND seq = (SELECT MAX(seq) FROM ferrod_changes WHERE cache = 'default')"
        )
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_changes WHERE kind = 'put' AND version IS NULL")
            .await,
        0
    );
    // the cache is usable after clear
    c.put(b("a"), b("2"), IMM).await.unwrap();
    assert_eq!(c.get(b"a").unwrap().value, b("2"));
    store.shutdown().await;

    // retention pruning
    let cfg = StoreConfig {
        changelog_retention: std::time::Duration::from_millis(1),
        ..db.config()
    };
    let store = Store::open(cfg).await.unwrap();
    sleep_ms(5).await;
    store.run_maintenance().await.unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_changes").await, 0);
    store.shutdown().await;
}

async fn cache_admin(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(store.cache_names(), vec!["default".to_string()]);
    assert!(store.cache("nope").is_none());
    let def = CacheDef {
        key_media_type: "application/x-protostream".into(),
        value_media_type: "application/x-protostream".into(),
        configuration: "<distributed-cache/>".into(),
        ..CacheDef::new("sessions")
    };
    let s = store.get_or_create_cache(def.clone()).await.unwrap();
    s.put(b("k"), b("v"), IMM).await.unwrap();
    // existing cache is returned untouched, even with a different definition
    let again = store
        .get_or_create_cache(CacheDef::new("sessions"))
        .await
        .unwrap();
    assert_eq!(again.def(), &def);
    assert_eq!(again.get(b"k").unwrap().value, b("v"));
    assert!(matches!(
        store.get_or_create_cache(CacheDef::new("")).await,
        Err(StoreError::InvalidDefinition(_))
    ));
    let tmp = store
        .get_or_create_cache(CacheDef::new("tmp"))
        .await
        .unwrap();
    tmp.put(b("k"), b("v"), IMM).await.unwrap();
    store.shutdown().await;

    // survives restart, with its definition and rows
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(
        store.cache_names(),
        vec!["default".to_string(), "sessions".into(), "tmp".into()]
    );
    assert_eq!(store.cache("sessions").unwrap().def(), &def);
    assert_eq!(
        store.cache("sessions").unwrap().get(b"k").unwrap().value,
        b("v")
    );
    let tmp = store.cache("tmp").unwrap();
    assert!(store.remove_cache("tmp").await.unwrap());
    assert!(!store.remove_cache("tmp").await.unwrap());
    assert!(store.cache("tmp").is_none());
    assert!(matches!(
        tmp.put(b("k"), b("v"), IMM).await,
        Err(StoreError::CacheNotFound(_))
    ));
    assert!(tmp.get(b"k").is_none());
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_entries WHERE cache = 'tmp'")
            .await,
        0
    );
    // re-creating gives an empty cache
    let tmp2 = store
        .get_or_create_cache(CacheDef::new("tmp"))
        .await
        .unwrap();
    assert_eq!(tmp2.size(), 0);
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    assert_eq!(store.cache("tmp").unwrap().size(), 0);
    store.shutdown().await;
}

async fn touches_flushed_to_sql(db: &TestDb) {
    let mut cfg = db.config();
    cfg.reaper_interval = std::time::Duration::from_millis(50);
    let store = Store::open(cfg).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("idle"), b("v"), idle(60_000)).await.unwrap();
    c.put(b("imm"), b("v"), IMM).await.unwrap();
    let created = c.peek(b"idle").unwrap().created_ms;
    sleep_ms(30).await;
    let touched = c.get(b"idle").unwrap().last_used_ms;
    assert!(touched > created);
    c.get(b"imm").unwrap();
    let sql = format!(
        "SELECT COUNT(*) FROM ferrod_entries WHERE last_used_ms = {touched} \
         AND expires_ms = {}",
        touched + 60_000
    );
    let start = now();
    while db.count(&sql).await != 1 {
        assert!(now() - start < 10_000, "touch not flushed by the reaper");
        sleep_ms(25).await;
    }
    assert!(store.metrics().touches_flushed >= 1);
    // entries without max-idle are never touched in SQL
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_entries WHERE last_used_ms <> created_ms")
            .await,
        1
    );
    store.shutdown().await;
}
