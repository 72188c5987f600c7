//! The connection fuzz target's harness, shared with crates/server/tests/fuzz_corpus.rs (which
//! replays the corpus and every crash regression as an ordinary test): one server context on
//! an SQLite file, connections served over in-memory duplex streams.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use ferrod::{Cli, Config, ServerContext};
use ferrod_codec::{
    header::REQUEST_MAGIC, ClientCodec, Expiration, Incoming, Request, RequestFrame, RequestHeader,
    ResponseBody, ServerCodec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use tokio_util::codec::{Decoder, Encoder};

/// Small, so that inputs of a few KiB reach the value limit too.
const MAX_VALUE_BYTES: &str = "1024";
/// A connection that takes longer than this to finish after its client stopped is hung.
const HANG: Duration = Duration::from_secs(30);

pub struct Harness {
    pub runtime: Runtime,
    pub ctx: Arc<ServerContext>,
    /// Where the database lives; removed by whoever owns the process's end.
    pub dir: std::path::PathBuf,
}

pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // tmpfs: the commit of every write is cheap, so the fuzzer stays fast.
        let base = if let Some(d) = std::env::var_os("FERROD_FUZZ_DB_DIR") {
            std::path::PathBuf::from(d)
        } else if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("ferrod-fuzz-connection-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz database directory");
        let url = format!("sqlite://{}", dir.join("fuzz.db").display());
        let cli = Cli::parse_from([
            "ferrod",
            "--database-url",
            &url,
            "--max-value-bytes",
            MAX_VALUE_BYTES,
            "--max-listener-queue",
            "64",
            // Limits small enough for inputs of a few KiB to cross them.
            "--max-key-bytes",
            "512",
            "--max-frame-bytes",
            "2048",
            "--max-iterations-per-connection",
            "4",
            // An idle close would end a connection the check expects to end by EOF only.
            "--idle-timeout-s",
            "0",
        ]);
        let config = Config::load(&cli).expect("fuzz configuration");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let ctx = runtime.block_on(async {
            let store = ferrod_store::Store::open(ferrod::store_config(&config))
                .await
                .expect("store");
            let ctx = Arc::new(ServerContext::new(store.clone(), config));
            tokio::spawn(ferrod::listeners::dispatch(store, ctx.listeners.clone()));
            ctx
        });
        Harness { runtime, ctx, dir }
    })
}

/// The requests the connection will decode from `data`, as its codec does: frames, and past a
/// byte that cannot start one, resynchronised at the next request magic. `None` when framing is
/// lost before the end (the connection closes there) is not distinguished: what was decoded
/// up to that point is returned.
pub fn requests_in(data: &[u8], max_frame: usize) -> Vec<RequestFrame> {
    let mut codec = ServerCodec::new(max_frame);
    let mut src = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut src) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return out,
            Err(_) if src.first().is_some_and(|b| *b != REQUEST_MAGIC) => {
                let skip = src
                    .iter()
                    .skip(1)
                    .position(|b| *b == REQUEST_MAGIC)
                    .map_or(src.len(), |p| p + 1);
                src.advance(skip);
            }
            Err(_) => return out,
        }
    }
}

pub async fn serve_one(ctx: Arc<ServerContext>, data: &[u8]) -> Vec<u8> {
    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    let (_shutdown_tx, shutdown_rx) = broadcast::channel(1);
    let conn = tokio::spawn(ferrod::connection::serve(
        ctx,
        server_side,
        "fuzz".into(),
        None,
        None,
        shutdown_rx,
    ));
    // The first byte picks the chunk size, so frames also arrive split at arbitrary points.
    let chunk = data.first().map_or(1, |b| usize::from(*b).max(1));
    let (mut rd, mut wr) = tokio::io::split(&mut client);
    let writer = async {
        for part in data.chunks(chunk) {
            if wr.write_all(part).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let mut out = Vec::new();
    let reader = rd.read_to_end(&mut out);
    let (_, read) = tokio::time::timeout(HANG, async { tokio::join!(writer, reader) })
        .await
        .expect("the connection did not finish after the client stopped sending");
    read.expect("reading the server's answers");
    tokio::time::timeout(HANG, conn)
        .await
        .expect("the connection task did not end")
        .expect("the connection task failed");
    out
}

pub fn check_output(requests: Vec<RequestFrame>, out: &[u8]) {
    let mut ids: Vec<u64> = requests.iter().map(|f| f.header.message_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != requests.len() || ids.contains(&0) {
        return;
    }
    let mut client = ClientCodec::with_max_frame_len(usize::MAX);
    let mut scratch = BytesMut::new();
    for f in requests {
        client.encode(f, &mut scratch).expect("encode");
    }
    let mut src = BytesMut::from(out);
    while !src.is_empty() {
        match client.decode(&mut src) {
            Ok(Some(Incoming::Response(_) | Incoming::Event(_) | Incoming::CounterEvent(_))) => {}
            Ok(None) => panic!("the server's output ends mid-frame: {:02X?}", &src[..]),
            Err(e) => panic!("the server wrote bytes that are not HotRod ({e}): {out:02X?}"),
        }
    }
}

pub async fn still_serves(ctx: Arc<ServerContext>) {
    let key = bytes::Bytes::from_static(b"fuzz-sentinel");
    let put = RequestFrame {
        header: RequestHeader::new(41, ferrod_codec::op::PUT, 1, ""),
        request: Request::Put {
            key: key.clone(),
            expiration: Expiration::DEFAULT,
            value: bytes::Bytes::from_static(b"ok"),
        },
    };
    let get = RequestFrame {
        header: RequestHeader::new(41, ferrod_codec::op::GET, 2, ""),
        request: Request::Get { key },
    };
    let mut bytes = BytesMut::new();
    put.write(&mut bytes);
    get.write(&mut bytes);
    let out = serve_one(ctx, &bytes).await;
    let mut client = ClientCodec::new();
    let mut scratch = BytesMut::new();
    client.encode(put, &mut scratch).unwrap();
    client.encode(get, &mut scratch).unwrap();
    let mut src = BytesMut::from(&out[..]);
    let mut got = Vec::new();
    while let Ok(Some(Incoming::Response(r))) = client.decode(&mut src) {
        got.push(r);
    }
    assert_eq!(got.len(), 2, "sentinel answers: {got:?}");
    assert_eq!(
        got[0].header.status,
        ferrod_codec::status::SUCCESS,
        "{got:?}"
    );
    assert!(
        matches!(&got[1].body, ResponseBody::Value(v) if &v[..] == b"ok"),
        "{got:?}"
    );
}

/// Everything the fuzz target checks, for one input.
pub fn check(data: &[u8]) {
    let h = harness();
    let requests = requests_in(data, h.ctx.config.max_frame_bytes);
    h.runtime.block_on(async {
        let out = serve_one(h.ctx.clone(), data).await;
        check_output(requests, &out);
        still_serves(h.ctx.clone()).await;
    });
}
