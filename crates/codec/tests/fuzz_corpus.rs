//! The fuzz seed corpus and crash regressions (crates/codec/fuzz), replayed as ordinary tests.
//!
//! Regenerate the seeds with
//! `FERROD_WRITE_FUZZ_SEEDS=1 cargo test -p ferrod-codec --test fuzz_corpus write_seeds`.

mod common;

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use common::*;
use ferrod_codec::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use tokio_util::codec::Decoder;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// What the fuzz target checks, for one input.
fn check(data: &[u8]) -> usize {
    let mut codec = ServerCodec::new(1 << 16);
    let mut src = BytesMut::from(data);
    let mut n = 0;
    loop {
        let before = src.len();
        match codec.decode(&mut src) {
            Ok(Some(f)) => {
                assert!(src.len() < before);
                let again = encode_request(&f);
                let (g, len) = RequestFrame::parse(&again, usize::MAX).unwrap().unwrap();
                assert_eq!(g, f);
                assert_eq!(len, again.len());
                n += 1;
            }
            _ => {
                assert_eq!(src.len(), before);
                return n;
            }
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn seed_corpus_decodes_completely() {
    let seeds = files(&fuzz_dir().join("corpus/request_decoder"));
    assert!(seeds.len() >= 24, "only {} seeds", seeds.len());
    for path in seeds {
        let data = std::fs::read(&path).unwrap();
        assert_eq!(check(&data), 1, "{}", path.display());
    }
}

#[test]
fn fuzz_regressions() {
    for path in files(&fuzz_dir().join("regressions")) {
        check(&std::fs::read(&path).unwrap());
    }
}

/// One frame per op at the newest version it has, plus the ops whose layout changes with the
/// version at their older versions.
#[test]
fn write_seeds() {
    if std::env::var_os("FERROD_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let dir = fuzz_dir().join("corpus/request_decoder");
    std::fs::create_dir_all(&dir).unwrap();
    let mut runner = TestRunner::deterministic();
    let mut pairs: Vec<(u8, u8)> = op::ALL_REQUESTS.iter().map(|&o| (o, 41)).collect();
    for (o, vs) in [
        (op::PING, &[20u8, 28, 31][..]),
        (op::PUT, &[20, 22, 30]),
        (op::ADD_CLIENT_LISTENER, &[20, 21, 26]),
        (op::ITERATION_START, &[23, 24]),
        (op::PUT_MULTIMAP, &[27]),
        (op::PREPARE_TX, &[21, 29]),
    ] {
        pairs.extend(vs.iter().map(|&v| (o, v)));
    }
    for (o, v) in pairs {
        if since(o) > v {
            continue;
        }
        let frame = frame_for(o, v)
            .prop_filter("small", |f| encode_request(f).len() < 512)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        std::fs::write(dir.join(format!("{o:02x}_v{v}")), encode_request(&frame)).unwrap();
    }
}
