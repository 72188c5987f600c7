//! Restart, migrations under concurrent startup, failing transactions. See tests/common/mod.rs
//! for how the suite gets a PostgreSQL database (env FERROD_TEST_PG_URL).
mod common;

use std::time::Duration;

use common::{sleep_ms, TestDb};
use ferrod_store::*;
use sqlx::Connection;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const IMM: Expiration = Expiration::IMMORTAL;

both_backends!(
    reopen_restores_everything,
    acknowledged_writes_visible_without_shutdown,
    concurrent_open_on_empty_database,
    failing_batch_leaves_memory_unchanged,
    ambiguous_commit_is_an_error_and_memory_follows_sql,
    long_keys_round_trip_across_replicas_expiry_and_restart,
    newer_additive_schema_is_accepted_unless_it_demands_a_newer_reader,
);

/// Rolling upgrades run two versions side by side: a database migrated by a newer ferrod still
/// opens, unless that newer version declared (schema_min_reader) that older readers must stop.
async fn newer_additive_schema_is_accepted_unless_it_demands_a_newer_reader(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    store
        .cache("default")
        .unwrap()
        .put(b("k"), b("v"), IMM)
        .await
        .unwrap();
    store.shutdown().await;
    db.exec("INSERT INTO ferrod_schema_migrations (version, description, applied_ms) VALUES (999, 'from a newer ferrod', 0)")
        .await;
    let store = Store::open(db.config())
        .await
        .expect("an additive newer schema opens");
    assert_eq!(
        store.cache("default").unwrap().get(b"k").unwrap().value,
        b("v")
    );
    store.shutdown().await;
    db.exec("INSERT INTO ferrod_meta (name, value) VALUES ('schema_min_reader', 999)")
        .await;
    let err = Store::open(db.config())
        .await
        .expect_err("a newer schema that demands a newer reader is refused");
    assert!(
        err.to_string().contains("requires ferrod schema 999"),
        "{err}"
    );
}

async fn reopen_restores_everything(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("imm"), b("1"), IMM).await.unwrap();
    c.put(
        b("life"),
        b("2"),
        Expiration::new(Expiry::Millis(60_000), Expiry::Infinite),
    )
    .await
    .unwrap();
    c.put(
        b("idle"),
        b("3"),
        Expiration::new(Expiry::Infinite, Expiry::Millis(60_000)),
    )
    .await
    .unwrap();
    c.put(
        b("both"),
        b("4"),
        Expiration::new(Expiry::Millis(120_000), Expiry::Millis(30_000)),
    )
    .await
    .unwrap();
    c.put(
        b("short"),
        b("5"),
        Expiration::new(Expiry::Millis(100), Expiry::Infinite),
    )
    .await
    .unwrap();
    let bin = Bytes::from((0..=255u8).collect::<Vec<_>>());
    c.put(bin.clone(), bin.clone(), IMM).await.unwrap();
    c.put(b("gone"), b("x"), IMM).await.unwrap();
    c.remove(b("gone")).await.unwrap();
    sleep_ms(50).await;
    // touch the max-idle entries: the restart must keep the restarted idle clock
    c.get(b"idle").unwrap();
    c.get(b"both").unwrap();
    let keys = [b("imm"), b("life"), b("idle"), b("both"), bin.clone()];
    let before: Vec<EntrySnapshot> = keys.iter().map(|k| c.peek(k).unwrap()).collect();
    assert!(before[2].last_used_ms > before[2].created_ms);
    store.shutdown().await;
    sleep_ms(120).await;

    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    for (k, want) in keys.iter().zip(&before) {
        assert_eq!(&c.peek(k).unwrap(), want, "{k:?}");
    }
    assert!(c.peek(b"short").is_none(), "expired while down");
    assert!(c.peek(b"gone").is_none());
    assert_eq!(c.size(), 5);
    // versions keep growing after restart
    c.put(b("imm"), b("new"), IMM).await.unwrap();
    assert!(c.peek(b"imm").unwrap().version > before.iter().map(|s| s.version).max().unwrap());
    store.shutdown().await;
}

async fn acknowledged_writes_visible_without_shutdown(db: &TestDb) {
    // The first store is never shut down (as after a crash); a second process-like store
    // opened on the same database sees every acknowledged write.
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    for i in 0..100 {
        c.put(b(&format!("k{i}")), b(&i.to_string()), IMM)
            .await
            .unwrap();
    }
    let second = Store::open(db.config()).await.unwrap();
    let c2 = second.cache("default").unwrap();
    for i in 0..100 {
        assert_eq!(
            c2.peek(format!("k{i}").as_bytes()).unwrap(),
            c.peek(format!("k{i}").as_bytes()).unwrap()
        );
    }
    second.shutdown().await;
    store.shutdown().await;
}

async fn concurrent_open_on_empty_database(db: &TestDb) {
    let opens = (0..5).map(|i| {
        let mut cfg = db.config();
        cfg.caches.push(CacheDef::new(format!("c{i}")));
        cfg.caches.push(CacheDef::new("shared"));
        tokio::spawn(Store::open(cfg))
    });
    let mut stores = Vec::new();
    for o in opens.collect::<Vec<_>>() {
        stores.push(o.await.unwrap().expect("concurrent open"));
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_schema_migrations")
            .await,
        4,
        "every migration applied exactly once"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM ferrod_caches").await, 7);
    // all five can write (versions stay unique across them)
    let mut versions = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        let c = s.cache("shared").unwrap();
        c.put(b(&format!("k{i}")), b("v"), IMM).await.unwrap();
        versions.push(c.peek(format!("k{i}").as_bytes()).unwrap().version);
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 5);
    for s in stores {
        s.shutdown().await;
    }
}

async fn failing_batch_leaves_memory_unchanged(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("k"), b("old"), IMM).await.unwrap();
    c.put(b("other"), b("old"), IMM).await.unwrap();
    let before = c.peek(b"k").unwrap();
    // A trigger makes any write of the value "boom" fail inside the transaction.
    if db.is_sqlite() {
        db.exec(
            "CREATE TRIGGER boom_i BEFORE INSERT ON ferrod_entries WHEN NEW.value = X'626f6f6d' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END; \
             CREATE TRIGGER boom_u BEFORE UPDATE ON ferrod_entries WHEN NEW.value = X'626f6f6d' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .await;
    } else {
        db.exec(
            "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN \
             IF NEW.value = 'boom'::bytea THEN RAISE EXCEPTION 'boom'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON ferrod_entries \
             FOR EACH ROW EXECUTE FUNCTION boom();",
        )
        .await;
    }
    // Many writers at once, so the refused write shares its transaction with others: only
    // the refused write fails; the others are committed.
    let goods = (0..40).map(|i| c.put(b(&format!("good{i}")), b("fresh"), IMM));
    let (good, bad, more) = tokio::join!(
        futures::future::join_all(goods),
        c.put(b("k"), b("boom"), IMM),
        c.put(b("other"), b("new"), IMM),
    );
    assert!(matches!(bad, Err(StoreError::Database(_))), "{bad:?}");
    assert!(format!("{bad:?}").contains("boom"), "{bad:?}");
    assert_eq!(c.peek(b"k").unwrap(), before, "memory unchanged");
    for (i, r) in good.iter().enumerate() {
        assert!(r.is_ok(), "good{i}: {r:?}");
        assert_eq!(
            c.peek(format!("good{i}").as_bytes()).unwrap().value,
            b("fresh")
        );
    }
    more.unwrap();
    let other = c.peek(b"other").unwrap();
    assert_eq!(other.value, b("new"));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ferrod_entries WHERE length(value) = 5")
            .await,
        40,
        "every good write committed"
    );
    let failed = store.metrics().transactions_failed;
    assert!(failed >= 1);
    if db.is_sqlite() {
        db.exec("DROP TRIGGER boom_i; DROP TRIGGER boom_u;").await;
    } else {
        db.exec("DROP TRIGGER boom ON ferrod_entries").await;
    }
    c.put(b("k"), b("boom"), IMM).await.unwrap();
    assert_eq!(c.get(b"k").unwrap().value, b("boom"));
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    let c2 = store.cache("default").unwrap();
    assert_eq!(c2.peek(b"other").unwrap(), other);
    assert_eq!(c2.peek(b"k").unwrap().value, b("boom"));
    store.shutdown().await;
}

/// A COMMIT whose outcome the writer cannot know (the connection broke during it) fails its
/// callers, and the keys are then re-read from SQL: memory ends with what SQL has, the new
/// value if the COMMIT went through, the old one if it did not. Writes go on meanwhile.
async fn ambiguous_commit_is_an_error_and_memory_follows_sql(db: &TestDb) {
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    for committed in [true, false] {
        let tag = if committed {
            "committed"
        } else {
            "rolled-back"
        };
        let (k, gone, fresh) = (
            b(&format!("k-{tag}")),
            b(&format!("gone-{tag}")),
            b(&format!("fresh-{tag}")),
        );
        c.put(k.clone(), b("old"), IMM).await.unwrap();
        c.put(gone.clone(), b("old"), IMM).await.unwrap();
        let before = store.metrics();

        for (i, write) in ["put", "remove", "insert"].into_iter().enumerate() {
            store.fail_next_commit(committed);
            let res = match write {
                "put" => c.put(k.clone(), b("new"), IMM).await.map(|_| ()),
                "remove" => c.remove(gone.clone()).await.map(|_| ()),
                _ => c.put(fresh.clone(), b("new"), IMM).await.map(|_| ()),
            };
            assert!(
                matches!(&res, Err(StoreError::Database(m)) if m.contains("COMMIT")),
                "{tag} {write}: {res:?}"
            );
            let mut resynced = false;
            for _ in 0..500 {
                if store.metrics().resyncs_done > before.resyncs_done + i as u64 {
                    resynced = true;
                    break;
                }
                sleep_ms(10).await;
            }
            assert!(resynced, "{tag} {write}: keys re-read from SQL");
        }
        let m = store.metrics();
        assert_eq!(m.commits_ambiguous - before.commits_ambiguous, 3, "{tag}");

        let (k_value, gone_exists, fresh_exists) = if committed {
            ("new", false, true)
        } else {
            ("old", true, false)
        };
        let sql_value = |key: &Bytes, value: &str| {
            let key = String::from_utf8(key.to_vec()).unwrap();
            format!(
                "SELECT COUNT(*) FROM ferrod_entries WHERE cache = 'default' \
                 AND key = {} AND value = {}",
                db.bytes_literal(key.as_bytes()),
                db.bytes_literal(value.as_bytes())
            )
        };
        assert_eq!(db.count(&sql_value(&k, k_value)).await, 1, "{tag}: SQL");
        assert_eq!(c.peek(&k).unwrap().value, b(k_value), "{tag}: memory");
        assert_eq!(
            db.count(&sql_value(&gone, "old")).await,
            i64::from(gone_exists),
            "{tag}: SQL"
        );
        assert_eq!(c.peek(&gone).is_some(), gone_exists, "{tag}: memory");
        assert_eq!(
            db.count(&sql_value(&fresh, "new")).await,
            i64::from(fresh_exists),
            "{tag}: SQL"
        );
        assert_eq!(c.peek(&fresh).is_some(), fresh_exists, "{tag}: memory");

        // the next writes of those keys go through as usual
        c.put(k.clone(), b("after"), IMM).await.unwrap();
        c.put(gone.clone(), b("after"), IMM).await.unwrap();
        assert_eq!(c.get(&k).unwrap().value, b("after"));
        assert_eq!(c.get(&gone).unwrap().value, b("after"));
    }
    // and a restart loads what SQL has
    store.shutdown().await;
    let store = Store::open(db.config()).await.unwrap();
    let c = store.cache("default").unwrap();
    assert_eq!(c.peek(b"k-committed").unwrap().value, b("after"));
    assert_eq!(c.peek(b"fresh-committed").unwrap().value, b("new"));
    assert!(c.peek(b"fresh-rolled-back").is_none());
    store.shutdown().await;
}

/// Incompressible bytes (PostgreSQL compresses long index entries, so a repetitive key would
/// not show the index row limit).
fn random_key(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    Bytes::from(
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Keys have no length limit below the configured maximum (DESIGN: "no key-length limit"),
/// also on PostgreSQL, whose btree rows hold at most 2704 bytes: every operation, a second
/// replica, the reaper and a restart see long keys as they were written.
async fn long_keys_round_trip_across_replicas_expiry_and_restart(db: &TestDb) {
    let cfg = StoreConfig {
        reaper_interval: Duration::from_millis(100),
        ..db.config()
    };
    let a = Store::open(cfg.clone()).await.unwrap();
    let other = Store::open(cfg.clone()).await.unwrap();
    let c = a.cache("default").unwrap();
    let mut tagged = b"\0ferrod-long-key-sha256:".to_vec();
    tagged.extend_from_slice(b"short");
    let keys: Vec<Bytes> = vec![
        random_key(1024, 1),
        random_key(1025, 2),
        random_key(4096, 3),
        random_key(64 * 1024, 4),
        Bytes::from(tagged),
    ];
    for (i, k) in keys.iter().enumerate() {
        assert!(
            c.put(k.clone(), b("v1"), IMM).await.unwrap().is_none(),
            "key {i}"
        );
        let first = c.get(k).unwrap();
        assert_eq!(first.value, b("v1"));
        match c.put_if_absent(k.clone(), b("no"), IMM).await.unwrap() {
            PutIfAbsentOutcome::Present(e) => assert_eq!(e.value, b("v1")),
            o => panic!("key {i}: {o:?}"),
        }
        match c
            .replace_if_version(k.clone(), first.version, b("v2"), IMM)
            .await
            .unwrap()
        {
            VersionedOutcome::Done(prev) => assert_eq!(prev.value, b("v1")),
            o => panic!("key {i}: {o:?}"),
        }
        match c.remove_if_version(k.clone(), first.version).await.unwrap() {
            VersionedOutcome::Mismatch(cur) => assert_eq!(cur.value, b("v2")),
            o => panic!("key {i}: {o:?}"),
        }
    }
    // Two long keys in one put_all, one removed again.
    let extra = random_key(3000, 5);
    c.put_all(
        vec![(extra.clone(), b("x")), (random_key(3000, 6), b("y"))],
        IMM,
    )
    .await
    .unwrap();
    assert!(matches!(
        c.remove(random_key(3000, 6)).await.unwrap(),
        RemoveOutcome::Removed(_)
    ));
    // The other replica reads them (through the change feed or from SQL).
    let oc = other.cache("default").unwrap();
    for (i, k) in keys.iter().chain([&extra]).enumerate() {
        let got = oc.get_fresh(k).await.unwrap();
        let want = if i < keys.len() { b("v2") } else { b("x") };
        assert_eq!(
            got.map(|e| e.value),
            Some(want),
            "key {i} on the other replica"
        );
    }
    assert!(oc.get_fresh(&random_key(3000, 6)).await.unwrap().is_none());
    // A long key that expires: the reaper deletes it and reports the key as written. Either
    // store may hold the expiration lease; on SQLite (no change feed) only the sweeping store
    // publishes the event.
    let mut events = a.subscribe();
    let mut other_events = other.subscribe();
    let doomed = random_key(5000, 7);
    c.put(
        doomed.clone(),
        b("brief"),
        Expiration::new(Expiry::Millis(200), Expiry::Infinite),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = async {
            tokio::select! {
                ev = events.recv() => ev,
                ev = other_events.recv() => ev,
            }
        };
        let ev = tokio::time::timeout_at(deadline.into(), next)
            .await
            .expect("no expired event for the long key within 20 s")
            .unwrap();
        if ev.key == doomed && ev.kind == ChangeKind::Expired {
            break;
        }
    }
    if !db.is_sqlite() {
        assert_eq!(
            db.count("SELECT COUNT(*) FROM ferrod_entries WHERE long_key IS NOT NULL")
                .await,
            5,
            "keys of 1025, 3000 (put_all), 4096, 64 KiB bytes and the tagged key stored \
             hashed; 1024 bytes as is"
        );
    }
    let versions: Vec<i64> = keys.iter().map(|k| c.peek(k).unwrap().version).collect();
    a.shutdown().await;
    other.shutdown().await;
    let a = Store::open(cfg).await.unwrap();
    let c = a.cache("default").unwrap();
    for (i, k) in keys.iter().enumerate() {
        let e = c
            .peek(k)
            .unwrap_or_else(|| panic!("key {i} lost in restart"));
        assert_eq!((e.value, e.version), (b("v2"), versions[i]), "key {i}");
    }
    assert_eq!(c.peek(&extra).unwrap().value, b("x"));
    assert!(c.peek(&doomed).is_none());
    assert_eq!(c.size(), keys.len() as u64 + 1);
    a.shutdown().await;
}

/// SQLite: another connection holds the database lock longer than busy_timeout. The write
/// fails, memory keeps the old value, and the store works again once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_database_fails_then_recovers() {
    let db = TestDb::sqlite();
    let cfg = StoreConfig {
        busy_timeout: Duration::from_millis(200),
        ..db.config()
    };
    let store = Store::open(cfg).await.unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("k"), b("old"), IMM).await.unwrap();
    let before = c.peek(b"k").unwrap();

    let mut locker = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let res = c.put(b("k"), b("new"), IMM).await;
    assert!(matches!(res, Err(StoreError::Database(_))), "{res:?}");
    let res = c.put_if_absent(b("fresh"), b("new"), IMM).await;
    assert!(matches!(res, Err(StoreError::Database(_))), "{res:?}");
    assert_eq!(c.peek(b"k").unwrap(), before);
    assert!(c.peek(b"fresh").is_none());
    // reads keep working while writes fail
    assert_eq!(c.get(b"k").unwrap().value, b("old"));

    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    assert_eq!(
        c.put(b("k"), b("new"), IMM).await.unwrap().unwrap().value,
        b("old")
    );
    assert_eq!(c.get(b"k").unwrap().value, b("new"));
    store.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_errors() {
    for url in [
        "mysql://x",
        "",
        "sqlite:///proc/definitely/not/writable/x.db",
    ] {
        let res = Store::open(StoreConfig::new(url)).await;
        assert!(
            matches!(res, Err(StoreError::Database(_))),
            "{url}: {res:?}"
        );
    }
    let res = Store::open(StoreConfig {
        caches: vec![CacheDef::new("")],
        ..StoreConfig::new("sqlite::memory:")
    })
    .await;
    assert!(matches!(res, Err(StoreError::InvalidDefinition(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_works() {
    let store = Store::open(StoreConfig {
        caches: vec![CacheDef::new("default")],
        ..StoreConfig::new("sqlite::memory:")
    })
    .await
    .unwrap();
    let c = store.cache("default").unwrap();
    c.put(b("k"), b("v"), IMM).await.unwrap();
    assert_eq!(c.get(b"k").unwrap().value, b("v"));
    store.run_maintenance().await.unwrap();
    store.shutdown().await;
}
