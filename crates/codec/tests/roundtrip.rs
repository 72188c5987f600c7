//! Encode -> decode round trips of every frame type, at every protocol version where it exists.

mod common;

use bytes::BytesMut;
use common::*;
use ferrod_codec::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio_util::codec::{Decoder, Encoder};

fn check_request(frame: &RequestFrame) -> Result<(), TestCaseError> {
    let bytes = encode_request(frame);
    let (decoded, len) = RequestFrame::parse(&bytes, DEFAULT_MAX_FRAME_LEN)
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
        .ok_or_else(|| TestCaseError::fail("incomplete"))?;
    prop_assert_eq!(&decoded, frame);
    prop_assert_eq!(len, bytes.len(), "must consume exactly the frame");
    // Same through the tokio codec.
    let mut src = bytes.clone();
    let decoded = ServerCodec::default().decode(&mut src).unwrap();
    prop_assert_eq!(decoded.as_ref(), Some(frame));
    prop_assert!(src.is_empty());
    Ok(())
}

fn check_response(frame: &RequestFrame, response: &Response) -> Result<(), TestCaseError> {
    let v = frame.header.version;
    let mut bytes = BytesMut::new();
    ServerCodec::default()
        .encode(
            Outbound::Response {
                response: response.clone(),
                version: v,
            },
            &mut bytes,
        )
        .unwrap();
    let len = bytes.len();
    let mut client = client_with(std::slice::from_ref(frame));
    let decoded = client
        .decode(&mut bytes)
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let expected = expected_response(response.clone(), v);
    prop_assert_eq!(decoded, Some(Incoming::Response(expected)));
    prop_assert!(bytes.is_empty(), "{} of {} bytes left", bytes.len(), len);
    prop_assert_eq!(client.pending(), 0);
    Ok(())
}

/// Every op at every version where it exists, so that no (op, version) pair is left to chance.
#[test]
fn every_request_op_at_every_version_round_trips() {
    let mut pairs = 0;
    for &v in VERSIONS {
        for o in ops_at(v) {
            let mut runner = TestRunner::new(Config {
                cases: 24,
                failure_persistence: None,
                ..Config::default()
            });
            runner
                .run(&frame_for(o, v), |f| check_request(&f))
                .unwrap_or_else(|e| panic!("op 0x{o:02X} v{v}: {e}"));
            pairs += 1;
        }
    }
    // 64 ops exist at 4.1; fewer before.
    assert!(pairs > 500, "{pairs}");
}

#[test]
fn every_response_at_every_version_round_trips() {
    for &v in VERSIONS {
        for o in ops_at(v) {
            let mut runner = TestRunner::new(Config {
                cases: 24,
                failure_persistence: None,
                ..Config::default()
            });
            let strat = frame_for(o, v).prop_flat_map(|f| (Just(f.clone()), response_to(&f)));
            runner
                .run(&strat, |(f, r)| check_response(&f, &r))
                .unwrap_or_else(|e| panic!("op 0x{o:02X} v{v}: {e}"));
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn request_frames_round_trip(frame in request_frame()) {
        check_request(&frame)?;
    }

    #[test]
    fn responses_round_trip((frame, response) in request_frame().prop_flat_map(|f| (Just(f.clone()), response_to(&f)))) {
        check_response(&frame, &response)?;
    }

    #[test]
    fn cache_events_round_trip(event in cache_event(), intelligence in 1u8..=3) {
        let mut bytes = BytesMut::new();
        ServerCodec::default().encode(Outbound::Event(event.clone()), &mut bytes).unwrap();
        // A client that sent a request first (its intelligence must not matter for events).
        let mut client = ClientCodec::new();
        let mut h = RequestHeader::new(40, op::PING, 77, "");
        h.intelligence = intelligence;
        client.encode(RequestFrame { header: h, request: Request::Ping }, &mut BytesMut::new()).unwrap();
        let decoded = client.decode(&mut bytes).unwrap();
        prop_assert_eq!(decoded, Some(Incoming::Event(event)));
        prop_assert!(bytes.is_empty());
        prop_assert_eq!(client.pending(), 1, "an event answers no request");
    }

    #[test]
    fn counter_events_round_trip(event in counter_event()) {
        let mut bytes = BytesMut::new();
        ServerCodec::default().encode(Outbound::CounterEvent(event.clone()), &mut bytes).unwrap();
        let decoded = ClientCodec::new().decode(&mut bytes).unwrap();
        prop_assert_eq!(decoded, Some(Incoming::CounterEvent(event)));
        prop_assert!(bytes.is_empty());
    }

    #[test]
    fn media_types_round_trip(mt in media_type()) {
        let mut b = BytesMut::new();
        mt.write(&mut b);
        let mut r = ferrod_codec::primitives::Reader::new(&b, 1 << 20);
        prop_assert_eq!(MediaType::read(&mut r).unwrap(), mt);
        prop_assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn expirations_round_trip(v in version(), seed in any::<u64>()) {
        let mut runner = TestRunner::new_with_rng(Config::default(), proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha, &[seed as u8; 32]));
        let e = expiration(v).new_tree(&mut runner).unwrap().current();
        let mut b = BytesMut::new();
        e.write(&mut b, v);
        let mut r = ferrod_codec::primitives::Reader::new(&b, 1 << 20);
        prop_assert_eq!(Expiration::read(&mut r, v).unwrap(), e);
        prop_assert_eq!(r.remaining(), 0);
    }
}
