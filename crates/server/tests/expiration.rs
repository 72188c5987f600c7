//! Expiration (§6): lifespan in ms and seconds, max-idle restarted by access, the 2.0/2.1 vInt
//! seconds with and without the DEFAULT_LIFESPAN flag, cache defaults, and an expired entry is
//! never returned by any read.

mod common;

use std::time::Duration;

use common::*;
use ferrod_codec::{flags, status, Duration as WireDuration, Expiration, Request, ResponseBody};

const DEFAULT_LIFESPAN_CACHE: &str = r#"
[[cache]]
name = "deflife"
lifespan_ms = 1500
"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Asserts that no read op of any kind returns `key`.
async fn assert_gone_everywhere(c: &mut Client, key: &str) {
    assert_eq!(c.get(key).await, None, "GET {key}");
    assert_eq!(
        c.get_with_version(key).await,
        None,
        "GET_WITH_VERSION {key}"
    );
    assert!(
        c.get_with_metadata(key).await.is_none(),
        "GET_WITH_METADATA {key}"
    );
    assert!(!c.contains(key).await, "CONTAINS_KEY {key}");
    let r = c.req(Request::BulkGet { count: 0 }).await;
    let ResponseBody::BulkGet(all) = r.body else {
        panic!("{r:?}")
    };
    assert!(!all.iter().any(|(k, _)| k == &b(key)), "BULK_GET {key}");
    let r = c.req(Request::BulkGetKeys { scope: 0 }).await;
    let ResponseBody::BulkGetKeys(keys) = r.body else {
        panic!("{r:?}")
    };
    assert!(!keys.contains(&b(key)), "BULK_GET_KEYS {key}");
    let r = c.req(Request::GetAll { keys: vec![b(key)] }).await;
    assert_eq!(r.body, ResponseBody::GetAll(vec![]), "GET_ALL {key}");
    let (entries, _) = c.iterate_all(100, true, None).await;
    assert!(!entries.iter().any(|e| e.key == b(key)), "iteration {key}");
}

#[tokio::test]
async fn lifespan_in_ms_and_seconds_expires_everywhere() {
    let server = Server::start().await;
    let mut c = server.client_v(41).await;
    let t0 = now_ms();
    assert_status(
        &c.put_exp("ms", "v", exp_ms(Some(1200), None)).await,
        status::SUCCESS,
    );
    assert_status(
        &c.put_exp("secs", "v", exp_secs(Some(1), None)).await,
        status::SUCCESS,
    );
    c.put("forever", "v").await;
    let (meta, _) = c.get_with_metadata("ms").await.expect("alive");
    let (created, secs) = meta.lifespan.expect("mortal");
    assert_eq!(secs, 1, "1200 ms reported as whole seconds");
    assert!((created - t0).abs() < 2000, "created {created} vs {t0}");
    assert_eq!(meta.max_idle, None);
    let (meta, _) = c.get_with_metadata("secs").await.expect("alive");
    assert_eq!(meta.lifespan.map(|l| l.1), Some(1));
    assert_eq!(c.size().await, 3);

    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_gone_everywhere(&mut c, "ms").await;
    assert_gone_everywhere(&mut c, "secs").await;
    assert_eq!(c.size().await, 1, "SIZE counts only live entries");
    assert_eq!(c.get_str("forever").await.as_deref(), Some("v"));
    // An expired key is absent for the conditional ops too.
    let r = c
        .req(Request::PutIfAbsent {
            key: b("ms"),
            expiration: EXP_DEFAULT,
            value: b("again"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(c.get_str("ms").await.as_deref(), Some("again"));
}

#[tokio::test]
async fn max_idle_is_restarted_by_reads_then_expires() {
    let server = Server::start().await;
    let mut c = server.client_v(41).await;
    assert_status(
        &c.put_exp("idle", "v", exp_ms(None, Some(1000))).await,
        status::SUCCESS,
    );
    let (meta, _) = c.get_with_metadata("idle").await.unwrap();
    assert_eq!(meta.lifespan, None);
    assert_eq!(meta.max_idle.map(|m| m.1), Some(1));
    // Read every 300 ms for 3 s: well past max-idle, but every read restarts the clock.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            c.get_str("idle").await.as_deref(),
            Some("v"),
            "read {i} found it expired although it was read 300 ms ago"
        );
    }
    // Stop reading: it goes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_gone_everywhere(&mut c, "idle").await;
}

#[tokio::test]
async fn v20_v21_seconds_with_and_without_default_lifespan_flag() {
    let server = Server::start_with(ServerOpts::with_config(DEFAULT_LIFESPAN_CACHE)).await;
    for v in [20u8, 21] {
        let mut c = server.client_v(v).await.with_cache("deflife");
        let put = |k: &str, lifespan: i32| Request::Put {
            key: b(&format!("{v}-{k}")),
            expiration: Expiration::Seconds {
                lifespan,
                max_idle: 0,
            },
            value: b("v"),
        };
        // 0 without the flag: immortal, even though the cache has a default.
        assert_status(&c.req(put("immortal", 0)).await, status::SUCCESS);
        // 0 with DEFAULT_LIFESPAN: the cache's 1.5 s.
        assert_status(
            &c.req_flags(
                put("default", 0),
                flags::DEFAULT_LIFESPAN | flags::DEFAULT_MAXIDLE,
            )
            .await,
            status::SUCCESS,
        );
        // A positive value is seconds.
        assert_status(&c.req(put("one", 1)).await, status::SUCCESS);
        // A positive value wins over the flag.
        assert_status(
            &c.req_flags(put("ten", 10), flags::DEFAULT_LIFESPAN).await,
            status::SUCCESS,
        );
        let (m, _) = c.get_with_metadata(&format!("{v}-immortal")).await.unwrap();
        assert_eq!(m.lifespan, None, "2.{} 0 without flag", v - 20);
        let (m, _) = c.get_with_metadata(&format!("{v}-default")).await.unwrap();
        assert_eq!(m.lifespan.map(|l| l.1), Some(1), "cache default 1500 ms");
        let (m, _) = c.get_with_metadata(&format!("{v}-one")).await.unwrap();
        assert_eq!(m.lifespan.map(|l| l.1), Some(1));
        let (m, _) = c.get_with_metadata(&format!("{v}-ten")).await.unwrap();
        assert_eq!(m.lifespan.map(|l| l.1), Some(10));
    }
    // 2.2+ DEFAULT and INFINITE units against the same cache.
    let mut c = server.client_v(41).await.with_cache("deflife");
    assert_status(
        &c.put_exp("41-default", "v", EXP_DEFAULT).await,
        status::SUCCESS,
    );
    let inf = Expiration::Units {
        lifespan: WireDuration::Infinite,
        max_idle: WireDuration::Infinite,
    };
    assert_status(&c.put_exp("41-infinite", "v", inf).await, status::SUCCESS);

    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut c = server.client_v(21).await.with_cache("deflife");
    for v in [20u8, 21] {
        assert!(c.contains(&format!("{v}-immortal")).await);
        assert!(c.contains(&format!("{v}-ten")).await);
        assert_gone_everywhere(&mut c, &format!("{v}-default")).await;
        assert_gone_everywhere(&mut c, &format!("{v}-one")).await;
    }
    assert_gone_everywhere(&mut c, "41-default").await;
    assert!(c.contains("41-infinite").await);
    assert_eq!(c.size().await, 5);
}

/// PUT_ALL with an expiration applies it to every entry; expired ones vanish from GET_ALL.
#[tokio::test]
async fn put_all_lifespan_and_get_all_after_expiry() {
    let server = Server::start().await;
    let mut c = server.client_v(40).await;
    let r = c
        .req(Request::PutAll {
            expiration: exp_ms(Some(1000), None),
            entries: (0..20)
                .map(|i| (b(&format!("pa{i}")), b(&format!("v{i}"))))
                .collect(),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    c.put("pa-forever", "x").await;
    let keys: Vec<_> = (0..20)
        .map(|i| b(&format!("pa{i}")))
        .chain([b("pa-forever")])
        .collect();
    let r = c.req(Request::GetAll { keys: keys.clone() }).await;
    let ResponseBody::GetAll(found) = r.body else {
        panic!()
    };
    assert_eq!(found.len(), 21);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c.req(Request::GetAll { keys }).await;
    assert_eq!(
        r.body,
        ResponseBody::GetAll(vec![(b("pa-forever"), b("x"))])
    );
    assert_eq!(c.size().await, 1);
}

/// §6: in 2.x a duration above 30 days is a Unix time; from 3.0 it is taken literally.
#[tokio::test]
async fn v2x_long_durations_are_unix_times_but_not_in_3x() {
    let server = Server::start().await;
    let at = (now_ms() / 1000 + 2) as u64; // a Unix time 2 s from now, in seconds
    let mut c = server.client_v(25).await;
    assert_status(
        &c.put_exp("unix", "v", exp_secs(Some(at), None)).await,
        status::SUCCESS,
    );
    let (meta, _) = c.get_with_metadata("unix").await.unwrap();
    let secs = meta.lifespan.unwrap().1;
    assert!(
        secs <= 2,
        "2.5 lifespan {secs} s: the Unix-time rule was not applied"
    );
    let mut c3 = server.client_v(30).await;
    assert_status(
        &c3.put_exp("literal", "v", exp_secs(Some(at), None)).await,
        status::SUCCESS,
    );
    let (meta, _) = c3.get_with_metadata("literal").await.unwrap();
    assert!(
        meta.lifespan.unwrap().1 as u64 >= at - 1,
        "3.0 takes it literally"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_gone_everywhere(&mut c, "unix").await;
    assert!(c3.contains("literal").await);
}
