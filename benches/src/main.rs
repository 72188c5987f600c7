//! `ferrod-load`: a HotRod load generator speaking raw protocol through ferrod-codec.
//!
//! One task per connection, `--pipeline` requests in flight on each, per-op latency into HDR
//! histograms, a text report or (`--json`) one JSON line for scripts.

mod conn;
mod mix;
mod rng;
mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use ferrod_codec::{expiration, Expiration, ResponseBody};
use tokio::time::Instant;

use crate::conn::{Shared, Window};
use crate::mix::{Mix, OpKind};
use crate::rng::Rng;
use crate::stats::{CpuSample, Latency, Report, Stats};

#[derive(Debug, Parser)]
#[command(
    name = "ferrod-load",
    about = "HotRod load generator: raw protocol over TCP, HDR latency histograms",
    after_help = "Mix names: get (GET), put (PUT), getm (GET_WITH_METADATA), replace \
                  (GET_WITH_METADATA then REPLACE_IF_UNMODIFIED with the version read), pia \
                  (PUT_IF_ABSENT with --pia-lifespan on a fresh key), remove (REMOVE). \
                  `keycloak` = getm=60,replace=20,pia=10,remove=10."
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:11222")]
    addr: String,
    /// Cache name ("" = the server's default cache).
    #[arg(long, default_value = "")]
    cache: String,
    /// TCP connections, one task each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pipeline: u32,
    /// Size of the shared keyspace, chosen from uniformly.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Measured time, e.g. 30s, 1500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring (not counted), e.g. 3s.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// HotRod protocol version of every request: 3.0, 3.1, 4.0 or 4.1.
    #[arg(long, default_value = "4.1", value_parser = parse_protocol)]
    protocol: u8,
    /// Operation mix: get, put, keycloak, or weights such as get=60,put=40.
    #[arg(long, default_value = "get")]
    mix: Mix,
    /// PUT every key once before measuring (so reads hit).
    #[arg(long)]
    preload: bool,
    /// Requests in flight per connection during --preload.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    preload_pipeline: u32,
    /// Lifespan of PUT_IF_ABSENT entries (sent in milliseconds).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pia_lifespan: Duration,
    /// Server process whose peak RSS (VmHWM) is reported at the end.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Database process (a PostgreSQL postmaster) whose CPU time, with its children's, is
    /// reported per operation next to the server's and the generator's.
    #[arg(long)]
    db_pid: Option<u32>,
    /// Print one JSON object line with all figures instead of the text report.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads of the generator (1 = single-threaded, like redis-benchmark).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Report every connection error, not just the first per connection.
    #[arg(long)]
    verbose: bool,
}

/// `30s`, `1500ms`, `2m`, `1h`, `0.5s`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (expected e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "us" | "µs" => n / 1_000_000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_protocol(s: &str) -> Result<u8, String> {
    match s.trim() {
        "3.0" | "30" => Ok(30),
        "3.1" | "31" => Ok(31),
        "4.0" | "40" => Ok(40),
        "4.1" | "41" => Ok(41),
        other => Err(format!(
            "unsupported protocol {other:?} (3.0, 3.1, 4.0 or 4.1)"
        )),
    }
}

fn protocol_name(v: u8) -> String {
    format!("{}.{}", v / 10, v % 10)
}

fn key_for(i: u64) -> Bytes {
    Bytes::from(format!("key:{i:010}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrod-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrod-load: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let run_tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()) << 32;
    let mut value = vec![0u8; args.value_size];
    let mut rng = Rng::new(run_tag);
    for chunk in value.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let pia_ms = args.pia_lifespan.as_millis().min(u128::from(u64::MAX)) as u64;
    let shared = Arc::new(Shared {
        addr: args.addr.clone(),
        cache: args.cache.clone(),
        version: args.protocol,
        keys: (0..args.keys).map(key_for).collect(),
        value: Bytes::from(value),
        mix: args.mix.clone(),
        pipeline: args.pipeline as usize,
        pia_expiration: Expiration::Units {
            lifespan: expiration::Duration::Amount(pia_ms, expiration::TimeUnit::Milliseconds),
            max_idle: expiration::Duration::Default,
        },
        run_tag,
    });

    // Fail fast, with a clear message, if nothing speaks HotRod at the address.
    let pong = conn::ping(&args.addr, args.protocol, &args.cache).await?;
    match &pong.body {
        ResponseBody::Ping(info) if !args.json => eprintln!(
            "ferrod-load: {} answers PING (server protocol {}, {} ops advertised)",
            args.addr,
            protocol_name(info.server_version),
            info.operations.len()
        ),
        ResponseBody::Error(msg) => return Err(format!("PING failed: {msg}")),
        _ => {}
    }

    let reads = [OpKind::Get, OpKind::GetMeta, OpKind::Replace];
    if !args.preload && !args.json && reads.iter().any(|&k| args.mix.contains(k)) {
        eprintln!("ferrod-load: reading keys that may not exist; --preload puts every key first");
    }
    let connections = args.connections as usize;
    let mut preload_s = None;
    let mut preload_rate = None;
    if args.preload {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(connections);
        for id in 0..connections {
            tasks.push(tokio::spawn(conn::preload(
                shared.clone(),
                id,
                connections,
                args.preload_pipeline as usize,
            )));
        }
        let (mut done, mut errors) = (0u64, 0u64);
        for t in tasks {
            let (d, e) = t.await.map_err(|e| format!("preload task: {e}"))??;
            done += d;
            errors += e;
        }
        let took = started.elapsed();
        if errors > 0 {
            return Err(format!("preload: {errors} of {done} puts failed"));
        }
        preload_s = Some((took.as_secs_f64() * 100.0).round() / 100.0);
        preload_rate = Some(stats::per_second(done, took));
        if !args.json {
            eprintln!(
                "ferrod-load: preloaded {done} keys in {:.1}s",
                took.as_secs_f64()
            );
        }
    }

    let start = Instant::now();
    let window = Window {
        measure_start: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    // CPU of the measured window only: sampled when it opens and when it closes.
    let (server_pid, db_pid) = (args.server_pid, args.db_pid);
    let cpu_window = tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_start).await;
        let first = CpuSample::take(server_pid, db_pid);
        tokio::time::sleep_until(window.end).await;
        (first, CpuSample::take(server_pid, db_pid))
    });
    let mut tasks = Vec::with_capacity(connections);
    for id in 0..connections {
        tasks.push(tokio::spawn(conn::run(
            shared.clone(),
            id,
            window,
            args.verbose,
        )));
    }
    let mut total = Stats::default();
    for t in tasks {
        let s = t.await.map_err(|e| format!("connection task: {e}"))?;
        total.merge(&s);
    }

    let cpu = cpu_window.await.ok();
    let rss = args.server_pid.and_then(stats::read_rss);
    let mut report = Report {
        addr: args.addr.clone(),
        cache: args.cache.clone(),
        protocol: protocol_name(args.protocol),
        mix: args.mix.spec().to_string(),
        connections,
        pipeline: args.pipeline as usize,
        keys: args.keys,
        value_size: args.value_size,
        threads: args.threads as usize,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        preload_s,
        preload_ops_per_sec: preload_rate,
        ops: 0,
        ops_per_sec: 0.0,
        requests: 0,
        requests_per_sec: 0.0,
        errors: 0,
        connection_errors: 0,
        error_statuses: Default::default(),
        latency: Latency::of(&stats::new_histogram()),
        per_op: Vec::new(),
        replace: None,
        server_pid: args.server_pid,
        server_peak_rss_kib: rss.map(|(hwm, _)| hwm),
        server_rss_kib: rss.map(|(_, now)| now),
        cpu_us_per_op: None,
    };
    report.fill_from(&total, args.duration);
    report.cpu_us_per_op = cpu.and_then(|(a, b)| a.per_op(&b, report.ops));
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_protocol("4.1"), Ok(41));
        assert_eq!(parse_protocol("3.0"), Ok(30));
        assert!(parse_protocol("2.8").is_err());
        assert!(parse_protocol("5.0").is_err());
        assert_eq!(protocol_name(31), "3.1");
    }

    #[test]
    fn cli_defaults_match_the_brief() {
        let a = Args::try_parse_from(["ferrod-load"]).unwrap();
        assert_eq!(a.addr, "127.0.0.1:11222");
        assert_eq!(a.cache, "");
        assert_eq!(a.connections, 64);
        assert_eq!(a.pipeline, 1);
        assert_eq!(a.keys, 100_000);
        assert_eq!(a.value_size, 1024);
        assert_eq!(a.duration, Duration::from_secs(30));
        assert_eq!(a.warmup, Duration::from_secs(3));
        assert_eq!(a.protocol, 41);
        assert_eq!(a.mix.spec(), "get=1");
        let a = Args::try_parse_from(["ferrod-load", "--mix", "get=60,put=40", "--json"]).unwrap();
        assert_eq!(a.mix.spec(), "get=60,put=40");
        assert!(a.json);
    }

    #[test]
    fn keys_sort_and_are_distinct() {
        assert_eq!(&key_for(42)[..], b"key:0000000042");
        assert!(key_for(9) < key_for(10));
    }
}
