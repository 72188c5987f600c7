//! Byte-exact checks of every concrete example in hotrod-protocol.md.

use bytes::{Bytes, BytesMut};
use ferrod_codec::header::{HashTopology, Topology};
use ferrod_codec::primitives::*;
use ferrod_codec::request::{CounterConfig, Factory, Xid};
use ferrod_codec::*;
use tokio_util::codec::{Decoder, Encoder};

fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b.to_vec()
}

fn response_bytes(r: &Response, version: u8) -> Vec<u8> {
    enc(|b| r.write(b, version))
}

/// Decodes `bytes` as the response to a request `opcode` sent at `version` with `intelligence`.
fn decode_response(bytes: &[u8], opcode: u8, version: u8, intelligence: u8) -> Response {
    let mut c = ClientCodec::new();
    let mut h = RequestHeader::new(version, opcode, 0, "");
    h.intelligence = intelligence;
    // Only the header matters to the client codec: it remembers op, version and intelligence.
    let request = Request::Ping;
    // The id must match what the response echoes: take it from the bytes.
    let mut r = Reader::new(&bytes[1..], 64);
    h.message_id = r.vlong().unwrap();
    c.encode(RequestFrame { header: h, request }, &mut BytesMut::new())
        .unwrap();
    let mut src = BytesMut::from(bytes);
    let out = c.decode(&mut src).unwrap().expect("complete");
    assert!(src.is_empty(), "{} bytes left", src.len());
    match out {
        Incoming::Response(r) => r,
        other => panic!("{other:?}"),
    }
}

// §1 -------------------------------------------------------------------------------------------

#[test]
fn primitive_examples() {
    for (v, bytes) in [
        (0u32, &[0x00][..]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (300, &[0xAC, 0x02]),
        (-1i32 as u32, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
    ] {
        assert_eq!(enc(|b| put_vint(b, v)), bytes, "vInt {v}");
        assert_eq!(Reader::new(bytes, 16).vint().unwrap(), v);
    }
    let minus_one = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    assert_eq!(enc(|b| put_vlong(b, -1i64 as u64)), minus_one);
    assert_eq!(Reader::new(&minus_one, 16).vlong().unwrap(), u64::MAX);
    assert_eq!(enc(|b| put_signed_vint(b, -1)), [0x01]);
    assert_eq!(enc(|b| put_signed_vint(b, 3)), [0x06]);
    // Optional array: -1 (byte 0x01) = absent.
    assert_eq!(enc(|b| put_optional_bytes(b, None)), [0x01]);
    assert_eq!(Reader::new(&[0x01], 16).optional_bytes().unwrap(), None);
    // Fixed-width integers are big-endian.
    assert_eq!(
        Reader::new(&[0, 0, 0, 0, 0, 0, 1, 2], 16).i64().unwrap(),
        0x0102
    );
    // bool: any non-zero is true.
    assert!(Reader::new(&[0x7F], 16).bool().unwrap());
}

// §2 -------------------------------------------------------------------------------------------

#[test]
fn java16_first_ping_frame() {
    let bytes = [
        0xA0, 0x00, 0x1F, 0x17, 0x00, 0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00, 0x00,
    ];
    let mut src = BytesMut::from(&bytes[..]);
    let f = ServerCodec::default().decode(&mut src).unwrap().unwrap();
    assert!(src.is_empty());
    let mut expected = RequestHeader::new(31, op::PING, 0, "");
    expected.intelligence = 3;
    expected.topology_id = u32::MAX;
    assert_eq!(
        f,
        RequestFrame {
            header: expected,
            request: Request::Ping
        }
    );
    assert_eq!(enc(|b| f.write(b)), bytes);
}

#[test]
fn protostream_media_type_is_01_0c_00() {
    let mt = MediaType::from_name("application/x-protostream");
    assert_eq!(enc(|b| mt.write(b)), [0x01, 0x0C, 0x00]);
    assert_eq!(enc(|b| MediaType::Unspecified.write(b)), [0x00]);
    // js-client default: text/plain = 13.
    assert_eq!(
        enc(|b| MediaType::from_name("text/plain").write(b)),
        [0x01, 0x0D, 0x00]
    );
}

#[test]
fn v40_header_has_other_params_and_v31_does_not() {
    let h31 = RequestHeader::new(31, op::GET, 5, "c");
    let h40 = RequestHeader::new(40, op::GET, 5, "c");
    //            magic id  ver op   name      flags intel topo key val
    let base = [
        0xA0, 0x05, 0, 0x03, 0x01, b'c', 0x00, 0x01, 0x00, 0x00, 0x00,
    ];
    let mut b31 = base;
    b31[2] = 31;
    assert_eq!(enc(|b| h31.write(b)), b31);
    let mut b40 = base.to_vec();
    b40[2] = 40;
    b40.push(0x00); // otherParams count
    assert_eq!(enc(|b| h40.write(b)), b40);
    // 2.7: no media types at all.
    let h27 = RequestHeader::new(27, op::GET, 5, "c");
    assert_eq!(
        enc(|b| h27.write(b)),
        &b31[..9]
            .iter()
            .map(|&x| if x == 31 { 27 } else { x })
            .collect::<Vec<_>>()[..]
    );
}

// §6 -------------------------------------------------------------------------------------------

#[test]
fn expiration_examples() {
    let put120 = Expiration::Units {
        lifespan: Duration::Amount(120, TimeUnit::Seconds),
        max_idle: Duration::Default,
    };
    assert_eq!(enc(|b| put120.write(b, 40)), [0x07, 0x78]);
    assert_eq!(enc(|b| Expiration::DEFAULT.write(b, 41)), [0x77]);
    let infinite = Expiration::Units {
        lifespan: Duration::Infinite,
        max_idle: Duration::Infinite,
    };
    assert_eq!(enc(|b| infinite.write(b, 30)), [0x88]);
    // Both amounts present: lifespan first.
    let both = Expiration::Units {
        lifespan: Duration::Amount(1, TimeUnit::Minutes),
        max_idle: Duration::Amount(2, TimeUnit::Days),
    };
    assert_eq!(enc(|b| both.write(b, 22)), [0x46, 0x01, 0x02]);
    // 2.0/2.1: two vInts of seconds.
    let secs = Expiration::Seconds {
        lifespan: 120,
        max_idle: -1,
    };
    assert_eq!(
        enc(|b| secs.write(b, 21)),
        [0x78, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]
    );
    // The whole put(k, v, 120, SECONDS) frame of a 4.0 client.
    let f = RequestFrame {
        header: RequestHeader::new(40, op::PUT, 9, "work"),
        request: Request::Put {
            key: Bytes::from_static(b"k"),
            expiration: put120,
            value: Bytes::from_static(b"v"),
        },
    };
    let bytes = enc(|b| f.write(b));
    assert_eq!(
        bytes,
        [
            0xA0, 0x09, 40, 0x01, 0x04, b'w', b'o', b'r', b'k', 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
            0x01, b'k', 0x07, 0x78, 0x01, b'v'
        ]
    );
    assert_eq!(
        RequestFrame::parse(&bytes, 1024).unwrap(),
        Some((f, bytes.len()))
    );
}

// §4, §7 ---------------------------------------------------------------------------------------

#[test]
fn v4_no_previous_entry_is_03_ff8_00() {
    let r = Response::new(
        7,
        op::PUT,
        status::SUCCESS_WITH_PREVIOUS,
        ResponseBody::Previous(None),
    );
    let bytes = response_bytes(&r, 40);
    assert_eq!(
        bytes,
        [
            0xA1, 0x07, 0x02, 0x03, 0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x00
        ]
    );
    assert_eq!(decode_response(&bytes, op::PUT, 40, 3), r);
    // 3.x: just an empty value.
    let bytes = response_bytes(&r, 31);
    assert_eq!(bytes, [0xA1, 0x07, 0x02, 0x03, 0x00, 0x00]);
    assert_eq!(decode_response(&bytes, op::PUT, 31, 3), r);
}

#[test]
fn v4_previous_value_carries_metadata_block() {
    let m = EntryMetadata {
        lifespan: Some((1, 120)),
        max_idle: None,
        version: 5,
    };
    let r = Response::new(
        1,
        op::REMOVE,
        status::SUCCESS_WITH_PREVIOUS,
        ResponseBody::Previous(Some(PreviousValue {
            metadata: m.clone(),
            value: Bytes::from_static(b"x"),
        })),
    );
    let bytes = response_bytes(&r, 41);
    #[rustfmt::skip]
    assert_eq!(bytes, [
        0xA1, 0x01, 0x0C, 0x03, 0x00,
        0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0x78, // flags: only INFINITE_MAXIDLE; created; lifespan 120
        0, 0, 0, 0, 0, 0, 0, 5,            // version
        0x01, b'x',
    ]);
    assert_eq!(decode_response(&bytes, op::REMOVE, 41, 1), r);
}

#[test]
fn get_stays_plain_in_4x() {
    let r = Response::new(
        3,
        op::GET,
        status::SUCCESS,
        ResponseBody::Value(Bytes::from_static(b"ab")),
    );
    let bytes = response_bytes(&r, 41);
    assert_eq!(bytes, [0xA1, 0x03, 0x04, 0x00, 0x00, 0x02, b'a', b'b']);
    assert_eq!(decode_response(&bytes, op::GET, 41, 3), r);
}

#[test]
fn error_response_layout() {
    let r = Response::error(0x2A, status::SERVER_ERROR, "boom");
    let bytes = response_bytes(&r, 40);
    assert_eq!(
        bytes,
        [0xA1, 0x2A, 0x50, 0x85, 0x00, 0x04, b'b', b'o', b'o', b'm']
    );
    // Whatever the request op and version, an error decodes as such.
    assert_eq!(decode_response(&bytes, op::GET, 20, 2), r);
}

#[test]
fn cache_not_found_error() {
    let msg = "org.infinispan.server.hotrod.CacheNotFoundException: Cache with name 'X' not found amongst the configured caches";
    let r = Response::error(4, status::PARSE_ERROR, msg);
    let bytes = response_bytes(&r, 31);
    assert_eq!(&bytes[..6], [0xA1, 0x04, 0x50, 0x84, 0x00, msg.len() as u8]);
    assert_eq!(&bytes[6..], msg.as_bytes());
    let decoded = decode_response(&bytes, op::PING, 31, 3);
    match decoded.body {
        ResponseBody::Error(m) => assert!(m.contains("CacheNotFoundException")),
        other => panic!("{other:?}"),
    }
    assert_eq!(decoded.header.status, 0x84);
}

#[test]
fn error_for_unparseable_header_has_id_0_and_decodes_without_pending_request() {
    let r = Response::error(0, status::INVALID_MAGIC_OR_MESSAGE_ID, "bad magic");
    let mut src = BytesMut::from(&response_bytes(&r, 41)[..]);
    assert_eq!(
        ClientCodec::new().decode(&mut src).unwrap(),
        Some(Incoming::Response(r))
    );
}

#[test]
fn status_codes() {
    assert_eq!(status::NODE_SUSPECTED, 0x87);
    assert_eq!(status::ILLEGAL_LIFECYCLE_STATE, 0x88);
    assert_eq!(DecodeError::InvalidMagic(0).status(), 0x81);
    assert_eq!(DecodeError::UnknownOperation(0).status(), 0x82);
    assert_eq!(DecodeError::UnknownVersion(0).status(), 0x83);
    assert_eq!(DecodeError::malformed("x").status(), 0x84);
    assert_eq!(DecodeError::VarIntTooLong(5).status(), 0x84);
}

// §8 -------------------------------------------------------------------------------------------

#[test]
fn response_op_codes() {
    assert_eq!(op::response_for(op::COUNTER_IS_DEFINED), 0x51);
    assert_eq!(op::response_for(op::COUNTER_GET_AND_SET), 0x80);
    for req in 0xE4..=0xEFu8 {
        assert_eq!(op::response_for(req), req - 1);
    }
    assert_eq!(op::response_for(op::START_PUT_STREAM), 0xEE);
    assert_eq!(op::response_for(op::END_GET_STREAM), 0xE4);
    let specials = [op::COUNTER_IS_DEFINED, op::COUNTER_GET_AND_SET];
    for &req in op::ALL_REQUESTS {
        let resp = op::response_for(req);
        if !specials.contains(&req) && !(0xE4..=0xEF).contains(&req) {
            assert_eq!(resp, req + 1, "0x{req:02X}");
        }
        // No response op collides with errors, events or another request's response.
        assert_ne!(resp, op::ERROR_RESPONSE);
        assert!(!(0x60..=0x63).contains(&resp) && resp != op::COUNTER_EVENT);
        assert_ne!(op::name(req), "UNKNOWN");
    }
    let mut all: Vec<u8> = op::ALL_REQUESTS
        .iter()
        .map(|&r| op::response_for(r))
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), op::ALL_REQUESTS.len());
    assert_eq!(op::ALL_REQUESTS.len(), 64);
}

// §9.1 PING tails ------------------------------------------------------------------------------

fn ping_response() -> Response {
    Response::new(
        1,
        op::PING,
        status::SUCCESS,
        ResponseBody::Ping(PingInfo {
            key_type: MediaType::from_name("application/x-protostream"),
            value_type: MediaType::from_name("application/unknown"),
            server_version: 41,
            operations: vec![op::PUT, op::START_PUT_STREAM],
        }),
    )
}

#[test]
fn ping_response_tail_by_version() {
    let r = ping_response();
    let head = [0xA1, 0x01, 0x18, 0x00, 0x00];
    // 2.8: header only.
    assert_eq!(response_bytes(&r, 28), head);
    // 2.9: + key and value media types.
    let media = [0x01, 0x0C, 0x00, 0x01, 0x11, 0x00];
    assert_eq!(response_bytes(&r, 29), [&head[..], &media].concat());
    // 3.0+: + server version and op list as shorts (0xEF written 00 EF).
    let tail = [41, 0x02, 0x00, 0x01, 0x00, 0xEF];
    assert_eq!(response_bytes(&r, 30), [&head[..], &media, &tail].concat());
    assert_eq!(response_bytes(&r, 41), [&head[..], &media, &tail].concat());
    for v in [28, 29, 30, 41] {
        let decoded = decode_response(&response_bytes(&r, v), op::PING, v, 3);
        let ResponseBody::Ping(p) = decoded.body else {
            panic!()
        };
        assert_eq!(p.server_version, if v >= 30 { 41 } else { 0 });
        assert_eq!(p.key_type != MediaType::Unspecified, v >= 29);
    }
}

// §10.2, §15.1 events ------------------------------------------------------------------------

#[test]
fn event_layouts() {
    let removed = CacheEvent {
        message_id: 0,
        kind: EventKind::Removed,
        listener_id: Bytes::from_static(&[7]),
        retried: true,
        payload: EventPayload::Plain {
            key: Bytes::from_static(b"k"),
            version: None,
        },
    };
    let bytes = enc(|b| removed.write(b));
    assert_eq!(
        bytes,
        [0xA1, 0x00, 0x62, 0x00, 0x00, 0x01, 7, 0x00, 0x01, 0x01, b'k']
    );
    let modified = CacheEvent {
        message_id: 12,
        kind: EventKind::Modified,
        listener_id: Bytes::from_static(&[7]),
        retried: false,
        payload: EventPayload::Plain {
            key: Bytes::from_static(b"k"),
            version: Some(0x0102),
        },
    };
    // Key, then version (every current decoder's order).
    assert_eq!(
        enc(|b| modified.write(b)),
        [0xA1, 0x0C, 0x61, 0x00, 0x00, 0x01, 7, 0x00, 0x00, 0x01, b'k', 0, 0, 0, 0, 0, 0, 1, 2]
    );
    let raw = CacheEvent {
        message_id: 0,
        kind: EventKind::Expired,
        listener_id: Bytes::new(),
        retried: false,
        payload: EventPayload::Custom {
            raw: true,
            data: Bytes::from_static(b"d"),
        },
    };
    assert_eq!(
        enc(|b| raw.write(b)),
        [0xA1, 0x00, 0x63, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, b'd']
    );
    let counter = CounterEvent {
        counter_name: "c".into(),
        listener_id: Bytes::from_static(&[9]),
        state: 0b0100,
        old_value: 1,
        new_value: 2,
    };
    assert_eq!(
        enc(|b| counter.write(b)),
        [
            0xA1, 0x00, 0x66, 0x00, 0x00, 0x01, b'c', 0x01, 9, 0x04, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
            0, 0, 0, 0, 0, 2
        ]
    );
    for e in [removed, modified, raw] {
        let mut src = BytesMut::from(&enc(|b| e.write(b))[..]);
        assert_eq!(
            ClientCodec::new().decode(&mut src).unwrap(),
            Some(Incoming::Event(e))
        );
    }
}

// §10.1 listener request ---------------------------------------------------------------------

#[test]
fn add_client_listener_body_by_version() {
    let req = Request::AddClientListener {
        listener_id: Bytes::from_static(&[1]),
        include_current_state: false,
        filter: None,
        converter: Some(Factory {
            name: "c".into(),
            params: vec![Bytes::from_static(b"p")],
        }),
        use_raw_data: true,
        interests: 0x07,
    };
    let body = |v| enc(|b| req.write(b, v));
    let common = [0x01, 1, 0x00, 0x00, 0x01, b'c', 0x01, 0x01, b'p'];
    assert_eq!(body(20), common);
    assert_eq!(body(21), [&common[..], &[0x01]].concat());
    assert_eq!(body(26), [&common[..], &[0x01, 0x07]].concat());
}

// §11 iteration --------------------------------------------------------------------------------

#[test]
fn iteration_start_layout() {
    let req = Request::IterationStart {
        segments: None,
        filter_converter: None,
        batch_size: 100,
        include_metadata: true,
    };
    assert_eq!(enc(|b| req.write(b, 23)), [0x01, 0x01, 0x64]);
    assert_eq!(enc(|b| req.write(b, 24)), [0x01, 0x01, 0x64, 0x01]);
}

#[test]
fn iteration_next_projection_count_only_with_entries() {
    let empty = Response::new(
        1,
        op::ITERATION_NEXT,
        status::SUCCESS,
        ResponseBody::IterationBatch {
            finished_segments: Bytes::from_static(&[0xFF]),
            projection_count: 1,
            entries: vec![],
        },
    );
    let head = [0xA1, 0x01, 0x34, 0x00, 0x00];
    for v in [23, 24, 25, 41] {
        let bytes = response_bytes(&empty, v);
        assert_eq!(bytes, [&head[..], &[0x01, 0xFF, 0x00]].concat(), "v{v}");
        assert_eq!(decode_response(&bytes, op::ITERATION_NEXT, v, 1), empty);
    }
    let one = |metadata| {
        Response::new(
            1,
            op::ITERATION_NEXT,
            status::SUCCESS,
            ResponseBody::IterationBatch {
                finished_segments: Bytes::new(),
                projection_count: 1,
                entries: vec![IterationEntry {
                    metadata,
                    key: Bytes::from_static(b"k"),
                    values: vec![Bytes::from_static(b"v")],
                }],
            },
        )
    };
    let r = one(None);
    // 2.3: no projection count, no metadata flag.
    assert_eq!(
        response_bytes(&r, 23),
        [&head[..], &[0x00, 0x01, 0x01, b'k', 0x01, b'v']].concat()
    );
    // 2.4: projection count.
    assert_eq!(
        response_bytes(&r, 24),
        [&head[..], &[0x00, 0x01, 0x01, 0x01, b'k', 0x01, b'v']].concat()
    );
    // 2.5: per-entry metadata flag.
    assert_eq!(
        response_bytes(&r, 25),
        [&head[..], &[0x00, 0x01, 0x01, 0x00, 0x01, b'k', 0x01, b'v']].concat()
    );
    let m = EntryMetadata::ABSENT;
    let r = one(Some(m));
    #[rustfmt::skip]
    assert_eq!(response_bytes(&r, 40), [&head[..], &[
        0x00, 0x01, 0x01, 0x01,
        0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0x01, b'k', 0x01, b'v',
    ]].concat());
    for v in [23, 24, 25, 40] {
        let r = if v >= 25 {
            one(Some(EntryMetadata::ABSENT))
        } else {
            one(None)
        };
        assert_eq!(
            decode_response(&response_bytes(&r, v), op::ITERATION_NEXT, v, 1),
            r
        );
    }
}

// §15 counters, transactions ----------------------------------------------------------------

#[test]
fn counter_config_and_xid_layouts() {
    let weak = CounterConfig {
        flags: 0x05,
        concurrency_level: Some(16),
        bounds: None,
        initial_value: 3,
    };
    assert_eq!(enc(|b| weak.write(b)), [0x05, 0x10, 0, 0, 0, 0, 0, 0, 0, 3]);
    let bounded = CounterConfig {
        flags: 0x02,
        concurrency_level: None,
        bounds: Some((-1, 1)),
        initial_value: 0,
    };
    assert_eq!(
        enc(|b| bounded.write(b)),
        [
            0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
            0, 0, 0, 0, 0
        ]
    );
    let commit = Request::CommitTx {
        xid: Xid {
            format_id: -1,
            global_transaction_id: Bytes::from_static(&[0xAA]),
            branch_qualifier: Bytes::from_static(&[0xBB, 0xCC]),
        },
    };
    assert_eq!(
        enc(|b| commit.write(b, 27)),
        [0x01, 0x01, 0xAA, 0x02, 0xBB, 0xCC]
    );
    // XA return codes are 4-byte ints.
    let r = Response::new(1, op::PREPARE_TX, status::SUCCESS, ResponseBody::XaCode(3));
    assert_eq!(
        response_bytes(&r, 27),
        [0xA1, 0x01, 0x3C, 0x00, 0x00, 0, 0, 0, 3]
    );
}

// §3.1 topology ------------------------------------------------------------------------------

#[test]
fn topology_blocks_by_intelligence() {
    let t2 = Topology {
        topology_id: 5,
        servers: vec![("h".into(), 11222)],
        hash: None,
    };
    let mut r = Response::new(1, op::PUT, status::SUCCESS, ResponseBody::Empty);
    r.header.topology = Some(t2);
    let bytes = response_bytes(&r, 40);
    assert_eq!(
        bytes,
        [0xA1, 0x01, 0x02, 0x00, 0x01, 0x05, 0x01, 0x01, b'h', 0x2B, 0xD6]
    );
    assert_eq!(decode_response(&bytes, op::PUT, 40, 2), r);
    let t3 = Topology {
        topology_id: 5,
        servers: vec![("h".into(), 11222)],
        hash: Some(HashTopology {
            hash_function_version: 3,
            segments: vec![vec![0], vec![0]],
        }),
    };
    r.header.topology = Some(t3);
    let bytes = response_bytes(&r, 40);
    assert_eq!(&bytes[11..], [0x03, 0x02, 0x01, 0x00, 0x01, 0x00]);
    assert_eq!(decode_response(&bytes, op::PUT, 40, 3), r);
}
