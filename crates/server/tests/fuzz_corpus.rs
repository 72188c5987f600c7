//! The connection fuzz target (crates/server/fuzz) as ordinary tests: every seed in
//! `fuzz/corpus/connection` and every crash in `fuzz/regressions/connection` is replayed through
//! a real connection with the target's own checks (no panic, no hang, well-formed output, the
//! server still serves).
//!
//! Regenerate the seeds (multi-request sessions built with the codec's encoder) with
//! `FERROD_WRITE_FUZZ_SEEDS=1 cargo test -p ferrod --test fuzz_corpus write_seeds`.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ferrod_codec::{Expiration, Factory, Request, RequestFrame, RequestHeader};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file() && p.file_name().is_none_or(|n| n != "README.md"));
    v.sort();
    v
}

/// One test for both directories: the harness (one store, one runtime) is per process.
#[test]
fn corpus_and_regressions_replay_cleanly() {
    let db = tempfile::tempdir().unwrap();
    std::env::set_var("FERROD_FUZZ_DB_DIR", db.path());
    let seeds = files(&fuzz_dir().join("corpus/connection"));
    assert!(seeds.len() >= 10, "the committed seed corpus is missing");
    let regressions = files(&fuzz_dir().join("regressions/connection"));
    for p in seeds.iter().chain(&regressions) {
        let data = std::fs::read(p).unwrap();
        eprintln!("replaying {}", p.display());
        harness::check(&data);
    }
}

fn frame(version: u8, id: u64, request: Request) -> RequestFrame {
    RequestFrame {
        header: RequestHeader::new(version, request.opcode(), id, ""),
        request,
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        expiration: Expiration::DEFAULT,
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn key(k: &str) -> Bytes {
    Bytes::copy_from_slice(k.as_bytes())
}

/// Sessions of several requests, each a plausible client conversation.
fn sessions() -> Vec<(&'static str, Vec<RequestFrame>)> {
    let v = 41;
    vec![
        ("put_get_remove", vec![
            frame(v, 1, put("a", "1")),
            frame(v, 2, Request::Get { key: key("a") }),
            frame(v, 3, Request::GetWithVersion { key: key("a") }),
            frame(v, 4, Request::Remove { key: key("a") }),
            frame(v, 5, Request::ContainsKey { key: key("a") }),
        ]),
        ("conditional", vec![
            frame(v, 1, Request::PutIfAbsent { key: key("c"), expiration: Expiration::DEFAULT, value: key("x") }),
            frame(v, 2, Request::ReplaceIfUnmodified { key: key("c"), expiration: Expiration::DEFAULT, version: 1, value: key("y") }),
            frame(v, 3, Request::RemoveIfUnmodified { key: key("c"), version: 1 }),
            frame(v, 4, Request::Replace { key: key("c"), expiration: Expiration::DEFAULT, value: key("z") }),
        ]),
        ("bulk", vec![
            frame(v, 1, Request::PutAll { expiration: Expiration::DEFAULT, entries: vec![(key("p"), key("1")), (key("q"), key("2"))] }),
            frame(v, 2, Request::GetAll { keys: vec![key("p"), key("q"), key("r")] }),
            frame(v, 3, Request::Size),
            frame(v, 4, Request::BulkGetKeys { scope: 0 }),
            frame(v, 5, Request::Clear),
        ]),
        ("iteration", vec![
            frame(v, 1, put("i", "1")),
            frame(v, 2, Request::IterationStart { segments: None, filter_converter: None, batch_size: 1, include_metadata: true }),
            frame(v, 3, Request::IterationNext { iteration_id: "nope".into() }),
            frame(v, 4, Request::IterationEnd { iteration_id: "nope".into() }),
        ]),
        ("listener", vec![
            frame(v, 1, Request::AddClientListener { listener_id: key("L"), include_current_state: true, filter: None, converter: None, use_raw_data: false, interests: 0 }),
            frame(v, 2, put("l", "1")),
            frame(v, 3, Request::RemoveClientListener { listener_id: key("L") }),
        ]),
        ("streams", vec![
            frame(v, 1, Request::StartPutStream { key: key("s"), expiration: Expiration::DEFAULT, version: 0 }),
            frame(v, 2, Request::NextPutStream { stream_id: 0, last_chunk: false, chunk: key("abc") }),
            frame(v, 3, Request::NextPutStream { stream_id: 0, last_chunk: true, chunk: key("def") }),
            frame(v, 4, Request::StartGetStream { key: key("s"), batch_size: 2 }),
            frame(v, 5, Request::NextGetStream { stream_id: 0 }),
            frame(v, 6, Request::EndGetStream { stream_id: 0 }),
        ]),
        ("admin", vec![
            frame(31, 1, Request::Ping),
            frame(v, 2, Request::Stats),
            frame(v, 3, Request::AuthMechList),
            frame(v, 4, Request::Exec { task: "@@cache@names".into(), params: vec![] }),
        ]),
        ("old_versions", vec![
            frame(20, 1, put("o", "1")),
            frame(25, 2, Request::Get { key: key("o") }),
            frame(28, 3, Request::GetWithMetadata { key: key("o") }),
            frame(30, 4, Request::Remove { key: key("o") }),
        ]),
        ("converter", vec![
            frame(v, 1, Request::IterationStart {
                segments: None,
                filter_converter: Some(Factory { name: "org.infinispan.server.hotrod.HotRodServer$ToEmptyBytesKeyValueFilterConverter".into(), params: vec![] }),
                batch_size: 10,
                include_metadata: false,
            }),
        ]),
    ]
}

#[test]
fn write_seeds() {
    if std::env::var_os("FERROD_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let dir = fuzz_dir().join("corpus/connection");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, frames) in sessions() {
        let mut buf = BytesMut::new();
        for f in &frames {
            f.write(&mut buf);
        }
        std::fs::write(dir.join(format!("session_{name}")), &buf).unwrap();
    }
    // The codec's one-frame seeds are connections too.
    for p in
        files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../codec/fuzz/corpus/request_decoder"))
    {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&p, dir.join(format!("frame_{name}"))).unwrap();
    }
}

/// Without libFuzzer (no nightly, no instrumentation): seeds mutated at random (byte flips,
/// cuts, splices of two seeds) through the same checks, for `FERROD_MUTATE_SECONDS` (default 5).
/// Run longer by hand with
/// `FERROD_MUTATE_SECONDS=600 cargo test -p ferrod --test fuzz_corpus random_mutations -- --ignored --nocapture`;
/// a failing input is written to `target/fuzz-mutation-failure` before the check runs.
#[test]
#[ignore]
fn random_mutations() {
    let db = tempfile::tempdir().unwrap();
    std::env::set_var("FERROD_FUZZ_DB_DIR", db.path());
    let seeds: Vec<Vec<u8>> = files(&fuzz_dir().join("corpus/connection"))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let secs: u64 = std::env::var("FERROD_MUTATE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let last = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-mutation-failure");
    let mut n = 0u64;
    while std::time::Instant::now() < end {
        let mut data = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + next() % 4 {
            match next() % 5 {
                0 if !data.is_empty() => {
                    let i = (next() % data.len() as u64) as usize;
                    data[i] = next() as u8;
                }
                1 if !data.is_empty() => {
                    let cut = (next() % data.len() as u64) as usize;
                    data.truncate(cut);
                }
                2 => {
                    let other = &seeds[(next() % seeds.len() as u64) as usize];
                    data.extend_from_slice(other);
                }
                3 if !data.is_empty() => {
                    let i = (next() % data.len() as u64) as usize;
                    data.insert(i, next() as u8);
                }
                _ => {
                    // A length or count byte pushed to an extreme.
                    if !data.is_empty() {
                        let i = (next() % data.len() as u64) as usize;
                        data[i] = [0x00, 0x7F, 0x80, 0xFF][(next() % 4) as usize];
                    }
                }
            }
        }
        let _ = std::fs::write(&last, &data);
        harness::check(&data);
        n += 1;
    }
    let _ = std::fs::remove_file(&last);
    eprintln!("{n} mutated inputs checked in {secs} s");
}
