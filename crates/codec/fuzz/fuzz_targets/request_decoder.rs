//! Arbitrary bytes through the server-side decoder, as a connection would deliver them.
//!
//! Checks, for every input:
//! * decoding never panics and never consumes bytes without producing a frame;
//! * every decoded frame re-encodes to bytes that decode to the same frame, consuming them all;
//! * restartability: the same bytes split in two at an input-chosen point decode to the same
//!   sequence of frames and the same final outcome.
#![no_main]

use bytes::BytesMut;
use ferrod_codec::{RequestFrame, ServerCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small enough that "too large" paths are reached too.
const MAX_FRAME: usize = 1 << 16;

#[derive(Debug, PartialEq)]
enum End {
    NeedMore(usize),
    Error(String),
}

fn drain(codec: &mut ServerCodec, src: &mut BytesMut, out: &mut Vec<RequestFrame>) -> End {
    loop {
        let before = src.len();
        match codec.decode(src) {
            Ok(Some(frame)) => {
                assert!(src.len() < before, "a frame consumed no bytes");
                let mut again = BytesMut::new();
                frame.write(&mut again);
                let (decoded, len) = RequestFrame::parse(&again, usize::MAX)
                    .expect("re-encoded frame fails to decode")
                    .expect("re-encoded frame is incomplete");
                assert_eq!(decoded, frame, "re-encoded frame decodes differently");
                assert_eq!(len, again.len(), "re-encoded frame not fully consumed");
                out.push(frame);
            }
            Ok(None) => {
                assert_eq!(src.len(), before, "an incomplete frame consumed bytes");
                return End::NeedMore(src.len());
            }
            Err(e) => {
                assert_eq!(src.len(), before, "an error consumed bytes");
                return End::Error(format!("{e:?}"));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Whole input at once.
    let mut whole = Vec::new();
    let mut src = BytesMut::from(data);
    let end_whole = drain(&mut ServerCodec::new(MAX_FRAME), &mut src, &mut whole);

    // Split in two: the first byte picks the cut.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    let mut codec = ServerCodec::new(MAX_FRAME);
    let mut split = Vec::new();
    let mut src = BytesMut::from(&data[..cut]);
    let first = drain(&mut codec, &mut src, &mut split);
    let end_split = match first {
        End::Error(e) => End::Error(e),
        End::NeedMore(_) => {
            src.extend_from_slice(&data[cut..]);
            drain(&mut codec, &mut src, &mut split)
        }
    };
    assert_eq!(whole, split, "split decoding differs");
    assert_eq!(end_whole, end_split, "split decoding ends differently");
});
