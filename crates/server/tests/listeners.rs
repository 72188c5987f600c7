//! Client listeners (reference §10): events for created/modified/removed/expired entries with the
//! message-id rules of §10.3, interests, includeCurrentState, the key-value-version converter,
//! removal, and events for writes made through another replica sharing one PostgreSQL.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferrod_codec::{
    op, status, CacheEvent, EventKind, EventPayload, Factory, Incoming, Request, Response,
};

fn add(
    id: &[u8],
    include_state: bool,
    converter: Option<&str>,
    raw: bool,
    interests: u32,
) -> Request {
    Request::AddClientListener {
        listener_id: Bytes::copy_from_slice(id),
        include_current_state: include_state,
        filter: None,
        converter: converter.map(|n| Factory {
            name: n.to_string(),
            params: vec![],
        }),
        use_raw_data: raw,
        interests,
    }
}

/// The next event on `c` within `wait`, skipping nothing: a response here is a test failure.
async fn next_event(c: &mut Client, wait: Duration) -> Option<CacheEvent> {
    match tokio::time::timeout(wait, futures::StreamExt::next(&mut c.framed)).await {
        Ok(Some(Ok(Incoming::Event(e)))) => Some(e),
        Ok(other) => panic!("expected an event, got {other:?}"),
        Err(_) => None,
    }
}

fn plain(e: &CacheEvent) -> (EventKind, Bytes, Option<i64>) {
    match &e.payload {
        EventPayload::Plain { key, version } => (e.kind, key.clone(), *version),
        other => panic!("expected a plain event, got {other:?}"),
    }
}

async fn register(c: &mut Client, req: Request) -> Response {
    let frame = c.frame(req, 0);
    c.call(frame).await
}

#[tokio::test]
async fn listener_gets_created_modified_removed_with_versions_and_message_id_zero() {
    let server = Server::start().await;
    let mut l = server.client().await;
    assert_status(
        &register(&mut l, add(b"L1", false, None, false, 0)).await,
        status::SUCCESS,
    );
    let mut w = server.client().await;
    w.put("k", "v1").await;
    let v1 = w.version_of("k").await.unwrap();
    w.put("k", "v2").await;
    let v2 = w.version_of("k").await.unwrap();
    assert_status(
        &w.req(Request::Remove { key: b("k") }).await,
        status::SUCCESS,
    );

    let wait = Duration::from_secs(5);
    let e1 = next_event(&mut l, wait).await.expect("created event");
    assert_eq!(e1.message_id, 0);
    assert_eq!(e1.listener_id, Bytes::from_static(b"L1"));
    assert_eq!(plain(&e1), (EventKind::Created, b("k"), Some(v1)));
    let e2 = next_event(&mut l, wait).await.expect("modified event");
    assert_eq!(plain(&e2), (EventKind::Modified, b("k"), Some(v2)));
    let e3 = next_event(&mut l, wait).await.expect("removed event");
    assert_eq!(plain(&e3), (EventKind::Removed, b("k"), None));
    // Exactly one event per change.
    assert!(next_event(&mut l, Duration::from_millis(500))
        .await
        .is_none());

    // The listener's connection keeps serving requests between events.
    w.put("x", "1").await;
    let e = next_event(&mut l, wait).await.expect("created event for x");
    assert_eq!(plain(&e).1, b("x"));
    assert_eq!(l.get_str("x").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn interests_include_state_converter_and_removal() {
    let server = Server::start().await;
    let mut w = server.client().await;
    w.put("a", "1").await;
    w.put("b", "2").await;

    // includeCurrentState: existing entries arrive as created events carrying the ADD request's
    // message id, before its response.
    let mut l = server.client().await;
    let frame = l.frame(add(b"S", true, None, false, 0x01 | 0x04), 0);
    let id = frame.header.message_id;
    l.send(frame).await;
    let mut initial = Vec::new();
    loop {
        match l.try_recv().await {
            Some(Ok(Incoming::Event(e))) => {
                assert_eq!(e.message_id, id);
                initial.push(plain(&e).1);
            }
            Some(Ok(Incoming::Response(r))) => {
                assert_eq!(r.header.message_id, id);
                assert_status(&r, status::SUCCESS);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, vec![b("a"), b("b")]);

    // Interests created|removed: a modification is not delivered.
    w.put("a", "changed").await;
    w.put("c", "3").await;
    let e = next_event(&mut l, Duration::from_secs(5)).await.unwrap();
    assert_eq!(plain(&e).0, EventKind::Created);
    assert_eq!(plain(&e).1, b("c"));

    // Keycloak's expiration-listener converter, raw: key, value and version in one payload.
    let mut k = server.client().await;
    let conv = "___eager-key-value-version-converter";
    assert_status(
        &register(&mut k, add(b"KV", false, Some(conv), true, 0)).await,
        status::SUCCESS,
    );
    w.put("d", "vd").await;
    let vd = w.version_of("d").await.unwrap();
    let e = next_event(&mut k, Duration::from_secs(5)).await.unwrap();
    let EventPayload::Custom { raw, data } = &e.payload else {
        panic!("{e:?}")
    };
    assert!(*raw);
    let mut expected = vec![1, b'd', 2, b'v', b'd'];
    expected.extend_from_slice(&vd.to_be_bytes());
    assert_eq!(&data[..], &expected[..]);

    // Unknown converter or any filter: a clear error, and the connection stays usable.
    let r = register(
        &mut k,
        add(b"X", false, Some("no-such-converter"), false, 0),
    )
    .await;
    assert_error(&r, status::SERVER_ERROR, "no-such-converter");
    assert_eq!(k.get_str("d").await.as_deref(), Some("vd"));

    // `l` (created|removed) got the creation of "d" too.
    let e = next_event(&mut l, Duration::from_secs(5)).await.unwrap();
    assert_eq!(plain(&e).1, b("d"));

    // Removal: first time removed, then "not removed"; no more events afterwards.
    let r = l
        .req(Request::RemoveClientListener {
            listener_id: Bytes::from_static(b"S"),
        })
        .await;
    assert_eq!(
        r.header.opcode,
        op::response_for(op::REMOVE_CLIENT_LISTENER)
    );
    assert_status(&r, status::SUCCESS);
    let r = l
        .req(Request::RemoveClientListener {
            listener_id: Bytes::from_static(b"S"),
        })
        .await;
    assert_status(&r, status::NOT_EXECUTED);
    w.put("e", "5").await;
    assert!(next_event(&mut l, Duration::from_millis(500))
        .await
        .is_none());
}

#[tokio::test]
async fn expired_entries_raise_expired_events_with_value_for_the_converter() {
    let server = Server::start_with(ServerOpts::default().arg("--reaper-interval-ms=100")).await;
    let mut l = server.client().await;
    assert_status(
        &register(&mut l, add(b"E", false, None, false, 0x08)).await,
        status::SUCCESS,
    );
    let mut k = server.client().await;
    let conv = "___eager-key-value-version-converter";
    assert_status(
        &register(&mut k, add(b"K", false, Some(conv), true, 0x08)).await,
        status::SUCCESS,
    );
    let mut w = server.client().await;
    w.put_exp("gone", "soon", exp_ms(Some(300), None)).await;
    let e = next_event(&mut l, Duration::from_secs(5))
        .await
        .expect("expired event");
    assert_eq!(plain(&e), (EventKind::Expired, b("gone"), None));
    let e = next_event(&mut k, Duration::from_secs(5))
        .await
        .expect("expired event (converter)");
    let EventPayload::Custom { data, .. } = &e.payload else {
        panic!("{e:?}")
    };
    assert!(
        data.windows(4).any(|w| w == b"soon"),
        "the expired value travels with the event: {data:?}"
    );
}

#[tokio::test]
async fn a_listener_dies_with_its_connection() {
    let server = Server::start().await;
    let mut l = server.client().await;
    assert_status(
        &register(&mut l, add(b"D", false, None, false, 0)).await,
        status::SUCCESS,
    );
    drop(l);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The id is free again on a new connection, which proves the old registration is gone.
    let mut l2 = server.client().await;
    assert_status(
        &register(&mut l2, add(b"D", false, None, false, 0)).await,
        status::SUCCESS,
    );
    let mut w = server.client().await;
    w.put("z", "1").await;
    assert!(next_event(&mut l2, Duration::from_secs(5)).await.is_some());
}

/// Two replicas over one PostgreSQL: a listener on B sees, exactly once and per key in commit
/// order, every change made through A.
#[tokio::test]
async fn listener_on_one_replica_sees_writes_made_through_another() {
    let Some(db) = PgDb::create("listener_replicas").await else {
        return;
    };
    let a = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let bsrv = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let mut l = bsrv.client().await;
    assert_status(
        &register(&mut l, add(b"R", false, None, false, 0)).await,
        status::SUCCESS,
    );
    let mut w = a.client().await;
    let mut expected = Vec::new();
    for i in 0..20 {
        let k = format!("k{}", i % 4);
        w.put(&k, &format!("v{i}")).await;
        expected.push((k.clone(), w.version_of(&k).await.unwrap()));
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let e = next_event(&mut l, Duration::from_secs(10))
            .await
            .expect("event from the other replica");
        let (_, key, version) = plain(&e);
        seen.push((String::from_utf8(key.to_vec()).unwrap(), version.unwrap()));
    }
    for k in ["k0", "k1", "k2", "k3"] {
        let want: Vec<i64> = expected
            .iter()
            .filter(|(x, _)| x == k)
            .map(|(_, v)| *v)
            .collect();
        let got: Vec<i64> = seen
            .iter()
            .filter(|(x, _)| x == k)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(got, want, "events for {k} in commit order, exactly once");
    }
    assert!(next_event(&mut l, Duration::from_millis(700))
        .await
        .is_none());
    // B serves what A wrote.
    assert_eq!(l.get_str("k3").await.as_deref(), Some("v19"));

    // A silent write and a CLEAR on A reach B's memory but none of B's listeners: the next
    // event is the write after them.
    put_silently(&mut w, "quiet", "1").await;
    assert_status(&w.req(Request::Clear).await, status::SUCCESS);
    w.put("after", "x").await;
    let e = next_event(&mut l, Duration::from_secs(10))
        .await
        .expect("event for the write after the CLEAR");
    assert_eq!(plain(&e).0, EventKind::Created);
    assert_eq!(plain(&e).1, b("after"));
    assert!(next_event(&mut l, Duration::from_millis(700))
        .await
        .is_none());
    assert_eq!(l.get_str("k3").await, None, "B's memory was cleared");
}

/// SKIP_LISTENER_NOTIFICATION (0x20): the write happens and is visible, but no listener hears of
/// it. Nor of a CLEAR (Infinispan raises no client events for one).
#[tokio::test]
async fn skip_listener_notification_flag_and_clear_raise_no_events() {
    let server = Server::start().await;
    let mut l = server.client().await;
    assert_status(
        &register(&mut l, add(b"Q", false, None, false, 0)).await,
        status::SUCCESS,
    );
    let mut w = server.client().await;
    put_silently(&mut w, "quiet", "1").await;
    assert_eq!(l.get_str("quiet").await.as_deref(), Some("1"));
    assert_status(&w.req(Request::Clear).await, status::SUCCESS);
    w.put("loud", "2").await;
    let e = next_event(&mut l, Duration::from_secs(5))
        .await
        .expect("event for the unflagged write");
    assert_eq!(plain(&e).0, EventKind::Created);
    assert_eq!(plain(&e).1, b("loud"));
    assert!(next_event(&mut l, Duration::from_millis(500))
        .await
        .is_none());
    assert_eq!(l.get_str("quiet").await, None);
}

/// A listener that never reads must not slow writers down: its bounded queue overflows and its
/// connection is closed, while writes keep completing.
#[tokio::test]
async fn a_slow_listener_is_disconnected_and_never_blocks_writers() {
    let server = Server::start_with(ServerOpts::default().arg("--max-listener-queue=16")).await;
    // A tiny receive buffer, so the kernel holds few events and the server's queue fills soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(server.addr().parse().unwrap())
        .await
        .unwrap();
    let mut slow = Client {
        framed: tokio_util::codec::Framed::new(stream, ferrod_codec::ClientCodec::new()),
        version: 41,
        cache: String::new(),
    };
    assert_status(
        &register(&mut slow, add(b"SLOW", false, None, false, 0)).await,
        status::SUCCESS,
    );
    let mut w = server.client().await;
    // Writers complete although nobody reads the events (a blocked writer would hang here).
    for batch in 0..40 {
        let entries = (0..1000)
            .map(|i| (b(&format!("k{batch}-{i}")), Bytes::from(vec![b'x'; 64])))
            .collect();
        let r = w
            .req(Request::PutAll {
                expiration: EXP_DEFAULT,
                entries,
            })
            .await;
        assert_status(&r, status::SUCCESS);
    }
    // Drain what the kernel buffered: the server must have closed the connection.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match futures::StreamExt::next(&mut slow.framed).await {
                Some(Ok(_)) => continue,
                _ => return true,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the overflowing listener's connection stayed open");
    assert!(
        server.log().contains("listener event queue overflowed"),
        "{}",
        server.log()
    );
    assert_eq!(w.size().await, 40_000);
}

/// includeCurrentState right after writes on PostgreSQL: a write is in memory as soon as it
/// committed, but its event is published only when the change-feed follower reaches its change
/// row, so a listener added in between must get it once (as initial state), not a second time
/// live. Also nothing is lost: every key written before the ADD and every key written after it
/// arrives exactly once.
#[tokio::test]
async fn include_current_state_right_after_writes_gets_each_entry_once() {
    let Some(db) = PgDb::create("listener_state_once").await else {
        return;
    };
    let server = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let mut w = server.client().await;
    for round in 0..15 {
        // Pipelined puts, so the last ones commit just before the ADD arrives.
        let keys: Vec<String> = (0..40).map(|i| format!("r{round}-{i}")).collect();
        let frames: Vec<_> = keys
            .iter()
            .map(|k| {
                w.frame(
                    Request::Put {
                        key: b(k),
                        value: b("v"),
                        expiration: EXP_DEFAULT,
                    },
                    0,
                )
            })
            .collect();
        for f in frames.iter().cloned() {
            w.send(f).await;
        }
        for _ in &frames {
            assert_status(&w.recv().await, status::SUCCESS);
        }
        let mut l = server.client().await;
        let id = format!("L{round}");
        let frame = l.frame(add(id.as_bytes(), true, None, false, 0), 0);
        l.send(frame).await;
        let mut seen: std::collections::HashMap<Bytes, usize> = Default::default();
        loop {
            match l.try_recv().await {
                Some(Ok(Incoming::Event(e))) => *seen.entry(plain(&e).1).or_default() += 1,
                Some(Ok(Incoming::Response(r))) => {
                    assert_status(&r, status::SUCCESS);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Live: a key written after the ADD, then wait for it (its event comes after every
        // event of the earlier writes, whose change rows have lower seqs on this one replica).
        let marker = format!("m{round}");
        w.put(&marker, "x").await;
        loop {
            let e = next_event(&mut l, Duration::from_secs(10))
                .await
                .expect("the marker's event");
            let k = plain(&e).1;
            *seen.entry(k.clone()).or_default() += 1;
            if k == b(&marker) {
                break;
            }
        }
        for k in &keys {
            assert_eq!(
                seen.get(&b(k)).copied().unwrap_or(0),
                1,
                "round {round}: events for {k} (all: {seen:?})"
            );
        }
        assert_eq!(seen.get(&b(&marker)), Some(&1));
        // Nothing more in flight for these keys.
        assert!(next_event(&mut l, Duration::from_millis(200))
            .await
            .is_none());
    }
}

/// PUT with SKIP_LISTENER_NOTIFICATION (0x20): stored, but no listener is told.
async fn put_silently(c: &mut Client, key: &str, value: &str) {
    let r = c
        .req_flags(
            Request::Put {
                key: b(key),
                expiration: EXP_DEFAULT,
                value: b(value),
            },
            ferrod_codec::flags::SKIP_LISTENER_NOTIFICATION,
        )
        .await;
    assert_status(&r, status::SUCCESS);
}
