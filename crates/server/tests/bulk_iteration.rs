//! PUT_ALL/GET_ALL, BULK_GET, BULK_GET_KEYS, STATS and iteration (§9.2, §11).

mod common;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use common::*;
use ferrod_codec::{status, Factory, Request, ResponseBody};

const EMPTY_VALUE_CONVERTER: &str =
    "org.infinispan.server.hotrod.HotRodServer$ToEmptyBytesKeyValueFilterConverter";

async fn load(c: &mut Client, n: usize) -> HashMap<Bytes, Bytes> {
    let mut all = HashMap::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let entries: Vec<(Bytes, Bytes)> = chunk
            .iter()
            .map(|i| (b(&format!("key-{i:05}")), b(&format!("value-{i}"))))
            .collect();
        all.extend(entries.iter().cloned());
        let r = c
            .req(Request::PutAll {
                expiration: EXP_DEFAULT,
                entries,
            })
            .await;
        assert_status(&r, status::SUCCESS);
    }
    all
}

#[tokio::test]
async fn put_all_get_all_bulk_get_and_keys() {
    let server = Server::start().await;
    let mut c = server.client_v(41).await;
    let all = load(&mut c, 100).await;
    assert_eq!(c.size().await, 100);

    // GET_ALL returns only the keys found.
    let r = c
        .req(Request::GetAll {
            keys: vec![b("key-00003"), b("missing"), b("key-00099")],
        })
        .await;
    assert_status(&r, status::SUCCESS);
    let ResponseBody::GetAll(mut found) = r.body else {
        panic!("{r:?}")
    };
    found.sort();
    assert_eq!(
        found,
        vec![
            (b("key-00003"), b("value-3")),
            (b("key-00099"), b("value-99"))
        ]
    );

    // BULK_GET 0 = everything, n = n entries.
    let r = c.req(Request::BulkGet { count: 0 }).await;
    let ResponseBody::BulkGet(entries) = r.body else {
        panic!()
    };
    assert_eq!(entries.len(), 100);
    assert_eq!(entries.into_iter().collect::<HashMap<_, _>>(), all);
    let r = c.req(Request::BulkGet { count: 7 }).await;
    let ResponseBody::BulkGet(entries) = r.body else {
        panic!()
    };
    assert_eq!(entries.len(), 7);
    for (k, v) in entries {
        assert_eq!(all.get(&k), Some(&v));
    }

    let r = c.req(Request::BulkGetKeys { scope: 0 }).await;
    let ResponseBody::BulkGetKeys(keys) = r.body else {
        panic!()
    };
    assert_eq!(
        keys.into_iter().collect::<HashSet<_>>(),
        all.keys().cloned().collect()
    );

    // PUT_ALL overwrites and gives fresh versions.
    let v_before = c.version_of("key-00001").await.unwrap();
    let r = c
        .req(Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![(b("key-00001"), b("changed"))],
        })
        .await;
    assert_status(&r, status::SUCCESS);
    let (v_after, val) = c.get_with_version("key-00001").await.unwrap();
    assert_eq!(val, b("changed"));
    assert_ne!(v_before, v_after);
    // An empty PUT_ALL is fine.
    let r = c
        .req(Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![],
        })
        .await;
    assert_status(&r, status::SUCCESS);
}

#[tokio::test]
async fn stats_report_the_standard_keys_with_counts() {
    let server = Server::start().await;
    let mut c = server.client_v(31).await;
    for i in 0..5 {
        c.put(&format!("s{i}"), "v").await;
    }
    for i in 0..5 {
        c.get(&format!("s{i}")).await.unwrap();
    }
    assert_eq!(c.get("missing-1").await, None);
    assert_eq!(c.get("missing-2").await, None);
    c.req(Request::Remove { key: b("s0") }).await;
    c.req(Request::Remove { key: b("nope") }).await;
    let stats: HashMap<String, String> = c.stats().await.into_iter().collect();
    for key in [
        "timeSinceStart",
        "currentNumberOfEntries",
        "stores",
        "retrievals",
        "hits",
        "misses",
        "removeHits",
        "removeMisses",
        "approximateEntries",
        "approximateEntriesUnique",
    ] {
        let v = stats
            .get(key)
            .unwrap_or_else(|| panic!("STATS lacks {key}: {stats:?}"));
        v.parse::<i64>()
            .unwrap_or_else(|_| panic!("{key}={v} is not a decimal number"));
    }
    let n = |k: &str| stats[k].parse::<i64>().unwrap();
    assert_eq!(n("currentNumberOfEntries"), 4);
    assert_eq!(n("stores"), 5);
    assert_eq!(n("hits"), 5);
    assert_eq!(n("misses"), 2);
    assert_eq!(n("retrievals"), 7);
    assert_eq!(n("removeHits"), 1);
    assert_eq!(n("removeMisses"), 1);
}

#[tokio::test]
async fn iteration_over_10000_entries_in_batches_of_500_per_version() {
    let server = Server::start().await;
    let mut c = server.client_v(41).await;
    let all = load(&mut c, 10_000).await;
    let versions: HashMap<Bytes, i64> = {
        // A sample of versions to compare with the iteration metadata.
        let mut m = HashMap::new();
        for i in [0usize, 1234, 9999] {
            let k = format!("key-{i:05}");
            m.insert(b(&k), c.version_of(&k).await.unwrap());
        }
        m
    };
    for v in [23u8, 24, 25, 31, 40, 41] {
        let mut c = server.client_v(v).await;
        let with_meta = v >= 24;
        let (entries, batches) = c.iterate_all(500, with_meta, None).await;
        assert_eq!(batches, 20, "10,000 / 500 at {v}");
        assert_eq!(entries.len(), 10_000, "at {v}");
        let mut seen = HashSet::new();
        for e in &entries {
            assert!(seen.insert(e.key.clone()), "key returned twice at {v}");
            assert_eq!(e.values.len(), 1);
            assert_eq!(all.get(&e.key), Some(&e.values[0]), "at {v}");
            if v >= 25 {
                let m = e.metadata.as_ref().expect("metadata requested at 2.5+");
                assert!(m.version > 0);
                assert_eq!(m.lifespan, None);
                if let Some(ver) = versions.get(&e.key) {
                    assert_eq!(m.version, *ver, "iteration reports the entry's version");
                }
            } else {
                assert!(e.metadata.is_none(), "no metadata field before 2.5");
            }
        }
    }
    // Without metadata at 2.5+: no metadata block.
    let mut c = server.client_v(41).await;
    let (entries, _) = c.iterate_all(1000, false, None).await;
    assert_eq!(entries.len(), 10_000);
    assert!(entries.iter().all(|e| e.metadata.is_none()));
}

#[tokio::test]
async fn iteration_converters_segments_and_unknown_ids() {
    let server = Server::start().await;
    let mut c = server.client_v(40).await;
    let all = load(&mut c, 1234).await;

    // keySet(): the empty-bytes converter gives every key with an empty value.
    let (entries, _) = c
        .iterate_all(
            100,
            false,
            Some(Factory {
                name: EMPTY_VALUE_CONVERTER.to_string(),
                params: vec![],
            }),
        )
        .await;
    assert_eq!(entries.len(), 1234);
    assert!(entries.iter().all(|e| e.values == vec![Bytes::new()]));
    assert_eq!(
        entries.into_iter().map(|e| e.key).collect::<HashSet<_>>(),
        all.keys().cloned().collect()
    );

    // An unknown converter is an error, and the connection stays usable.
    let r = c
        .req(Request::IterationStart {
            segments: None,
            filter_converter: Some(Factory {
                name: "com.example.NoSuchConverter".into(),
                params: vec![b("p")],
            }),
            batch_size: 10,
            include_metadata: false,
        })
        .await;
    assert_error(&r, status::SERVER_ERROR, "NoSuchConverter");
    assert!(c.contains("key-00001").await);

    // A segment mask without segment 0 selects nothing (every key is in segment 0).
    for mask in [vec![0x02u8], vec![0x00, 0x01], vec![0xFE, 0xFF]] {
        let r = c
            .req(Request::IterationStart {
                segments: Some(Bytes::from(mask.clone())),
                filter_converter: None,
                batch_size: 10,
                include_metadata: false,
            })
            .await;
        let ResponseBody::IterationId(id) = r.body else {
            panic!("{r:?}")
        };
        let r = c
            .req(Request::IterationNext {
                iteration_id: id.clone(),
            })
            .await;
        let ResponseBody::IterationBatch { entries, .. } = r.body else {
            panic!("{r:?}")
        };
        assert!(entries.is_empty(), "mask {mask:?} gave entries");
        assert_status(
            &c.req(Request::IterationEnd { iteration_id: id }).await,
            status::SUCCESS,
        );
    }
    // With segment 0 in the mask: everything.
    let r = c
        .req(Request::IterationStart {
            segments: Some(Bytes::from(vec![0x01u8])),
            filter_converter: None,
            batch_size: 5000,
            include_metadata: false,
        })
        .await;
    let ResponseBody::IterationId(id) = r.body else {
        panic!("{r:?}")
    };
    let r = c.req(Request::IterationNext { iteration_id: id }).await;
    let ResponseBody::IterationBatch { entries, .. } = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(entries.len(), 1234);

    // Unknown ids: 0x05.
    let r = c
        .req(Request::IterationNext {
            iteration_id: "no-such-iteration".into(),
        })
        .await;
    assert_status(&r, status::INVALID_ITERATION);
    let r = c
        .req(Request::IterationEnd {
            iteration_id: "no-such-iteration".into(),
        })
        .await;
    assert_status(&r, status::INVALID_ITERATION);
    // An iteration id is per connection: another connection does not know it.
    let r = c
        .req(Request::IterationStart {
            segments: None,
            filter_converter: None,
            batch_size: 10,
            include_metadata: false,
        })
        .await;
    let ResponseBody::IterationId(id) = r.body else {
        panic!()
    };
    let mut other = server.client_v(40).await;
    let r = other
        .req(Request::IterationNext {
            iteration_id: id.clone(),
        })
        .await;
    assert_status(&r, status::INVALID_ITERATION);
    // Ended iterations are gone.
    assert_status(
        &c.req(Request::IterationEnd {
            iteration_id: id.clone(),
        })
        .await,
        status::SUCCESS,
    );
    assert_status(
        &c.req(Request::IterationNext { iteration_id: id }).await,
        status::INVALID_ITERATION,
    );
}
