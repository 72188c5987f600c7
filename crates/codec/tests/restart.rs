//! Restartability: a stream of frames decodes to the same sequence however it is split, and an
//! incomplete frame consumes nothing.

mod common;

use bytes::BytesMut;
use common::*;
use ferrod_codec::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio_util::codec::{Decoder, Encoder};

/// Feeds `stream` to `codec` in the given pieces, decoding as much as possible after each piece.
/// Checks that a `None` never consumes anything.
fn feed<D>(codec: &mut D, stream: &[u8], cuts: &[usize]) -> Vec<D::Item>
where
    D: Decoder,
    D::Error: std::fmt::Debug,
{
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let end = end.clamp(start, stream.len());
        src.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            let before = src.len();
            match codec.decode(&mut src).expect("decode error") {
                Some(item) => out.push(item),
                None => {
                    assert_eq!(src.len(), before, "an incomplete frame consumed bytes");
                    break;
                }
            }
        }
    }
    assert!(src.is_empty(), "{} bytes never decoded", src.len());
    out
}

/// Frames with distinct message ids (0, 1, 2...), so responses can be matched.
fn frames(max: usize, small: bool) -> impl Strategy<Value = Vec<RequestFrame>> {
    vec(request_frame(), 1..max).prop_map(move |mut fs| {
        for (i, f) in fs.iter_mut().enumerate() {
            f.header.message_id = i as u64;
        }
        if small {
            fs.retain(|f| encode_request(f).len() <= 400);
        }
        fs
    })
}

fn request_stream(fs: &[RequestFrame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in fs {
        f.write(&mut b);
    }
    b.to_vec()
}

/// Responses to `fs` (with events interleaved), and what the client must decode them to.
fn responses(
    max: usize,
    small: bool,
) -> impl Strategy<Value = (Vec<RequestFrame>, Vec<u8>, Vec<Incoming>)> {
    frames(max, small)
        .prop_flat_map(|fs| {
            let rs: Vec<_> = fs.iter().map(response_to).collect();
            let events = vec(
                prop_oneof![
                    cache_event().prop_map(Outbound::Event),
                    counter_event().prop_map(Outbound::CounterEvent),
                ],
                0..3,
            );
            (Just(fs), rs, events)
        })
        .prop_map(|(fs, rs, events)| {
            let mut codec = ServerCodec::default();
            let mut bytes = BytesMut::new();
            let mut expected = Vec::new();
            let mut events = events.into_iter();
            for (f, r) in fs.iter().zip(rs) {
                if let Some(e) = events.next() {
                    expected.push(match &e {
                        Outbound::Event(e) => Incoming::Event(e.clone()),
                        Outbound::CounterEvent(e) => Incoming::CounterEvent(e.clone()),
                        Outbound::Response { .. } => unreachable!(),
                    });
                    codec.encode(e, &mut bytes).unwrap();
                }
                let v = f.header.version;
                expected.push(Incoming::Response(expected_response(r.clone(), v)));
                codec
                    .encode(
                        Outbound::Response {
                            response: r,
                            version: v,
                        },
                        &mut bytes,
                    )
                    .unwrap();
            }
            (fs, bytes.to_vec(), expected)
        })
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]

    /// Every split point of a stream of small frames, plus one byte at a time.
    #[test]
    fn requests_split_at_every_byte(fs in frames(5, true)) {
        let stream = request_stream(&fs);
        let whole = feed(&mut ServerCodec::default(), &stream, &[]);
        prop_assert_eq!(&whole, &fs);
        for cut in 0..=stream.len() {
            let split = feed(&mut ServerCodec::default(), &stream, &[cut]);
            prop_assert_eq!(&split, &whole, "split at {}", cut);
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(&feed(&mut ServerCodec::default(), &stream, &every), &whole);
    }

    #[test]
    fn responses_split_at_every_byte((fs, stream, expected) in responses(5, true)) {
        let whole = feed(&mut client_with(&fs), &stream, &[]);
        prop_assert_eq!(&whole, &expected);
        for cut in 0..=stream.len() {
            let split = feed(&mut client_with(&fs), &stream, &[cut]);
            prop_assert_eq!(&split, &whole, "split at {}", cut);
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(&feed(&mut client_with(&fs), &stream, &every), &whole);
    }
}

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]

    /// Any frames (large PUT_STREAMs included), random chunkings.
    #[test]
    fn requests_in_random_chunks(fs in frames(8, false), cuts in vec(any::<prop::sample::Index>(), 0..20)) {
        let stream = request_stream(&fs);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(&feed(&mut ServerCodec::default(), &stream, &cuts), &fs);
    }

    #[test]
    fn responses_in_random_chunks((fs, stream, expected) in responses(8, false), cuts in vec(any::<prop::sample::Index>(), 0..20)) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(&feed(&mut client_with(&fs), &stream, &cuts), &expected);
    }

    /// Every strict prefix of a single frame is "incomplete" and consumes nothing.
    #[test]
    fn every_strict_prefix_is_incomplete(f in request_frame()) {
        let bytes = encode_request(&f);
        let step = (bytes.len() / 300).max(1);
        for n in (0..bytes.len()).step_by(step) {
            prop_assert_eq!(RequestFrame::parse(&bytes[..n], DEFAULT_MAX_FRAME_LEN), Ok(None), "prefix {}", n);
            let mut src = BytesMut::from(&bytes[..n]);
            prop_assert!(ServerCodec::default().decode(&mut src).unwrap().is_none());
            prop_assert_eq!(src.len(), n);
        }
    }
}
