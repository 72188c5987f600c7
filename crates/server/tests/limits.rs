//! Configured limits (README configuration table): a request past a limit gets a clear HotRod
//! error or a closed connection, other connections are unaffected, and memory stays bounded by
//! what clients actually send, not by what they announce.

mod common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use ferrod_codec::primitives::put_vint;
use ferrod_codec::{op, status, Request, RequestFrame, RequestHeader, ResponseBody};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(5);

fn put_frame(id: u64, key: &str, value_len: usize) -> RequestFrame {
    RequestFrame {
        header: RequestHeader::new(41, op::PUT, id, ""),
        request: Request::Put {
            key: b(key),
            expiration: EXP_DEFAULT,
            value: Bytes::from(vec![b'v'; value_len]),
        },
    }
}

/// A PUT of `key` whose whole frame is exactly `total` bytes.
fn put_frame_of_len(id: u64, key: &str, total: usize) -> RequestFrame {
    // 200 and the result both take a 2-byte length vInt, so the frame grows one byte per byte.
    let base = encode(&put_frame(id, key, 200)).len();
    let f = put_frame(id, key, 200 + total - base);
    assert_eq!(encode(&f).len(), total);
    f
}

/// The single error response before the server closed the connection.
#[track_caller]
fn error_then_close(bytes: &[u8], closed: bool) -> ferrod_codec::Response {
    assert!(closed, "the server kept the connection open");
    let rs = decode_all(bytes, &[]);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = rs.into_iter().next().unwrap();
    assert_eq!(r.header.opcode, op::ERROR_RESPONSE, "{r:?}");
    r
}

#[tokio::test]
async fn a_frame_one_byte_over_max_frame_bytes_is_refused_and_one_at_it_is_served() {
    let mut server = Server::start_with(ServerOpts::default().arg("--max-frame-bytes=4096")).await;
    let mut s0 = sentinel(&server).await;

    // Exactly at the limit: served, on a connection that stays open.
    let mut c = server.client().await;
    let at = put_frame_of_len(Client::next_id(), "at", 4096);
    let Request::Put { value, .. } = at.request.clone() else {
        unreachable!()
    };
    assert_status(&c.call(at).await, status::SUCCESS);
    assert_eq!(c.get("at").await, Some(value));

    // One byte more, whole in the socket: its fields are each far below the limit, the frame
    // is not.
    for split in [false, true] {
        let id = 900 + u64::from(split);
        let over = encode(&put_frame_of_len(id, "over", 4097));
        let mut s = server.raw().await;
        if split {
            // First everything but the last byte (waits), then the byte that crosses the limit.
            s.write_all(&over[..4096]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rest = if split { &over[4096..] } else { &over[..] };
        let (bytes, closed) = raw_exchange(&mut s, rest, false, WAIT).await;
        let r = error_then_close(&bytes, closed);
        assert_error(&r, status::PARSE_ERROR, "4096");
        assert_eq!(
            r.header.message_id, id,
            "the id was readable, so it is echoed"
        );
    }
    assert_eq!(s0.get("over").await, None, "nothing was stored");

    // A PUT_ALL of small entries whose sum is past the limit.
    let entries: Vec<(Bytes, Bytes)> = (0..100)
        .map(|i| (b(&format!("k{i}")), Bytes::from(vec![1u8; 50])))
        .collect();
    let frame = RequestFrame {
        header: RequestHeader::new(41, op::PUT_ALL, 77, ""),
        request: Request::PutAll {
            expiration: EXP_DEFAULT,
            entries,
        },
    };
    let mut s = server.raw().await;
    let (bytes, closed) = raw_exchange(&mut s, &encode(&frame), false, WAIT).await;
    let r = error_then_close(&bytes, closed);
    assert_eq!(r.header.message_id, 77);
    assert_eq!(s0.get("k0").await, None);

    // The connection that sent the frame at the limit still works.
    c.put("after", "yes").await;
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn a_key_one_byte_over_max_key_bytes_is_refused_by_every_op_that_names_it() {
    let mut server = Server::start_with(ServerOpts::default().arg("--max-key-bytes=100")).await;
    let mut s0 = sentinel(&server).await;
    let mut c = server.client().await;
    let at = Bytes::from(vec![b'k'; 100]);
    let over = Bytes::from(vec![b'k'; 101]);
    assert_status(&c.put_bytes(at.clone(), b("v")).await, status::SUCCESS);
    assert_eq!(c.get_bytes(at.clone()).await, Some(b("v")));

    let refused = vec![
        Request::Put {
            key: over.clone(),
            expiration: EXP_DEFAULT,
            value: b("v"),
        },
        Request::PutIfAbsent {
            key: over.clone(),
            expiration: EXP_DEFAULT,
            value: b("v"),
        },
        Request::Get { key: over.clone() },
        Request::ContainsKey { key: over.clone() },
        Request::Remove { key: over.clone() },
        Request::GetAll {
            keys: vec![at.clone(), over.clone()],
        },
        Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![(b("small"), b("v")), (over.clone(), b("v"))],
        },
        Request::StartPutStream {
            key: over.clone(),
            expiration: EXP_DEFAULT,
            version: 0,
        },
    ];
    for req in refused {
        let what = format!("{:?}", req.opcode());
        let r = c.req(req).await;
        assert_error(&r, status::SERVER_ERROR, "max_key_bytes");
        assert!(
            matches!(&r.body, ResponseBody::Error(m) if m.contains("101")),
            "{what}: {r:?}"
        );
    }
    assert_eq!(c.get("small").await, None, "PUT_ALL is all or nothing");
    // The same connection goes on serving.
    assert_eq!(c.get_bytes(at).await, Some(b("v")));
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn iterations_past_max_iterations_per_connection_get_an_error_until_one_ends() {
    let mut server =
        Server::start_with(ServerOpts::default().arg("--max-iterations-per-connection=3")).await;
    let mut s0 = sentinel(&server).await;
    let mut c = server.client().await;
    let start = Request::IterationStart {
        segments: None,
        filter_converter: None,
        batch_size: 10,
        include_metadata: false,
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = c.req(start.clone()).await;
        let ResponseBody::IterationId(id) = r.body else {
            panic!("{r:?}")
        };
        ids.push(id);
    }
    let r = c.req(start.clone()).await;
    assert_error(&r, status::SERVER_ERROR, "max_iterations_per_connection");
    // The open ones still work, and the limit is per connection.
    let r = c
        .req(Request::IterationNext {
            iteration_id: ids[0].clone(),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    let (entries, _) = server.client().await.iterate_all(10, false, None).await;
    assert_eq!(entries.len(), 1, "the sentinel entry");
    // Ending one makes room for one.
    let r = c
        .req(Request::IterationEnd {
            iteration_id: ids.remove(1),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    let r = c.req(start.clone()).await;
    assert!(matches!(r.body, ResponseBody::IterationId(_)), "{r:?}");
    let r = c.req(start).await;
    assert_error(&r, status::SERVER_ERROR, "limit 3");
    check_alive(&mut server, &mut s0).await;
}

/// Keycloak's listener connections are quiet for as long as nothing changes; they must not be
/// closed for it. Connections that send nothing, or trickle half a request, are.
#[tokio::test]
async fn idle_connections_are_closed_but_listener_and_active_ones_are_not() {
    let mut server = Server::start_with(ServerOpts::default().arg("--idle-timeout-s=2")).await;
    // A listener connection, quiet from now on.
    let mut l = server.client().await;
    let r = l
        .req(Request::AddClientListener {
            listener_id: b("quiet"),
            include_current_state: false,
            filter: None,
            converter: None,
            use_raw_data: false,
            interests: 0,
        })
        .await;
    assert_status(&r, status::SUCCESS);
    // A connection that never sends anything, and one that sends half a request.
    let mut silent = server.raw().await;
    let mut trickle = server.raw().await;
    let half = encode(&put_frame(5, "half", 100));
    trickle.write_all(&half[..20]).await.unwrap();
    let (_, closed) = read_until_close(&mut silent, CALL_TIMEOUT).await;
    assert!(closed, "a silent connection stayed open");
    let (bytes, closed) = read_until_close(&mut trickle, CALL_TIMEOUT).await;
    assert!(closed, "a connection with half a request stayed open");
    assert!(bytes.is_empty(), "nothing to answer: {bytes:02X?}");
    // An active connection: a request every half timeout, for two timeouts.
    let mut active = server.client().await;
    for _ in 0..8 {
        assert_status(&active.ping().await, status::SUCCESS);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    active.put("k", "v").await;
    match tokio::time::timeout(CALL_TIMEOUT, futures::StreamExt::next(&mut l.framed)).await {
        Ok(Some(Ok(ferrod_codec::Incoming::Event(e)))) => {
            assert_eq!(e.listener_id, b("quiet"));
        }
        other => panic!("the quiet listener connection got no event: {other:?}"),
    }
    assert_eq!(l.get_str("k").await.as_deref(), Some("v"));
    server.assert_running();
}

/// Announcing a value just under the limit and then sending nothing: the server buffers what
/// arrived, it does not reserve what was announced.
#[tokio::test]
async fn announced_but_unsent_values_do_not_allocate() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    let rss_before = server.rss_kib();
    let mut conns = Vec::new();
    for i in 0..32u64 {
        let mut frame = BytesMut::new();
        RequestHeader::new(41, op::PUT, 100 + i, "").write(&mut frame);
        put_vint(&mut frame, 1);
        frame.put_u8(b'k');
        frame.put_u8(0x88);
        put_vint(&mut frame, 60 * 1024 * 1024); // under the 64 MiB default
        frame.extend_from_slice(&[0u8; 1024]);
        let mut s = server.raw().await;
        s.write_all(&frame).await.unwrap();
        conns.push(s);
    }
    // Every connection has read its bytes once the sentinel (served after them) answers.
    s0.ping().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = server.rss_kib();
    // 32 × 60 MiB announced; a few MiB of growth at most.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(conns);
    check_alive(&mut server, &mut s0).await;
}

/// A connection the server serves: connects until a PING is answered. A slot is released only
/// once the server noticed the close of the connection that held it, a moment after the client
/// dropped it (the harness's readiness probe, or an earlier connection of the test), and until
/// then a connection past the limit is closed at once.
async fn served_client(server: &Server) -> Client {
    loop {
        let mut c = server.client().await;
        c.send(c.frame(Request::Ping, 0)).await;
        if let Some(Ok(_)) = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut c.framed))
            .await
            .ok()
            .flatten()
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connections past max_connections are closed at once; the served ones keep working.
#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once() {
    let mut server = Server::start_with(ServerOpts::default().arg("--max-connections=2")).await;
    let mut a = served_client(&server).await;
    a.put("a", "1").await;
    let mut b2 = served_client(&server).await;
    b2.put("b", "1").await;
    let mut third = server.raw().await;
    let (bytes, closed) = read_until_close(&mut third, CALL_TIMEOUT).await;
    assert!(closed && bytes.is_empty(), "a third connection was served");
    assert_eq!(a.get_str("b").await.as_deref(), Some("1"));
    drop(b2);
    // Its slot is released: a new connection is served.
    let mut c = served_client(&server).await;
    assert_eq!(c.get_str("a").await.as_deref(), Some("1"));
    server.assert_running();
}

/// 10,000 connections that each did one PING and then sit idle: the server's resident memory
/// grows by a bounded amount per connection.
#[tokio::test]
async fn ten_thousand_idle_connections_cost_bounded_memory() {
    const N: usize = 10_000;
    /// Generous: a connection's read buffer (8 KiB), write buffer (16 KiB), two tasks, channels.
    const MAX_KIB_PER_CONNECTION: u64 = 64;
    raise_fd_limit(N as u64 + 1000);
    let mut server =
        Server::start_with(ServerOpts::default().arg(&format!("--max-connections={}", N + 100)))
            .await;
    let mut s0 = sentinel(&server).await;
    let rss_before = server.rss_kib();
    let ping = encode(&RequestFrame {
        header: RequestHeader::new(41, op::PING, 1, ""),
        request: Request::Ping,
    });
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = server.raw().await;
        s.write_all(&ping).await.unwrap();
        conns.push(s);
    }
    // Every connection is being served: each gets its PING answered.
    for s in conns.iter_mut() {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(CALL_TIMEOUT, tokio::io::AsyncReadExt::read(s, &mut buf))
            .await
            .expect("PING answer")
            .expect("read");
        assert_eq!(n, 1, "a connection was closed");
    }
    let rss_after = server.rss_kib();
    let per_connection = rss_after.saturating_sub(rss_before) / N as u64;
    eprintln!("RSS {rss_before} KiB -> {rss_after} KiB with {N} idle connections: {per_connection} KiB each");
    assert!(
        per_connection <= MAX_KIB_PER_CONNECTION,
        "{per_connection} KiB per idle connection (RSS {rss_before} -> {rss_after} KiB)"
    );
    check_alive(&mut server, &mut s0).await;
    drop(conns);
}

/// The test process and the server it starts both need a descriptor per connection.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "this test needs {want} file descriptors (ulimit -n is {})",
        lim.rlim_cur
    );
}

fn stat(stats: &[(String, String)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {stats:?}"))
}

/// A connection with max_inflight_per_connection writes waiting for their commit stops reading
/// (memory holds at most that many decoded requests); once they commit it reads on and every
/// request is answered.
#[tokio::test]
async fn a_connection_stops_reading_at_max_inflight_per_connection() {
    use sqlx::Connection;
    const FRAME_VALUE: usize = 64 * 1024;
    let server = Server::start_with(
        ServerOpts::default()
            .arg("--max-inflight-per-connection=2")
            .arg("--database-busy-timeout-ms=60000"),
    )
    .await;
    let mut watcher = server.client().await;
    let read_before = stat(&watcher.stats().await, "totalBytesRead");
    // Another SQLite connection holds the write lock: writes wait for it.
    let mut other = server.hold_sqlite_write_lock().await;
    let frames: Vec<RequestFrame> = (0..10)
        .map(|i| put_frame(500 + i, &format!("inflight-{i}"), FRAME_VALUE))
        .collect();
    let mut bytes = BytesMut::new();
    for f in &frames {
        bytes.extend_from_slice(&encode(f));
    }
    let mut s = server.raw().await;
    let writer = tokio::spawn(async move {
        s.write_all(&bytes).await.unwrap();
        s
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read_blocked = stat(&watcher.stats().await, "totalBytesRead") - read_before;
    // Two writes in flight, a third decoded and waiting for room, and the watcher's requests.
    assert!(
        read_blocked <= 3 * (FRAME_VALUE as u64 + 100) + 1000,
        "{read_blocked} bytes decoded while 2 writes were waiting"
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let mut s = writer.await.unwrap();
    let mut out = Vec::new();
    let mut rs = Vec::new();
    while rs.len() < frames.len() {
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(
            CALL_TIMEOUT,
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .expect("answers after the lock is released")
        .unwrap();
        assert!(n > 0, "closed before every answer");
        out.extend_from_slice(&buf[..n]);
        rs = decode_all(&out, &frames);
    }
    assert!(
        rs.iter().all(|r| r.header.status == status::SUCCESS),
        "{rs:?}"
    );
    let read_after = stat(&watcher.stats().await, "totalBytesRead") - read_before;
    assert!(read_after >= 10 * FRAME_VALUE as u64, "{read_after}");
    assert_eq!(
        watcher.get("inflight-9").await.map(|v| v.len()),
        Some(FRAME_VALUE)
    );
}

/// Keys up to the default max_key_bytes (64 KiB) are served by both backends, including
/// PostgreSQL, whose index cannot hold a key over about 2.7 KB as is (the store keeps a hash
/// of long keys in the key column): every keyed op, a restart, and one byte over is refused.
async fn keys_up_to_the_default_max_key_bytes(mut server: Server) {
    let mut c = server.client().await;
    let keys: Vec<Bytes> = [3_000usize, 20_000, 65_536]
        .iter()
        .map(|n| {
            Bytes::from(
                (0..*n)
                    .map(|i| (i * 7 + i / 251) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        assert_status(&c.put_bytes(k.clone(), b("v")).await, status::SUCCESS);
        assert_eq!(c.get_bytes(k.clone()).await, Some(b("v")), "key {i}");
    }
    let r = c.req(Request::GetAll { keys: keys.clone() }).await;
    assert!(
        matches!(&r.body, ResponseBody::GetAll(m) if m.len() == keys.len()),
        "{r:?}"
    );
    let r = c
        .req(Request::Remove {
            key: keys[1].clone(),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    server.stop().await;
    server.restart().await;
    let mut c = server.client().await;
    assert_eq!(c.get_bytes(keys[0].clone()).await, Some(b("v")));
    assert_eq!(c.get_bytes(keys[1].clone()).await, None);
    assert_eq!(c.get_bytes(keys[2].clone()).await, Some(b("v")));
    let mut over = keys[2].to_vec();
    over.push(0);
    let r = c.put_bytes(Bytes::from(over), b("v")).await;
    assert_error(&r, status::SERVER_ERROR, "max_key_bytes");
}

#[tokio::test]
async fn keys_up_to_the_default_max_key_bytes_sqlite() {
    keys_up_to_the_default_max_key_bytes(Server::start().await).await;
}

#[tokio::test]
async fn keys_up_to_the_default_max_key_bytes_postgres() {
    let Some(db) = PgDb::create("longkeys").await else {
        return;
    };
    keys_up_to_the_default_max_key_bytes(
        Server::start_with(ServerOpts::default().database(&db.url)).await,
    )
    .await;
}
