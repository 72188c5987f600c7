//! `feed_lag`: how long a write committed on replica A takes to be applied on replica B.
//!
//! ```text
//! feed_lag --writer 127.0.0.1:11222 --listener 127.0.0.1:11223 [--connections 16] \
//!          [--duration 20s] [--warmup 2s] [--value-size 512] [--cache ""] [--json]
//! ```
//!
//! `--connections` connections to A PUT fresh keys as fast as A answers (that is the load); one
//! connection to B holds a client listener (created events). On PostgreSQL, B publishes an event
//! only when its change-feed follower applied the change to memory, so the event's arrival is
//! "applied on B". Per key the tool knows when the PUT was sent to A, when A acknowledged it
//! (after COMMIT), and when B's event arrived; it reports the lag from A's acknowledgement (a
//! slight underestimate of commit-to-applied: the acknowledgement leaves A after its commit) and
//! from the send (an overestimate: it includes A's group commit), as percentiles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferrod_codec::{
    status, ClientCodec, EventPayload, Expiration, Incoming, Request, RequestFrame, RequestHeader,
};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;

struct Args {
    writer: String,
    listener: String,
    cache: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    value_size: usize,
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = n.parse().map_err(|_| format!("bad duration '{s}'"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(60 * n)),
        _ => Err(format!("bad duration unit in '{s}'")),
    }
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        writer: String::new(),
        listener: String::new(),
        cache: String::new(),
        connections: 16,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(2),
        value_size: 512,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--writer" => a.writer = val()?,
            "--listener" => a.listener = val()?,
            "--cache" => a.cache = val()?,
            "--connections" => a.connections = val()?.parse().map_err(|e| format!("{e}"))?,
            "--duration" => a.duration = parse_duration(&val()?)?,
            "--warmup" => a.warmup = parse_duration(&val()?)?,
            "--value-size" => a.value_size = val()?.parse().map_err(|e| format!("{e}"))?,
            "--json" => a.json = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.writer.is_empty() || a.listener.is_empty() {
        return Err("--writer and --listener are required".into());
    }
    Ok(a)
}

type Conn = Framed<TcpStream, ClientCodec>;

async fn connect(addr: &str) -> Result<Conn, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(Framed::new(s, ClientCodec::new()))
}

fn frame(cache: &str, id: u64, request: Request) -> RequestFrame {
    RequestFrame {
        header: RequestHeader::new(40, request.opcode(), id, cache),
        request,
    }
}

/// Per key: (sent to A, acknowledged by A) and arrival of B's event, relative to `t0`.
#[derive(Default)]
struct Timeline {
    writes: HashMap<Bytes, (u64, u64)>,
    applied: HashMap<Bytes, u64>,
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("feed_lag: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a).await {
        eprintln!("feed_lag: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let t0 = Instant::now();
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let tag = std::process::id();

    // The listener on B first, so every measured write's event is delivered.
    let mut l = connect(&a.listener).await?;
    let add = Request::AddClientListener {
        listener_id: Bytes::from(format!("feed-lag-{tag}")),
        include_current_state: false,
        filter: None,
        converter: None,
        use_raw_data: false,
        interests: 0x01,
    };
    l.send(frame(&a.cache, 1, add))
        .await
        .map_err(|e| e.to_string())?;
    match l.next().await {
        Some(Ok(Incoming::Response(r))) if r.header.status == status::SUCCESS => {}
        other => {
            return Err(format!(
                "ADD_CLIENT_LISTENER on {} failed: {other:?}",
                a.listener
            ))
        }
    }
    let stop_listener = Arc::new(AtomicBool::new(false));
    let listener = {
        let (timeline, stop) = (timeline.clone(), stop_listener.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), l.next()).await {
                    Ok(Some(Ok(Incoming::Event(e)))) => {
                        let at = micros(t0);
                        if let EventPayload::Plain { key, .. } = e.payload {
                            timeline.lock().unwrap().applied.entry(key).or_insert(at);
                        }
                    }
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(None) | Ok(Some(Err(_))) => break,
                }
            }
        })
    };

    let measure_from = a.warmup.as_micros() as u64;
    let end = t0 + a.warmup + a.duration;
    let errors = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'x'; a.value_size]);
    let mut writers = Vec::new();
    for c in 0..a.connections {
        let mut conn = connect(&a.writer).await?;
        let (timeline, errors, value, cache) = (
            timeline.clone(),
            errors.clone(),
            value.clone(),
            a.cache.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let key = Bytes::from(format!("feedlag:{tag}:{c}:{n}"));
                let put = Request::Put {
                    key: key.clone(),
                    value: value.clone(),
                    expiration: Expiration::DEFAULT,
                };
                let sent = micros(t0);
                if conn.send(frame(&cache, n, put)).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                match conn.next().await {
                    Some(Ok(Incoming::Response(r))) if !status::is_error(r.header.status) => {
                        let acked = micros(t0);
                        if sent >= measure_from {
                            timeline.lock().unwrap().writes.insert(key, (sent, acked));
                        }
                    }
                    Some(Ok(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    for w in writers {
        let _ = w.await;
    }
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_listener.store(true, Ordering::Relaxed);
    let _ = listener.await;

    let t = timeline.lock().unwrap();
    let mut from_ack = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let mut from_send = from_ack.clone();
    let (mut missing, mut before_ack) = (0u64, 0u64);
    for (key, (sent, acked)) in &t.writes {
        match t.applied.get(key) {
            Some(&applied) => {
                if applied < *acked {
                    // B applied it before A's answer reached us: lag below what we can see.
                    before_ack += 1;
                }
                let _ = from_ack.record(applied.saturating_sub(*acked).max(1));
                let _ = from_send.record(applied.saturating_sub(*sent).max(1));
            }
            None => missing += 1,
        }
    }
    let writes = t.writes.len() as u64;
    let secs = a.duration.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    if a.json {
        println!(
            "{{\"writes\":{writes},\"writes_per_s\":{:.0},\"missing_events\":{missing},\"applied_before_ack\":{before_ack},\"errors\":{},\"lag_from_ack_ms\":{{\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2},\"max\":{:.2}}},\"lag_from_send_ms\":{{\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2},\"max\":{:.2}}},\"loadavg\":\"{load}\"}}",
            writes as f64 / secs,
            errors.load(Ordering::Relaxed),
            q(&from_ack, 0.5), q(&from_ack, 0.9), q(&from_ack, 0.99), from_ack.max() as f64 / 1000.0,
            q(&from_send, 0.5), q(&from_send, 0.9), q(&from_send, 0.99), from_send.max() as f64 / 1000.0,
        );
    } else {
        println!(
            "writes measured:      {writes} ({:.0}/s through A, {} connections)",
            writes as f64 / secs,
            a.connections
        );
        println!("events missing on B:  {missing}   applied before A's ack arrived: {before_ack}   errors: {}", errors.load(Ordering::Relaxed));
        println!(
            "lag A ack -> B applied (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            q(&from_ack, 0.5),
            q(&from_ack, 0.9),
            q(&from_ack, 0.99),
            from_ack.max() as f64 / 1000.0
        );
        println!(
            "lag A send -> B applied (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            q(&from_send, 0.5),
            q(&from_send, 0.9),
            q(&from_send, 0.99),
            from_send.max() as f64 / 1000.0
        );
        println!("load average at the end: {load}");
    }
    if missing > 0 {
        return Err(format!(
            "{missing} writes acknowledged by A never raised an event on B"
        ));
    }
    Ok(())
}
