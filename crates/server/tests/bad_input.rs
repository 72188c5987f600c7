//! Bad input (DESIGN decision 9, reference §4): every malformed frame gets an error response or a
//! closed connection, the server never crashes, and a connection opened before keeps working.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::*;
use ferrod_codec::primitives::{put_string, put_vint};
use ferrod_codec::{op, status, Request, RequestFrame, RequestHeader, ResponseBody};

const WAIT: Duration = Duration::from_secs(5);

/// Header bytes (magic included) of a request at `version` with opcode `opcode`.
fn header_bytes(version: u8, opcode: u8, id: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::new(version, opcode, id, "").write(&mut buf);
    buf
}

/// The single error response in `bytes`, which must be followed by a close.
#[track_caller]
fn single_error(bytes: &[u8], closed: bool) -> ferrod_codec::Response {
    assert!(closed, "the server kept the connection open: {bytes:02X?}");
    let rs = decode_all(bytes, &[]);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = rs.into_iter().next().unwrap();
    assert_eq!(r.header.opcode, op::ERROR_RESPONSE, "{r:?}");
    assert!(matches!(r.body, ResponseBody::Error(_)));
    r
}

/// As Infinispan does: a byte that cannot start a request is answered with 0x81 (message id 0)
/// and skipped; the next request on the same connection is served. The npm client relies on it
/// (it sends a stray byte after ADD_CLIENT_LISTENER at 2.2/2.5).
#[tokio::test]
async fn bad_magic_gets_0x81_with_id_0_and_the_next_request_is_served() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    let mut s = server.raw().await;
    let mut frame = header_bytes(40, op::GET, 77);
    frame[0] = 0xA1; // a response magic, not a request one
    let ping = ferrod_codec::RequestFrame {
        header: RequestHeader::new(31, op::PING, 78, ""),
        request: ferrod_codec::Request::Ping,
    };
    let mut bytes_out = frame.clone();
    bytes_out.extend_from_slice(&[0x0F]);
    bytes_out.extend_from_slice(&encode(&ping));
    let (bytes, _closed) = raw_exchange(&mut s, &bytes_out, false, WAIT).await;
    let rs = decode_all(&bytes, &[ping]);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(rs[0].header.opcode, op::ERROR_RESPONSE);
    assert_eq!(rs[0].header.status, status::INVALID_MAGIC_OR_MESSAGE_ID);
    assert_eq!(rs[0].header.message_id, 0, "header unreadable: id 0");
    assert_eq!(rs[1].header.message_id, 78);
    assert_eq!(rs[1].header.status, status::SUCCESS);
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn unknown_versions_get_an_error_then_close() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    for v in [19u8, 42, 10, 32, 0, 255] {
        let mut s = server.raw().await;
        let mut frame = BytesMut::new();
        frame.put_u8(0xA0);
        frame.put_u8(5); // message id
        frame.put_u8(v);
        frame.put_u8(op::GET);
        frame.extend_from_slice(&[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, b'k']);
        let (bytes, closed) = raw_exchange(&mut s, &frame, false, WAIT).await;
        let r = single_error(&bytes, closed);
        assert!(
            r.header.status == status::UNKNOWN_VERSION || r.header.status == status::PARSE_ERROR,
            "version {v}: {r:?}"
        );
        assert_eq!(
            r.header.message_id, 5,
            "the id was readable, so it is echoed"
        );
    }
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn unknown_opcode_gets_0x82_then_close() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    for opcode in [0x99u8, 0x00, 0x02, 0xFF] {
        let mut s = server.raw().await;
        let mut frame = header_bytes(41, opcode, 6);
        frame.extend_from_slice(&[0x01, b'k']);
        let (bytes, closed) = raw_exchange(&mut s, &frame, false, WAIT).await;
        let r = single_error(&bytes, closed);
        assert_eq!(
            r.header.status,
            status::UNKNOWN_OPERATION,
            "op 0x{opcode:02X}"
        );
        assert_eq!(r.header.message_id, 6);
    }
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn overlong_varints_get_an_error() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    // An 11-byte message id (vLong allows 10).
    let mut s = server.raw().await;
    let mut frame = vec![0xA0];
    frame.extend_from_slice(&[0xFF; 10]);
    frame.extend_from_slice(&[0x01, 41, op::GET]);
    let (bytes, closed) = raw_exchange(&mut s, &frame, false, WAIT).await;
    let r = single_error(&bytes, closed);
    assert!(status::is_error(r.header.status));
    // A 6-byte cache-name length (vInt allows 5).
    let mut s = server.raw().await;
    let mut frame = vec![0xA0, 0x09, 41, op::GET];
    frame.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    let (bytes, closed) = raw_exchange(&mut s, &frame, false, WAIT).await;
    let r = single_error(&bytes, closed);
    assert_eq!(r.header.status, status::PARSE_ERROR, "{r:?}");
    assert_eq!(r.header.message_id, 9);
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn announcing_a_2_gib_value_is_refused_at_once_without_memory_growth() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    let rss_before = server.rss_kib();
    for round in 0..5 {
        let mut frame = header_bytes(41, op::PUT, 11 + round);
        put_vint(&mut frame, 1); // key
        frame.put_u8(b'k');
        frame.put_u8(0x88); // expiration: infinite/infinite
        put_vint(&mut frame, 0x8000_0000); // value length 2 GiB
        frame.extend_from_slice(&[0u8; 1000]); // and only a little of it
        let mut s = server.raw().await;
        let t = Instant::now();
        let (bytes, closed) = raw_exchange(&mut s, &frame, false, WAIT).await;
        let r = single_error(&bytes, closed);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "answered after {:?}",
            t.elapsed()
        );
        assert!(status::is_error(r.header.status));
        assert_eq!(r.header.message_id, 11 + round);
    }
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 50 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(s0.get("k").await, None, "nothing was stored");
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn truncated_frame_then_half_close_and_garbage() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    // Half of a valid PUT, then the client stops writing.
    let frame = RequestFrame {
        header: RequestHeader::new(41, op::PUT, 3, ""),
        request: Request::Put {
            key: b("trunc"),
            expiration: EXP_DEFAULT,
            value: b("0123456789abcdef"),
        },
    };
    let full = encode(&frame);
    let mut s = server.raw().await;
    let (bytes, closed) = raw_exchange(&mut s, &full[..full.len() / 2], true, WAIT).await;
    assert!(closed, "server must close after EOF mid-frame");
    // Nothing or an error, never a success.
    for r in decode_all(&bytes, &[]) {
        assert_eq!(r.header.opcode, op::ERROR_RESPONSE, "{r:?}");
    }
    assert_eq!(s0.get("trunc").await, None, "half a frame stores nothing");

    // A complete frame followed by half a frame and a half-close: the complete one is answered.
    let mut s = server.raw().await;
    let mut bytes = full.to_vec();
    bytes.extend_from_slice(&full[..7]);
    let (out, closed) = raw_exchange(&mut s, &bytes, true, WAIT).await;
    assert!(closed);
    let rs = decode_all(&out, std::slice::from_ref(&frame));
    assert!(!rs.is_empty(), "the complete frame is answered");
    assert_status(&rs[0], status::SUCCESS);
    assert_eq!(
        s0.get_str("trunc").await.as_deref(),
        Some("0123456789abcdef")
    );

    // Garbage of various shapes.
    let mut seed = 0x9E37_79B9_u64;
    for len in [1usize, 3, 17, 512, 65_536] {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut s = server.raw().await;
        let (_bytes, _closed) = raw_exchange(&mut s, &garbage, true, WAIT).await;
        server.assert_running();
    }
    // Garbage that starts with a valid magic.
    let mut s = server.raw().await;
    let mut g = vec![0xA0];
    g.extend((0..300).map(|i| (i * 37 % 251) as u8));
    let _ = raw_exchange(&mut s, &g, true, WAIT).await;
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn unserved_ops_get_0x85_and_the_connection_keeps_serving() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    let mut c = server.client_v(40).await;
    c.put("k", "v").await;
    let xid = ferrod_codec::Xid {
        format_id: 1,
        global_transaction_id: b("gtrid"),
        branch_qualifier: b("bq"),
    };
    let reqs = vec![
        Request::CounterGet { name: "c".into() },
        Request::Query { query: b("junk") },
        Request::PrepareTx {
            xid: xid.clone(),
            one_phase_commit: true,
            modifications: vec![],
        },
        Request::CommitTx { xid },
        Request::GetMultimap {
            key: b("k"),
            supports_duplicates: false,
        },
        Request::CounterGetNames,
    ];
    for req in reqs {
        let what = format!("{req:?}");
        let r = c.req(req).await;
        assert_eq!(r.header.opcode, op::ERROR_RESPONSE, "{what}: {r:?}");
        assert_eq!(r.header.status, status::SERVER_ERROR, "{what}: {r:?}");
        // The same connection still serves requests correctly.
        assert_eq!(c.get_str("k").await.as_deref(), Some("v"), "after {what}");
    }
    check_alive(&mut server, &mut s0).await;
}

#[tokio::test]
async fn value_above_max_value_bytes_is_refused_and_connection_stays_usable() {
    let mut server = Server::start_with(ServerOpts::default().arg("--max-value-bytes=1000")).await;
    let mut s0 = sentinel(&server).await;
    let mut c = server.client_v(41).await;
    let big = bytes::Bytes::from(vec![7u8; 2000]);
    let r = c.put_bytes(b("big"), big.clone()).await;
    assert_error(&r, status::SERVER_ERROR, "1000");
    assert_eq!(c.get("big").await, None);
    // Exactly at the limit is fine.
    let ok = bytes::Bytes::from(vec![7u8; 1000]);
    assert_status(&c.put_bytes(b("ok"), ok.clone()).await, status::SUCCESS);
    assert_eq!(c.get("ok").await, Some(ok));
    // Also through PUT_ALL, a key above the limit and a 4.1 stream.
    let r = c
        .req(Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![(b("a"), b("small")), (b("b"), big.clone())],
        })
        .await;
    assert!(status::is_error(r.header.status), "{r:?}");
    assert_eq!(c.get("a").await, None, "PUT_ALL is all or nothing");
    let r = c.put_bytes(big.clone(), b("v")).await;
    assert!(status::is_error(r.header.status), "{r:?}");
    let r = c
        .req(Request::StartPutStream {
            key: b("st"),
            expiration: EXP_DEFAULT,
            version: 0,
        })
        .await;
    let ResponseBody::StreamId(id) = r.body else {
        panic!("{r:?}")
    };
    for (i, last) in [(0, false), (1, false), (2, true)] {
        let r = c
            .req(Request::NextPutStream {
                stream_id: id,
                last_chunk: last,
                chunk: bytes::Bytes::from(vec![1u8; 400]),
            })
            .await;
        if i < 2 {
            assert_status(&r, status::SUCCESS);
        } else {
            assert!(status::is_error(r.header.status), "{r:?}");
        }
    }
    assert_eq!(c.get("st").await, None);
    // The connection is still fine.
    c.put("after", "yes").await;
    assert_eq!(c.get_str("after").await.as_deref(), Some("yes"));
    // A frame far above the frame limit closes the connection (framing is lost) but nothing else.
    let mut frame = header_bytes(41, op::PUT, 21);
    put_string(&mut frame, "huge");
    frame.put_u8(0x88);
    put_vint(&mut frame, 10_000_000);
    let mut s = server.raw().await;
    let (bytes, closed) = raw_exchange(&mut s, &frame, false, WAIT).await;
    let r = single_error(&bytes, closed);
    assert_eq!(r.header.message_id, 21);
    check_alive(&mut server, &mut s0).await;
}

/// A client that shuts down its write half right after complete frames still gets every answer,
/// writes (answered after their commit) included, and then the close.
#[tokio::test]
async fn half_close_after_complete_frames_still_gets_every_answer() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    for version in [20u8, 31, 41] {
        let frames = vec![
            RequestFrame {
                header: RequestHeader::new(version, op::PUT, 31, ""),
                request: Request::Put {
                    key: b("hc"),
                    expiration: EXP_DEFAULT,
                    value: b("v1"),
                },
            },
            RequestFrame {
                header: RequestHeader::new(version, op::PUT, 32, ""),
                request: Request::Put {
                    key: b("hc2"),
                    expiration: EXP_DEFAULT,
                    value: b("v2"),
                },
            },
            RequestFrame {
                header: RequestHeader::new(version, op::GET, 33, ""),
                request: Request::Get { key: b("hc") },
            },
            RequestFrame {
                header: RequestHeader::new(version, op::PING, 34, ""),
                request: Request::Ping,
            },
        ];
        let mut bytes = BytesMut::new();
        for f in &frames {
            bytes.extend_from_slice(&encode(f));
        }
        let mut s = server.raw().await;
        let (out, closed) = raw_exchange(&mut s, &bytes, true, WAIT).await;
        assert!(
            closed,
            "v{version}: the server closes after the last answer"
        );
        let rs = decode_all(&out, &frames);
        let ids: Vec<u64> = rs.iter().map(|r| r.header.message_id).collect();
        assert_eq!(ids, vec![31, 32, 33, 34], "v{version}: {rs:?}");
        assert!(
            rs.iter().all(|r| r.header.status == status::SUCCESS),
            "{rs:?}"
        );
        assert!(matches!(&rs[2].body, ResponseBody::Value(v) if &v[..] == b"v1"));
    }
    assert_eq!(s0.get_str("hc2").await.as_deref(), Some("v2"));
    check_alive(&mut server, &mut s0).await;
}

/// Bytes that cannot start a request, between valid frames: each run is answered with 0x81
/// (message id 0) and skipped, the frames around it are served in order. A run that starts
/// with the request magic looks like a request and loses framing: the answers to the frames
/// before it still arrive, then the connection closes.
#[tokio::test]
async fn garbage_between_valid_frames() {
    let mut server = Server::start().await;
    let mut s0 = sentinel(&server).await;
    let put = RequestFrame {
        header: RequestHeader::new(41, op::PUT, 41, ""),
        request: Request::Put {
            key: b("between"),
            expiration: EXP_DEFAULT,
            value: b("ok"),
        },
    };
    let get = RequestFrame {
        header: RequestHeader::new(41, op::GET, 42, ""),
        request: Request::Get { key: b("between") },
    };
    let ping = RequestFrame {
        header: RequestHeader::new(30, op::PING, 43, ""),
        request: Request::Ping,
    };
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&encode(&put));
    bytes.extend_from_slice(&[0x00, 0xFF, 0x13, 0x37]);
    bytes.extend_from_slice(&encode(&get));
    bytes.extend_from_slice(&[0xA1, 0x01]);
    bytes.extend_from_slice(&encode(&ping));
    let mut s = server.raw().await;
    let (out, closed) = raw_exchange(&mut s, &bytes, false, WAIT).await;
    assert!(
        !closed,
        "garbage that cannot start a request keeps the connection"
    );
    let rs = decode_all(&out, &[put.clone(), get.clone(), ping.clone()]);
    // Answers may overtake a write that is still committing (pipelining); the GET reads it.
    let mut seen: Vec<(u64, u8)> = rs
        .iter()
        .map(|r| (r.header.message_id, r.header.status))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![
            (0, status::INVALID_MAGIC_OR_MESSAGE_ID),
            (0, status::INVALID_MAGIC_OR_MESSAGE_ID),
            (41, status::SUCCESS),
            (42, status::SUCCESS),
            (43, status::SUCCESS),
        ],
        "{rs:?}"
    );
    let got = rs.iter().find(|r| r.header.message_id == 42).unwrap();
    assert!(
        matches!(&got.body, ResponseBody::Value(v) if &v[..] == b"ok"),
        "{got:?}"
    );

    // Garbage that starts with the request magic: a bogus header (version 99).
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&encode(&get));
    bytes.extend_from_slice(&[0xA0, 0x07, 99, op::GET, 0, 0, 1, 1, b'k']);
    bytes.extend_from_slice(&encode(&ping));
    let mut s = server.raw().await;
    let (out, closed) = raw_exchange(&mut s, &bytes, false, WAIT).await;
    assert!(closed, "framing is lost: the connection closes");
    let rs = decode_all(&out, &[get, ping]);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(rs[0].header.message_id, 42);
    assert_eq!(rs[0].header.status, status::SUCCESS);
    assert_eq!(rs[1].header.message_id, 7);
    assert!(status::is_error(rs[1].header.status), "{rs:?}");
    check_alive(&mut server, &mut s0).await;
}
