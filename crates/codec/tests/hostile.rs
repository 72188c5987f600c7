//! Hostile input: decoding never panics, rejects what is wrong with the right error and the
//! message id / version known so far, and never allocates in proportion to announced sizes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use ferrod_codec::primitives::{put_bytes, put_string, put_vint, put_vlong};
use ferrod_codec::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio_util::codec::{Decoder, Encoder};

/// Records the largest single allocation, so that tests can check absurd counts and lengths are
/// not trusted.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// No test in this binary handles more than a few KiB of input; 16 MiB means an announced size
/// was trusted.
const ALLOC_LIMIT: usize = 16 << 20;

fn assert_no_huge_allocation() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < ALLOC_LIMIT, "an allocation of {largest} bytes");
}

/// Request header bytes (magic included) for `opcode` at `version`, message id `id`.
fn header(version: u8, opcode: u8, id: u64) -> BytesMut {
    let mut b = BytesMut::new();
    RequestHeader::new(version, opcode, id, "c").write(&mut b);
    b
}

fn parse_err(bytes: &[u8]) -> FrameError {
    parse_err_max(bytes, DEFAULT_MAX_FRAME_LEN)
}

fn parse_err_max(bytes: &[u8], max: usize) -> FrameError {
    match RequestFrame::parse(bytes, max) {
        Err(e) => {
            // The tokio codec says the same and consumes nothing.
            let mut src = BytesMut::from(bytes);
            match ServerCodec::new(max).decode(&mut src) {
                Err(CodecError::Frame(f)) => assert_eq!(f, e),
                other => panic!("codec disagrees: {other:?}"),
            }
            assert_eq!(src.len(), bytes.len());
            e
        }
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn is_incomplete(bytes: &[u8]) -> bool {
    matches!(RequestFrame::parse(bytes, DEFAULT_MAX_FRAME_LEN), Ok(None))
}

/// Decodes until error or "need more"; every decoded frame must re-encode to something that
/// decodes to the same frame.
fn drain_server(bytes: &[u8], max: usize) {
    let mut codec = ServerCodec::new(max);
    let mut src = BytesMut::from(bytes);
    loop {
        let before = src.len();
        match codec.decode(&mut src) {
            Ok(Some(f)) => {
                assert!(src.len() < before, "a frame consumed nothing");
                let again = encode_request(&f);
                let (g, n) = RequestFrame::parse(&again, usize::MAX).unwrap().unwrap();
                assert_eq!(g, f);
                assert_eq!(n, again.len());
            }
            Ok(None) => {
                assert_eq!(src.len(), before);
                break;
            }
            Err(_) => {
                assert_eq!(src.len(), before);
                break;
            }
        }
    }
}

fn drain_client(client: &mut ClientCodec, bytes: &[u8]) {
    let mut src = BytesMut::from(bytes);
    while let Ok(Some(_)) = client.decode(&mut src) {}
}

// Random bytes ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(Config { cases: 2048, ..Config::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        drain_server(&bytes, DEFAULT_MAX_FRAME_LEN);
        drain_server(&bytes, 64);
        let mut with_magic = vec![0xA0];
        with_magic.extend_from_slice(&bytes);
        drain_server(&with_magic, DEFAULT_MAX_FRAME_LEN);
        let mut resp = vec![0xA1];
        resp.extend_from_slice(&bytes);
        drain_client(&mut ClientCodec::new(), &resp);
        assert_no_huge_allocation();
    }

    /// A valid header for every version and op (unknown ones included) followed by garbage: this
    /// reaches every body decoder.
    #[test]
    fn garbage_after_valid_header_never_panics(
        v in version(), opcode in any::<u8>(), tail in vec(any::<u8>(), 0..128), id in any::<u64>(),
    ) {
        let mut b = header(v, opcode, id);
        b.extend_from_slice(&tail);
        drain_server(&b, DEFAULT_MAX_FRAME_LEN);
        if let Err(e) = RequestFrame::parse(&b, DEFAULT_MAX_FRAME_LEN) {
            // The header parsed: the error must echo its id and version.
            prop_assert_eq!(e.message_id, id);
            prop_assert_eq!(e.version, Some(v));
        }
        assert_no_huge_allocation();
    }

    /// Responses of every op and version, with garbage bodies, to a client of every intelligence.
    #[test]
    fn garbage_responses_never_panic(
        v in version(), opcode in proptest::sample::select(op::ALL_REQUESTS), intelligence in 0u8..5,
        status in any::<u8>(), tail in vec(any::<u8>(), 0..128), id in any::<u64>(), error in any::<bool>(),
    ) {
        let mut h = RequestHeader::new(v, opcode, id, "");
        h.intelligence = intelligence;
        let mut client = ClientCodec::new();
        client.encode(RequestFrame { header: h, request: Request::Ping }, &mut BytesMut::new()).unwrap();
        let mut b = BytesMut::new();
        b.put_u8(0xA1);
        put_vlong(&mut b, id);
        b.put_u8(if error { op::ERROR_RESPONSE } else { op::response_for(opcode) });
        b.put_u8(status);
        b.extend_from_slice(&tail);
        drain_client(&mut client, &b);
        assert_no_huge_allocation();
    }

    /// Mutations of valid frames: flipped, dropped or inserted bytes.
    #[test]
    fn mutated_frames_never_panic(
        f in request_frame(), at in any::<prop::sample::Index>(), byte in any::<u8>(), kind in 0..3,
    ) {
        let mut b = encode_request(&f).to_vec();
        let i = at.index(b.len());
        match kind {
            0 => b[i] ^= byte | 1,
            1 => { b.remove(i); }
            _ => b.insert(i, byte),
        }
        drain_server(&b, DEFAULT_MAX_FRAME_LEN);
        drain_server(&b, 128);
        assert_no_huge_allocation();
    }
}

// Header errors ------------------------------------------------------------------------------

#[test]
fn bad_magic() {
    let e = parse_err(&[0x42, 0x01, 40, 0x17]);
    assert_eq!(e.error, DecodeError::InvalidMagic(0x42));
    assert_eq!((e.message_id, e.version, e.consumed), (0, None, None));
    assert_eq!(e.error.status(), status::INVALID_MAGIC_OR_MESSAGE_ID);
    // A response magic sent to the server is no better.
    assert_eq!(parse_err(&[0xA1]).error, DecodeError::InvalidMagic(0xA1));
}

#[test]
fn unknown_versions() {
    for v in [0u8, 1, 10, 13, 19, 32, 39, 42, 50, 255] {
        let e = parse_err(&[0xA0, 0x2A, v, 0x17, 0x00]);
        assert_eq!(e.error, DecodeError::UnknownVersion(v), "v{v}");
        assert_eq!(e.message_id, 42);
        assert_eq!(e.version, Some(v));
        assert_eq!(e.error.status(), status::UNKNOWN_VERSION);
    }
    // Before the version byte arrives, nothing is known: incomplete.
    assert!(is_incomplete(&[0xA0, 0x2A]));
}

#[test]
fn unknown_operations() {
    let known: Vec<u8> = op::ALL_REQUESTS.to_vec();
    for &v in VERSIONS {
        for code in 0..=255u8 {
            if known.contains(&code) {
                continue;
            }
            let e = parse_err(&header(v, code, 77));
            assert_eq!(e.error, DecodeError::UnknownOperation(code));
            assert_eq!((e.message_id, e.version), (77, Some(v)));
            assert_eq!(e.error.status(), status::UNKNOWN_OPERATION);
        }
    }
}

#[test]
fn vint_longer_than_5_bytes() {
    // Cache name length in 6 bytes.
    let mut b = vec![0xA0, 0x09, 40, op::GET, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    let e = parse_err(&b);
    assert_eq!(e.error, DecodeError::VarIntTooLong(5));
    assert_eq!((e.message_id, e.version), (9, Some(40)));
    // Five bytes with the continuation bit set on the fifth are already too long.
    b.truncate(9);
    assert_eq!(parse_err(&b).error, DecodeError::VarIntTooLong(5));
    // Four continuation bytes: wait.
    b.truncate(8);
    assert!(is_incomplete(&b));
}

#[test]
fn vlong_longer_than_10_bytes() {
    let mut b = vec![0xA0];
    b.extend([0xFF; 10]);
    b.push(0x01);
    let e = parse_err(&b);
    assert_eq!(e.error, DecodeError::VarIntTooLong(10));
    assert_eq!((e.message_id, e.version), (0, None));
    // Exactly 10 bytes is fine (u64::MAX).
    let mut ok = BytesMut::new();
    RequestHeader::new(40, op::PING, u64::MAX, "").write(&mut ok);
    assert_eq!(
        &ok[1..11],
        [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
    );
    assert!(RequestFrame::parse(&ok, 1024).unwrap().is_some());
}

// Lengths -------------------------------------------------------------------------------------

#[test]
fn length_past_the_buffer_is_incomplete_and_consumes_nothing() {
    let mut b = header(40, op::GET, 1);
    put_vint(&mut b, 100);
    b.extend_from_slice(b"abc");
    assert!(is_incomplete(&b));
    let mut src = b.clone();
    assert!(ServerCodec::default().decode(&mut src).unwrap().is_none());
    assert_eq!(src, b);
}

#[test]
fn two_gib_length_is_rejected_immediately() {
    for (v, opcode) in [
        (40, op::GET),
        (20, op::PUT),
        (41, op::START_PUT_STREAM),
        (31, op::QUERY),
    ] {
        let mut b = header(v, opcode, 123);
        put_vint(&mut b, 0x8000_0000); // 2 GiB
        let e = parse_err(&b);
        assert!(
            matches!(
                e.error,
                DecodeError::TooLarge {
                    len: 0x8000_0000,
                    limit: DEFAULT_MAX_FRAME_LEN
                }
            ),
            "{e:?}"
        );
        assert_eq!((e.message_id, e.version), (123, Some(v)));
        assert_eq!(e.error.status(), status::PARSE_ERROR);
    }
    // In the header too (cache name).
    let mut b = BytesMut::new();
    b.extend_from_slice(&[0xA0, 0x05, 41, op::GET]);
    put_vint(&mut b, u32::MAX);
    let e = parse_err(&b);
    assert!(matches!(e.error, DecodeError::TooLarge { .. }));
    assert_eq!((e.message_id, e.version), (5, Some(41)));
    assert_no_huge_allocation();
}

#[test]
fn buffered_frame_past_the_limit_is_rejected_with_its_id() {
    // Each field fits the limit, the frame does not: the codec stops buffering.
    let mut b = header(40, op::PUT, 99);
    put_vint(&mut b, 1000);
    b.extend_from_slice(&[0u8; 1000]);
    b.put_u8(0x77);
    put_vint(&mut b, 1000);
    b.extend_from_slice(&[0u8; 100]);
    assert!(RequestFrame::parse(&b, 1024).unwrap().is_none());
    let mut src = b.clone();
    match ServerCodec::new(1024).decode(&mut src) {
        Err(CodecError::Frame(e)) => {
            assert!(matches!(e.error, DecodeError::TooLarge { .. }));
            assert_eq!((e.message_id, e.version), (99, Some(40)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn whole_frame_one_byte_past_the_limit_is_rejected_even_when_complete() {
    // The whole frame is in the buffer and each field fits: before the fix the codec accepted
    // any complete frame, so the frame limit only held for frames that arrived in pieces.
    let frame = |value_len: usize| {
        let mut b = header(41, op::PUT, 12);
        put_bytes(&mut b, b"k");
        b.put_u8(0x88);
        put_bytes(&mut b, &vec![7u8; value_len]);
        b
    };
    let base = frame(200).len() - 200;
    let at = frame(1024 - base);
    assert_eq!(at.len(), 1024);
    let mut src = at.clone();
    assert!(matches!(
        ServerCodec::new(1024).decode(&mut src),
        Ok(Some(_))
    ));
    assert!(src.is_empty());
    let over = frame(1025 - base);
    let mut src = over.clone();
    match ServerCodec::new(1024).decode(&mut src) {
        Err(CodecError::Frame(e)) => {
            assert!(matches!(e.error, DecodeError::TooLarge { .. }), "{e:?}");
            assert_eq!((e.message_id, e.version), (12, Some(41)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(src.len(), over.len(), "an error consumes nothing");
}

#[test]
fn put_stream_total_is_bounded() {
    let mut b = header(26, op::PUT_STREAM, 3);
    put_bytes(&mut b, b"k");
    b.put_u8(0x77);
    b.put_i64(0);
    for _ in 0..5 {
        put_bytes(&mut b, &[1u8; 300]);
    }
    put_vint(&mut b, 0);
    let e = parse_err_max(&b, 1024);
    assert!(matches!(e.error, DecodeError::TooLarge { .. }), "{e:?}");
    assert_eq!((e.message_id, e.version), (3, Some(26)));
    match RequestFrame::parse(&b, 4096).unwrap().unwrap().0.request {
        Request::PutStream { value, .. } => assert_eq!(value.len(), 1500),
        other => panic!("{other:?}"),
    }
}

// Counts -------------------------------------------------------------------------------------

/// Frames announcing up to 2^32-1 elements in a few bytes: no decoder may size a vector by the
/// count. Before the fix, e.g. a 30-million-entry PUT_ALL passed the frame-limit check and
/// reserved ~2 GB.
#[test]
fn absurd_counts_do_not_allocate() {
    let counts = [u32::MAX, 0x7FFF_FFFF, 30_000_000, 1_000_000];
    for n in counts {
        let mut cases: Vec<BytesMut> = Vec::new();
        let mut b = header(40, op::GET_ALL, 1);
        put_vint(&mut b, n);
        cases.push(b);
        let mut b = header(40, op::PUT_ALL, 1);
        b.put_u8(0x77);
        put_vint(&mut b, n);
        cases.push(b);
        let mut b = header(40, op::PREPARE_TX, 1);
        b.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]);
        put_vint(&mut b, n);
        cases.push(b);
        // Media type params and other params in the header.
        let mut b =
            BytesMut::from(&[0xA0, 0x01, 40, op::PING, 0x00, 0x00, 0x01, 0x00, 0x01, 0x0C][..]);
        put_vint(&mut b, n);
        cases.push(b);
        let mut b =
            BytesMut::from(&[0xA0, 0x01, 40, op::PING, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00][..]);
        put_vint(&mut b, n);
        cases.push(b);
        for b in cases {
            match RequestFrame::parse(&b, DEFAULT_MAX_FRAME_LEN) {
                Ok(None) => {}
                Err(e) => assert!(matches!(e.error, DecodeError::TooLarge { .. }), "{e:?}"),
                Ok(Some(f)) => panic!("{f:?}"),
            }
            // With a small limit the count alone is too large.
            let e = parse_err_max(&b, 4096);
            assert!(matches!(e.error, DecodeError::TooLarge { .. }), "{e:?}");
            assert_eq!(e.message_id, 1);
        }
    }
    assert_no_huge_allocation();
}

#[test]
fn absurd_counts_in_responses_do_not_allocate() {
    let n = 30_000_000u32;
    let bodies: Vec<(u8, u8, Vec<u8>)> = vec![
        (op::STATS, 40, vec![]),
        (op::GET_ALL, 40, vec![]),
        (op::AUTH_MECH_LIST, 31, vec![]),
        (op::COUNTER_GET_NAMES, 40, vec![]),
        (op::GET_MULTIMAP, 40, vec![]),
        (op::FETCH_TX_RECOVERY, 40, vec![]),
        (op::ITERATION_NEXT, 41, vec![0x00]), // finished segments, then the count
        (op::PING, 30, vec![0x00, 0x00, 41]), // media types, version, then the op count
    ];
    for (opcode, v, prefix) in bodies {
        let mut h = RequestHeader::new(v, opcode, 8, "");
        h.intelligence = 3;
        let mut client = ClientCodec::new();
        client
            .encode(
                RequestFrame {
                    header: h,
                    request: Request::Ping,
                },
                &mut BytesMut::new(),
            )
            .unwrap();
        let mut b = BytesMut::from(&[0xA1, 0x08, op::response_for(opcode), 0x00, 0x00][..]);
        b.extend_from_slice(&prefix);
        put_vint(&mut b, n);
        b.extend_from_slice(&[0x01; 16]);
        let mut src = b.clone();
        // Either "wait for the elements" or "they could never fit": never a huge allocation.
        match client.decode(&mut src) {
            Ok(None) => {}
            Err(CodecError::Frame(e)) => {
                assert!(matches!(e.error, DecodeError::TooLarge { .. }), "{e:?}");
                assert_eq!(e.message_id, 8);
            }
            other => panic!("0x{opcode:02X}: {other:?}"),
        }
        assert_eq!(src.len(), b.len());
    }
    // Topology: servers and segments.
    let mut h = RequestHeader::new(40, op::PUT, 8, "");
    h.intelligence = 3;
    let mut client = ClientCodec::new();
    client
        .encode(
            RequestFrame {
                header: h,
                request: Request::Ping,
            },
            &mut BytesMut::new(),
        )
        .unwrap();
    let mut b = BytesMut::from(&[0xA1, 0x08, 0x02, 0x00, 0x01, 0x01][..]);
    put_vint(&mut b, n);
    assert!(!matches!(client.decode(&mut b.clone()), Ok(Some(_))));
    // Hash version 0 segments take no bytes: bounded by a cap instead.
    let mut b = BytesMut::from(&[0xA1, 0x08, 0x02, 0x00, 0x01, 0x01, 0x00, 0x00][..]);
    put_vint(&mut b, n);
    let Some(Incoming::Response(r)) = client.decode(&mut b).unwrap() else {
        panic!()
    };
    let segments = r.header.topology.unwrap().hash.unwrap().segments.len();
    assert_eq!(segments, ferrod_codec::header::MAX_EMPTY_SEGMENTS);
    // Iteration: a huge projection count with one entry must not pre-allocate either.
    let mut h = RequestHeader::new(41, op::ITERATION_NEXT, 9, "");
    h.intelligence = 1;
    let mut client = ClientCodec::new();
    client
        .encode(
            RequestFrame {
                header: h,
                request: Request::Ping,
            },
            &mut BytesMut::new(),
        )
        .unwrap();
    let mut b = BytesMut::from(&[0xA1, 0x09, 0x34, 0x00, 0x00, 0x00, 0x01][..]);
    put_vint(&mut b, u32::MAX);
    b.extend_from_slice(&[0x00, 0x01, b'k', 0x00, 0x00]);
    assert!(client.decode(&mut b).unwrap().is_none());
    assert_no_huge_allocation();
}

#[test]
fn one_byte_param_counts_are_signed_in_the_grammar() {
    // EXEC with 0x80 params: Java reads -128 and fails; so do we, instead of misreading the
    // vInt 0x80 0x01 that a client sends for 128.
    let mut b = header(40, op::EXEC, 4);
    put_string(&mut b, "t");
    b.put_u8(0x80);
    b.put_u8(0x01);
    let e = parse_err(&b);
    assert!(matches!(e.error, DecodeError::Malformed(_)), "{e:?}");
    assert_eq!((e.message_id, e.version), (4, Some(40)));
    let mut b = header(40, op::ADD_CLIENT_LISTENER, 4);
    put_bytes(&mut b, b"id");
    b.put_u8(0);
    put_string(&mut b, "filter");
    b.put_u8(0xFF);
    assert!(matches!(parse_err(&b).error, DecodeError::Malformed(_)));
    // 127 is the most a client can send.
    let f = RequestFrame {
        header: RequestHeader::new(40, op::EXEC, 4, ""),
        request: Request::Exec {
            task: "t".into(),
            params: (0..127).map(|i| (i.to_string(), Bytes::new())).collect(),
        },
    };
    let bytes = encode_request(&f);
    assert_eq!(
        RequestFrame::parse(&bytes, 1 << 20).unwrap(),
        Some((f, bytes.len()))
    );
}

// Content errors -----------------------------------------------------------------------------

#[test]
fn invalid_utf8() {
    // Cache name.
    let mut b = BytesMut::from(&[0xA0, 0x06, 40, op::GET][..]);
    put_bytes(&mut b, &[0xFF, 0xFE]);
    let e = parse_err(&b);
    assert!(matches!(e.error, DecodeError::Malformed(_)));
    assert_eq!((e.message_id, e.version), (6, Some(40)));
    // Strings in bodies: AUTH mechanism, counter name, iteration id, optional filter name.
    for (opcode, body) in [
        (op::AUTH, vec![0x02, 0xC3, 0x28, 0x00]),
        (op::COUNTER_GET, vec![0x01, 0x80]),
        (op::ITERATION_NEXT, vec![0x03, 0xE2, 0x82, 0x28]),
        (op::ITERATION_START, vec![0x01, 0x02, 0xFF]),
    ] {
        let mut b = header(41, opcode, 6);
        b.extend_from_slice(&body);
        let e = parse_err(&b);
        assert!(
            matches!(e.error, DecodeError::Malformed(_)),
            "0x{opcode:02X}: {e:?}"
        );
        assert_eq!(e.message_id, 6);
    }
    // An error message that is not UTF-8, on the client side.
    let mut src = BytesMut::from(&[0xA1, 0x00, 0x50, 0x85, 0x00, 0x01, 0xFF][..]);
    assert!(ClientCodec::new().decode(&mut src).is_err());
}

#[test]
fn other_malformed_fields() {
    // Unknown time unit nibble.
    let mut b = header(40, op::PUT, 2);
    put_bytes(&mut b, b"k");
    b.put_u8(0x97);
    assert!(matches!(parse_err(&b).error, DecodeError::Malformed(_)));
    // Unknown MediaType definition.
    let b = [0xA0, 0x02, 40, op::PING, 0x00, 0x00, 0x01, 0x00, 0x03];
    let e = parse_err(&b);
    assert!(matches!(e.error, DecodeError::Malformed(_)));
    assert_eq!((e.message_id, e.version), (2, Some(40)));
    // Empty NEXT_PUT_STREAM chunk (the grammar requires chunkLen > 0).
    let mut b = header(41, op::NEXT_PUT_STREAM, 2);
    b.put_i32(1);
    b.put_u8(1);
    put_vint(&mut b, 0);
    assert!(matches!(parse_err(&b).error, DecodeError::Malformed(_)));
    // Unknown event marker.
    let mut src = BytesMut::from(&[0xA1, 0x00, 0x60, 0x00, 0x00, 0x00, 0x03, 0x00][..]);
    assert!(ClientCodec::new().decode(&mut src).is_err());
}

// Client side ------------------------------------------------------------------------------

#[test]
fn client_rejects_unknown_ids_and_wrong_ops() {
    let mut src = BytesMut::from(&[0xA1, 0x05, 0x04, 0x00, 0x00][..]);
    match ClientCodec::new().decode(&mut src) {
        Err(CodecError::Frame(e)) => assert_eq!(e.message_id, 5),
        other => panic!("{other:?}"),
    }
    let mut client = client_with(&[RequestFrame {
        header: RequestHeader::new(40, op::GET, 5, ""),
        request: Request::Get { key: Bytes::new() },
    }]);
    let mut src = BytesMut::from(&[0xA1, 0x05, 0x02, 0x00, 0x00][..]);
    assert!(client.decode(&mut src).is_err());
}

#[test]
fn ping_op_codes_above_a_byte_are_rejected() {
    let mut client = client_with(&[RequestFrame {
        header: RequestHeader::new(30, op::PING, 1, ""),
        request: Request::Ping,
    }]);
    let mut src = BytesMut::from(
        &[
            0xA1, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00, 30, 0x01, 0x01, 0x01,
        ][..],
    );
    assert!(client.decode(&mut src).is_err());
}

#[test]
fn client_codec_default_has_a_usable_frame_limit() {
    // `#[derive(Default)]` used to give a 0-byte limit: every non-empty value was "too large".
    let mut client = ClientCodec::default();
    client
        .encode(
            RequestFrame {
                header: RequestHeader::new(40, op::GET, 1, ""),
                request: Request::Get { key: Bytes::new() },
            },
            &mut BytesMut::new(),
        )
        .unwrap();
    let mut src = BytesMut::from(&[0xA1, 0x01, 0x04, 0x00, 0x00, 0x01, b'v'][..]);
    assert_eq!(
        client.decode(&mut src).unwrap(),
        Some(Incoming::Response(Response::new(
            1,
            op::GET,
            status::SUCCESS,
            ResponseBody::Value(Bytes::from_static(b"v"))
        )))
    );
}

#[test]
fn topology_for_a_topology_aware_client_is_read_without_hash_block() {
    // Used to be peeked as intelligence 3: the client waited forever for a hash block.
    let mut client = client_with(&[RequestFrame {
        header: {
            let mut h = RequestHeader::new(40, op::REMOVE, 1, "");
            h.intelligence = 2;
            h
        },
        request: Request::Remove { key: Bytes::new() },
    }]);
    let mut src = BytesMut::from(&[0xA1, 0x01, 0x0C, 0x00, 0x01, 0x07, 0x00][..]);
    let Some(Incoming::Response(r)) = client.decode(&mut src).unwrap() else {
        panic!()
    };
    assert_eq!(r.header.topology.unwrap().topology_id, 7);
    assert!(src.is_empty());
}

#[test]
fn object_storage_statuses_carry_the_same_bodies() {
    // 2.4-2.8: 0x06 = success, 0x07/0x08 = with previous value.
    for (status, opcode, body, expected) in [
        (
            0x06,
            op::GET,
            vec![0x01, b'v'],
            ResponseBody::Value(Bytes::from_static(b"v")),
        ),
        (
            0x07,
            op::PUT,
            vec![0x01, b'p'],
            ResponseBody::Previous(Some(PreviousValue {
                metadata: EntryMetadata::ABSENT,
                value: Bytes::from_static(b"p"),
            })),
        ),
        (
            0x08,
            op::PUT_IF_ABSENT,
            vec![0x00],
            ResponseBody::Previous(None),
        ),
    ] {
        let mut client = client_with(&[RequestFrame {
            header: RequestHeader::new(25, opcode, 1, ""),
            request: Request::Ping,
        }]);
        let mut src = BytesMut::from(&[0xA1, 0x01, op::response_for(opcode), status, 0x00][..]);
        src.extend_from_slice(&body);
        let Some(Incoming::Response(r)) = client.decode(&mut src).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, expected);
        assert!(src.is_empty(), "0x{status:02X} left {} bytes", src.len());
    }
}

#[test]
fn iteration_entries_can_be_one_byte() {
    // 2.4, projection count 0: each entry is just its key. 100 one-byte entries must decode,
    // not be taken for an incomplete frame.
    let mut h = RequestHeader::new(24, op::ITERATION_NEXT, 1, "");
    h.intelligence = 1;
    let mut client = ClientCodec::new();
    client
        .encode(
            RequestFrame {
                header: h,
                request: Request::Ping,
            },
            &mut BytesMut::new(),
        )
        .unwrap();
    let mut src = BytesMut::from(&[0xA1, 0x01, 0x34, 0x00, 0x00, 0x00, 100, 0x00][..]);
    src.extend_from_slice(&[0x00; 100]);
    let Some(Incoming::Response(r)) = client.decode(&mut src).unwrap() else {
        panic!()
    };
    let ResponseBody::IterationBatch { entries, .. } = r.body else {
        panic!()
    };
    assert_eq!(entries.len(), 100);
}
