//! Per-connection counters and latency histograms, merged into one report at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::mix::OpKind;

/// Highest latency the histograms track exactly (longer samples are clamped to it): 60 s in µs.
const MAX_LATENCY_US: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Counters for one operation kind.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Operations completed inside the measured window (whatever their status).
    pub ops: u64,
    /// Responses with an error status (>= 0x81) or an error response.
    pub errors: u64,
    /// Reads that found no entry, PUT_IF_ABSENT that found one, REMOVE of a missing key.
    pub misses: u64,
    pub latency: Histogram<u64>,
}

impl KindStats {
    fn new() -> Self {
        KindStats {
            ops: 0,
            errors: 0,
            misses: 0,
            latency: new_histogram(),
        }
    }
}

/// What one connection (or, merged, the whole run) measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Indexed by `OpKind::index`; created on first use to keep idle kinds cheap.
    pub kinds: [Option<KindStats>; OpKind::ALL.len()],
    /// Wire requests answered inside the window (a read-then-replace is two).
    pub requests: u64,
    /// Read-then-replace outcomes.
    pub replace_success: u64,
    pub replace_conflict: u64,
    pub replace_read_miss: u64,
    /// Error statuses seen, by status byte.
    pub error_statuses: BTreeMap<u8, u64>,
    /// Connection failures (I/O or undecodable frames); the connection is reopened.
    pub connection_errors: u64,
}

impl Stats {
    pub fn kind_mut(&mut self, kind: OpKind) -> &mut KindStats {
        self.kinds[kind.index()].get_or_insert_with(KindStats::new)
    }

    pub fn kind(&self, kind: OpKind) -> Option<&KindStats> {
        self.kinds[kind.index()].as_ref()
    }

    /// Records one completed operation.
    pub fn record(&mut self, kind: OpKind, latency: Duration, error: bool, miss: bool) {
        let k = self.kind_mut(kind);
        k.ops += 1;
        k.errors += u64::from(error);
        k.misses += u64::from(miss);
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        k.latency.saturating_record(us);
    }

    pub fn record_error_status(&mut self, status: u8) {
        *self.error_statuses.entry(status).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Stats) {
        for kind in OpKind::ALL {
            if let Some(o) = other.kind(kind) {
                let k = self.kind_mut(kind);
                k.ops += o.ops;
                k.errors += o.errors;
                k.misses += o.misses;
                k.latency.add(&o.latency).expect("same histogram bounds");
            }
        }
        self.requests += other.requests;
        self.replace_success += other.replace_success;
        self.replace_conflict += other.replace_conflict;
        self.replace_read_miss += other.replace_read_miss;
        for (s, n) in &other.error_statuses {
            *self.error_statuses.entry(*s).or_default() += n;
        }
        self.connection_errors += other.connection_errors;
    }

    pub fn total_ops(&self) -> u64 {
        self.kinds.iter().flatten().map(|k| k.ops).sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.kinds.iter().flatten().map(|k| k.errors).sum::<u64>() + self.connection_errors
    }

    /// All kinds' latencies in one histogram.
    pub fn overall_latency(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for k in self.kinds.iter().flatten() {
            h.add(&k.latency).expect("same histogram bounds");
        }
        h
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency {
                p50_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
                mean_us: 0.0,
            };
        }
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub op: &'static str,
    pub wire: &'static str,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub errors: u64,
    pub misses: u64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplaceReport {
    pub success: u64,
    pub version_conflict: u64,
    pub read_miss: u64,
}

/// Everything a run prints; `--json` serialises it on one line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub addr: String,
    pub cache: String,
    pub protocol: String,
    pub mix: String,
    pub connections: usize,
    pub pipeline: usize,
    pub keys: u64,
    pub value_size: usize,
    pub threads: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub preload_s: Option<f64>,
    pub preload_ops_per_sec: Option<f64>,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub errors: u64,
    pub connection_errors: u64,
    pub error_statuses: BTreeMap<String, u64>,
    pub latency: Latency,
    pub per_op: Vec<OpReport>,
    pub replace: Option<ReplaceReport>,
    pub server_pid: Option<u32>,
    pub server_peak_rss_kib: Option<u64>,
    pub server_rss_kib: Option<u64>,
    /// CPU time (user + system) per operation of the measured window, in µs: of the server
    /// process, of the database (`--db-pid` and its child processes) and of this generator.
    /// Unlike ops/s these barely move when other processes share the machine, so they are what
    /// the throughput of two systems measured on one busy machine can fairly be compared by.
    pub cpu_us_per_op: Option<CpuPerOp>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuPerOp {
    pub server: Option<f64>,
    pub db: Option<f64>,
    pub client: Option<f64>,
}

/// CPU seconds consumed so far by the processes a run watches (see [`CpuPerOp`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub server: Option<f64>,
    pub db: Option<f64>,
    pub client: Option<f64>,
}

impl CpuSample {
    pub fn take(server: Option<u32>, db: Option<u32>) -> CpuSample {
        CpuSample {
            server: server.and_then(process_cpu_s),
            db: db.map(tree_cpu_s),
            client: process_cpu_s(std::process::id()),
        }
    }

    /// Per operation between `self` (window start) and `end`.
    pub fn per_op(&self, end: &CpuSample, ops: u64) -> Option<CpuPerOp> {
        if ops == 0 {
            return None;
        }
        let d = |a: Option<f64>, b: Option<f64>| {
            Some(((b? - a?).max(0.0) * 1e6 / ops as f64 * 10.0).round() / 10.0)
        };
        Some(CpuPerOp {
            server: d(self.server, end.server),
            db: d(self.db, end.db),
            client: d(self.client, end.client),
        })
    }
}

/// `/proc/PID/stat` counts in clock ticks of USER_HZ, which Linux fixes at 100 for userspace.
const TICKS_PER_S: f64 = 100.0;

/// (ppid, utime + stime in ticks) from a `/proc/PID/stat` line. The command name may contain
/// spaces and parentheses, so fields are counted from the last ')'.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, t)| t as f64 / TICKS_PER_S)
}

/// CPU seconds of `root` and its direct children (a PostgreSQL postmaster and its backends).
/// A backend that exits inside the window takes its CPU time with it, so the figure is a
/// slight underestimate when connections come and go.
pub fn tree_cpu_s(root: u32) -> f64 {
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((ppid, t)) = parse_stat(&stat) {
                if pid == root || ppid == root {
                    ticks += t;
                }
            }
        }
    }
    ticks as f64 / TICKS_PER_S
}

pub fn per_second(n: u64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s <= 0.0 {
        return 0.0;
    }
    (n as f64 / s * 10.0).round() / 10.0
}

impl Report {
    pub fn fill_from(&mut self, stats: &Stats, window: Duration) {
        self.ops = stats.total_ops();
        self.ops_per_sec = per_second(self.ops, window);
        self.requests = stats.requests;
        self.requests_per_sec = per_second(stats.requests, window);
        self.errors = stats.total_errors();
        self.connection_errors = stats.connection_errors;
        self.error_statuses = stats
            .error_statuses
            .iter()
            .map(|(s, n)| (format!("0x{s:02X}"), *n))
            .collect();
        self.latency = Latency::of(&stats.overall_latency());
        self.per_op = OpKind::ALL
            .iter()
            .filter_map(|&kind| {
                stats.kind(kind).map(|k| OpReport {
                    op: kind.name(),
                    wire: kind.wire_ops(),
                    ops: k.ops,
                    ops_per_sec: per_second(k.ops, window),
                    errors: k.errors,
                    misses: k.misses,
                    latency: Latency::of(&k.latency),
                })
            })
            .collect();
        self.replace = stats.kind(OpKind::Replace).map(|_| ReplaceReport {
            success: stats.replace_success,
            version_conflict: stats.replace_conflict,
            read_miss: stats.replace_read_miss,
        });
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let cache = if self.cache.is_empty() {
            "(default)"
        } else {
            &self.cache
        };
        let _ = writeln!(
            s,
            "ferrod-load {} cache {} protocol {} mix {}",
            self.addr, cache, self.protocol, self.mix
        );
        let _ = writeln!(
            s,
            "  {} connections x pipeline {}, {} keys, {} B values, {} thread(s), {:.1}s warmup, \
             {:.1}s measured",
            self.connections,
            self.pipeline,
            self.keys,
            self.value_size,
            self.threads,
            self.warmup_s,
            self.duration_s
        );
        if let (Some(t), Some(r)) = (self.preload_s, self.preload_ops_per_sec) {
            let _ = writeln!(s, "  preload: {} puts in {t:.1}s ({r:.0} ops/s)", self.keys);
        }
        let _ = writeln!(
            s,
            "  throughput: {:.0} ops/s ({:.0} requests/s), {} ops",
            self.ops_per_sec, self.requests_per_sec, self.ops
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency us: p50 {} p99 {} p99.9 {} max {} mean {:.1}",
            l.p50_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        );
        let _ = writeln!(
            s,
            "  errors: {} (connection errors {}){}",
            self.errors,
            self.connection_errors,
            if self.error_statuses.is_empty() {
                String::new()
            } else {
                format!(", statuses {:?}", self.error_statuses)
            }
        );
        if self.per_op.len() > 1 || self.replace.is_some() {
            let _ = writeln!(
                s,
                "  {:<8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "op", "ops", "ops/s", "p50", "p99", "p99.9", "errors", "misses"
            );
            for o in &self.per_op {
                let _ = writeln!(
                    s,
                    "  {:<8} {:>10} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    o.op,
                    o.ops,
                    o.ops_per_sec,
                    o.latency.p50_us,
                    o.latency.p99_us,
                    o.latency.p999_us,
                    o.errors,
                    o.misses
                );
            }
        }
        if let Some(r) = &self.replace {
            let _ = writeln!(
                s,
                "  read-then-replace: {} replaced, {} version conflicts, {} read misses",
                r.success, r.version_conflict, r.read_miss
            );
        }
        if let Some(c) = &self.cpu_us_per_op {
            let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "  CPU per op (µs): server {}, database {}, generator {}",
                f(c.server),
                f(c.db),
                f(c.client)
            );
        }
        match (self.server_pid, self.server_peak_rss_kib) {
            (Some(pid), Some(hwm)) => {
                let _ = writeln!(
                    s,
                    "  server pid {pid}: peak RSS {:.1} MiB (now {:.1} MiB)",
                    hwm as f64 / 1024.0,
                    self.server_rss_kib.unwrap_or(0) as f64 / 1024.0
                );
            }
            (Some(pid), None) => {
                let _ = writeln!(s, "  server pid {pid}: RSS not readable");
            }
            _ => {}
        }
        s
    }
}

/// `(VmHWM, VmRSS)` in KiB from `/proc/PID/status`.
pub fn read_rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss(&status)
}

fn parse_rss(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=99 {
            a.record(OpKind::Get, Duration::from_micros(i), false, false);
        }
        b.record(OpKind::Get, Duration::from_micros(10_000), true, false);
        b.record(OpKind::Put, Duration::from_nanos(10), false, true);
        b.record_error_status(0x85);
        b.requests = 2;
        b.connection_errors = 1;
        a.merge(&b);
        assert_eq!(a.total_ops(), 101);
        assert_eq!(a.total_errors(), 2);
        assert_eq!(a.kind(OpKind::Get).unwrap().ops, 100);
        assert_eq!(a.kind(OpKind::Put).unwrap().misses, 1);
        // sub-microsecond samples count as 1 µs
        assert_eq!(a.kind(OpKind::Put).unwrap().latency.min(), 1);
        assert_eq!(a.error_statuses[&0x85], 1);
        let l = Latency::of(&a.kind(OpKind::Get).unwrap().latency);
        assert_eq!(l.p50_us, 50);
        assert_eq!(l.p99_us, 99);
        assert!(l.max_us >= 10_000 && l.max_us < 10_010);
        let all = a.overall_latency();
        assert_eq!(all.len(), 101);
    }

    #[test]
    fn report_fill_and_json() {
        let mut s = Stats::default();
        for _ in 0..1000 {
            s.record(OpKind::Replace, Duration::from_micros(200), false, false);
        }
        s.replace_success = 900;
        s.replace_conflict = 100;
        s.requests = 2000;
        let mut r = Report {
            addr: "127.0.0.1:1".into(),
            cache: String::new(),
            protocol: "4.1".into(),
            mix: "replace=1".into(),
            connections: 1,
            pipeline: 1,
            keys: 10,
            value_size: 1,
            threads: 1,
            warmup_s: 0.0,
            duration_s: 2.0,
            preload_s: None,
            preload_ops_per_sec: None,
            ops: 0,
            ops_per_sec: 0.0,
            requests: 0,
            requests_per_sec: 0.0,
            errors: 0,
            connection_errors: 0,
            error_statuses: BTreeMap::new(),
            latency: Latency::of(&new_histogram()),
            per_op: Vec::new(),
            replace: None,
            server_pid: None,
            cpu_us_per_op: None,
            server_peak_rss_kib: None,
            server_rss_kib: None,
        };
        r.fill_from(&s, Duration::from_secs(2));
        assert_eq!(r.ops_per_sec, 500.0);
        assert_eq!(r.requests_per_sec, 1000.0);
        assert_eq!(r.replace.as_ref().unwrap().version_conflict, 100);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["latency"]["p50_us"], 200);
        assert_eq!(v["per_op"][0]["op"], "replace");
        assert!(r.to_text().contains("100 version conflicts"));
    }

    #[test]
    fn rss_from_proc_status() {
        let stat = "4242 (tokio rt) worker) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_stat(stat), Some((17, 300)));
        let status = "Name:\tferrod\nVmPeak:\t  100 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_rss(status), Some((51200, 40960)));
        assert_eq!(parse_rss("Name: x\n"), None);
        // our own process always has one
        assert!(read_rss(std::process::id()).is_some());
    }
}
