//! The database goes away mid-load and comes back, with both engines: a PostgreSQL cluster that
//! is stopped, and an SQLite file whose filesystem is full. Throughout, writes fail with a server
//! error naming the database (never a lost connection), reads are served from memory, no
//! acknowledged write is lost (checked against the database itself), memory never shows a write
//! the database does not have, and writes succeed again without restarting ferrod.
//!
//! sql_failure.rs covers single failing writes (a lock held, privileges revoked); the npm fault
//! suite restarts PostgreSQL under two replicas. This file keeps the outage in the Rust suite,
//! long enough for writes to fail, and adds the full-disk case.
//!
//! Both tests need root (mount(8) for the small filesystem, pg_ctlcluster for a PostgreSQL
//! cluster of their own, `ferrodoutage`, never the shared ones); without it they say so and pass.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferrod_codec::{status, Request, ResponseBody};
use sqlx::Row;

/// A write during a PostgreSQL outage waits for the pool's acquire timeout (30 s) before it
/// fails, and the writer retries a failed BEGIN up to 6 times: up to about 3 minutes today.
const WRITE_WAIT: Duration = Duration::from_secs(300);
const WRITERS: usize = 4;

const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

#[derive(Debug, Clone)]
struct Outcome {
    key: Bytes,
    value: Bytes,
    /// Phase when the write was sent.
    sent: u8,
    /// Phase when its answer arrived.
    answered: u8,
    result: Result<(), String>,
}

#[derive(Default)]
struct Log {
    outcomes: Vec<Outcome>,
    /// Requests that got no answer (connection lost, timeout): must stay empty.
    lost: Vec<String>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

async fn writer(
    addr: String,
    t: usize,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
) -> Log {
    let mut c = Client::connect(&addr).await;
    let mut log = Log::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = Bytes::from(format!("w{t}-{i}"));
        // Big enough that a full filesystem is reached quickly.
        let value = Bytes::from(format!("{t}-{i}-{}", "x".repeat(2000)));
        let sent = phase.load(Ordering::SeqCst);
        let frame = c.frame(
            Request::Put {
                key: key.clone(),
                expiration: EXP_DEFAULT,
                value: value.clone(),
            },
            0,
        );
        let id = frame.header.message_id;
        if let Err(e) = futures::SinkExt::send(&mut c.framed, frame).await {
            log.lost.push(format!("send {key:?}: {e}"));
            return log;
        }
        let answer =
            tokio::time::timeout(WRITE_WAIT, futures::StreamExt::next(&mut c.framed)).await;
        let answered = phase.load(Ordering::SeqCst);
        let r = match answer {
            Ok(Some(Ok(ferrod_codec::Incoming::Response(r)))) => r,
            other => {
                log.lost
                    .push(format!("PUT {key:?} (sent in phase {sent}): {other:?}"));
                return log;
            }
        };
        assert_eq!(r.header.message_id, id);
        let result = if r.header.status == status::SUCCESS {
            Ok(())
        } else {
            match &r.body {
                ResponseBody::Error(m) => Err(format!("0x{:02X} {m}", r.header.status)),
                other => Err(format!("0x{:02X} {other:?}", r.header.status)),
            }
        };
        let failed = result.is_err();
        log.outcomes.push(Outcome {
            key,
            value,
            sent,
            answered,
            result,
        });
        if failed {
            failures.fetch_add(1, Ordering::SeqCst);
            // Do not spin on a fast failure (SQLite).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log
}

/// What the database holds for `keys` (default cache), read with its own connection.
async fn rows(url: &str, keys: &[Bytes]) -> HashMap<Bytes, Bytes> {
    let mut out = HashMap::new();
    if url.starts_with("sqlite:") {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        for k in keys {
            let r =
                sqlx::query("SELECT value FROM ferrod_entries WHERE cache = 'default' AND key = ?")
                    .bind(&k[..])
                    .fetch_optional(&mut c)
                    .await
                    .expect("select");
            if let Some(r) = r {
                out.insert(k.clone(), Bytes::from(r.get::<Vec<u8>, _>(0)));
            }
        }
    } else {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        for k in keys {
            let r = sqlx::query(
                "SELECT value FROM ferrod_entries WHERE cache = 'default' AND key = $1",
            )
            .bind(&k[..])
            .fetch_optional(&mut c)
            .await
            .expect("select");
            if let Some(r) = r {
                out.insert(k.clone(), Bytes::from(r.get::<Vec<u8>, _>(0)));
            }
        }
    }
    out
}

/// Drives the load through an outage that `down` starts and `up` ends, and checks the rules.
async fn outage_under_load<D, U>(server: &mut Server, down: D, up: U)
where
    D: std::future::Future<Output = ()>,
    U: std::future::Future<Output = ()>,
{
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            tokio::spawn(writer(
                server.addr(),
                t,
                phase.clone(),
                stop.clone(),
                failures.clone(),
            ))
        })
        .collect();
    // Keys acknowledged before the outage, read back during it by their own connection.
    let mut reader = server.client().await;
    let mut existing = Vec::new();
    for i in 0..50 {
        let k = format!("before-{i}");
        reader.put(&k, &format!("value-{i}")).await;
        existing.push((k, format!("value-{i}")));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    phase.store(DURING, Ordering::SeqCst);
    down.await;
    // Wait for writes to fail (a PostgreSQL write waits for the pool's acquire timeout first),
    // reading the existing keys from memory meanwhile.
    let mut reads = 0;
    let mut write_failed = false;
    let outage_deadline = tokio::time::Instant::now() + WRITE_WAIT;
    while !write_failed {
        assert!(
            tokio::time::Instant::now() < outage_deadline,
            "no write failed during the outage\n{}",
            server.log()
        );
        for (k, v) in &existing {
            let got = tokio::time::timeout(Duration::from_secs(5), reader.get_str(k))
                .await
                .expect("a read during the outage waited: reads are served from memory");
            assert_eq!(got.as_deref(), Some(v.as_str()), "{k} during the outage");
            reads += 1;
        }
        let st = tokio::time::timeout(Duration::from_secs(5), reader.stats()).await;
        assert!(st.is_ok(), "STATS during the outage waited");
        tokio::time::sleep(Duration::from_millis(500)).await;
        write_failed = failures.load(Ordering::SeqCst) > 0;
    }
    // Give every writer time to see its own failure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("{reads} reads served from memory during the outage");
    server.assert_running();

    phase.store(AFTER, Ordering::SeqCst);
    up.await;
    // Recovery by itself: a write sent after the database came back is acknowledged.
    let recover_deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut recovered = false;
    let mut n = 0;
    while tokio::time::Instant::now() < recover_deadline {
        n += 1;
        // A fresh connection per attempt: an attempt that hangs is abandoned, not waited for.
        let mut probe = server.client().await;
        let frame = probe.frame(
            Request::Put {
                key: Bytes::from(format!("after-{n}")),
                expiration: EXP_DEFAULT,
                value: Bytes::from_static(b"back"),
            },
            0,
        );
        probe.send(frame).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut probe.framed),
        )
        .await;
        if let Ok(Some(Ok(ferrod_codec::Incoming::Response(r)))) = answer {
            if r.header.status == status::SUCCESS {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "writes did not succeed again\n{}", server.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for h in handles {
        logs.push(h.await.expect("writer task"));
    }
    server.assert_running();

    // No connection was lost, and every failure was a server error naming the database.
    let outcomes: Vec<Outcome> = logs.iter().flat_map(|l| l.outcomes.clone()).collect();
    let lost: Vec<&String> = logs.iter().flat_map(|l| &l.lost).collect();
    assert!(lost.is_empty(), "requests without an answer: {lost:?}");
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(!failed.is_empty(), "no write failed during the outage");
    for o in &failed {
        let e = o.result.as_ref().unwrap_err();
        assert!(
            e.starts_with(&format!("0x{:02X}", status::SERVER_ERROR))
                && e.to_lowercase().contains("database"),
            "a failed write's error does not name the database: {e}"
        );
        assert!(
            o.sent != BEFORE || o.answered != BEFORE,
            "a write failed before the outage: {o:?}"
        );
    }
    let acked: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    assert!(
        acked.iter().any(|o| o.sent == AFTER),
        "no writer recovered by itself"
    );
    eprintln!(
        "{} writes acknowledged, {} failed ({} sent during the outage)",
        acked.len(),
        failed.len(),
        outcomes.iter().filter(|o| o.sent == DURING).count()
    );

    // Every acknowledged write is in the database; memory shows no write the database lacks.
    let keys: Vec<Bytes> = outcomes.iter().map(|o| o.key.clone()).collect();
    let db = rows(&server.database_url, &keys).await;
    for o in &acked {
        assert_eq!(
            db.get(&o.key),
            Some(&o.value),
            "acknowledged write of {:?} (sent in phase {}) is not in the database",
            o.key,
            o.sent
        );
    }
    let mut c = server.client().await;
    for o in &failed {
        let mem = c.get_bytes(o.key.clone()).await;
        assert_eq!(
            mem.as_ref(),
            db.get(&o.key),
            "memory and database disagree on {:?}, whose write failed",
            o.key
        );
    }
    for (k, v) in &existing {
        assert_eq!(c.get_str(k).await.as_deref(), Some(v.as_str()));
    }
    // And a restart loads the same.
    server.stop().await;
    server.restart().await;
    let mut c = server.client().await;
    for o in acked.iter().take(200) {
        assert_eq!(c.get_bytes(o.key.clone()).await.as_ref(), Some(&o.value));
    }
}

// ------------------------------------------------------------------------------------------------
// SQLite on a full filesystem
// ------------------------------------------------------------------------------------------------

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallFs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem at `dir` with one file, to the last byte.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).expect("filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let small = [0u8; 1];
    while f.write(&small).is_ok_and(|n| n == 1) {}
    let _ = f.sync_all();
    p
}

/// SQLite's writes fail with SQLITE_FULL on a real full filesystem (a 16 MiB tmpfs filled up by
/// another file), then succeed once that file is removed.
#[tokio::test]
async fn sqlite_on_a_full_filesystem_fails_writes_serves_reads_and_recovers() {
    if !is_root() {
        eprintln!("NOTICE: skipping: mounting a small filesystem needs root");
        return;
    }
    let Some(fs) = SmallFs::mount("16m") else {
        eprintln!("NOTICE: skipping: mount -t tmpfs is not permitted here");
        return;
    };
    let url = format!("sqlite://{}", fs.path().join("ferrod.db").display());
    let mut server = Server::start_with(ServerOpts::default().database(&url)).await;
    let dir = fs.path().to_path_buf();
    let filler = Arc::new(Mutex::new(None));
    let f2 = filler.clone();
    let d2 = dir.clone();
    outage_under_load(
        &mut server,
        async move {
            let p = tokio::task::spawn_blocking(move || fill(&d2))
                .await
                .unwrap();
            *f2.lock().unwrap() = Some(p);
        },
        async move {
            let p = filler.lock().unwrap().take().expect("filler");
            std::fs::remove_file(p).expect("remove filler");
        },
    )
    .await;
    assert!(
        server.log().to_lowercase().contains("full"),
        "the server log names the cause (disk full)"
    );
    server.kill9();
    drop(fs);
}

// ------------------------------------------------------------------------------------------------
// PostgreSQL stopped
// ------------------------------------------------------------------------------------------------

const CLUSTER: &str = "ferrodoutage";
const PG_VERSION: &str = "15";

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn psql(port: u16, sql: &str) -> Result<String, String> {
    run(
        "su",
        &[
            "postgres",
            "-c",
            &format!("psql -p {port} -v ON_ERROR_STOP=1 -qtA -c \"{sql}\""),
        ],
    )
}

/// The port of the `ferrodoutage` cluster, created (on a free port) and started if needed.
async fn outage_cluster() -> Result<u16, String> {
    let find = || -> Result<Option<(u16, bool)>, String> {
        let list = run("pg_lsclusters", &["-h"])?;
        Ok(list.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[0] == PG_VERSION && f[1] == CLUSTER)
                .then(|| (f[2].parse().unwrap_or(0), f[3] == "online"))
        }))
    };
    let port = match find()? {
        Some((port, _)) => port,
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            run(
                "pg_createcluster",
                &[PG_VERSION, CLUSTER, "-p", &port.to_string()],
            )?;
            port
        }
    };
    if !find()?.is_some_and(|(_, online)| online) {
        run("pg_ctlcluster", &[PG_VERSION, CLUSTER, "start"])?;
    }
    for _ in 0..60 {
        if psql(port, "select 1").is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if psql(port, "select 1 from pg_roles where rolname='ferrod'")?.trim() != "1" {
        psql(port, "create role ferrod login createdb password 'ferrod'")?;
    }
    Ok(port)
}

#[tokio::test]
async fn postgres_stopped_mid_load_fails_writes_serves_reads_and_recovers() {
    if !is_root() || !std::path::Path::new("/usr/bin/pg_ctlcluster").exists() {
        eprintln!(
            "NOTICE: skipping: needs root and pg_ctlcluster (a PostgreSQL cluster of its own)"
        );
        return;
    }
    let port = match outage_cluster().await {
        Ok(p) => p,
        Err(e) => panic!("cannot set up the {CLUSTER} cluster: {e}"),
    };
    let db = format!("ferrod_hardening_outage_{}", std::process::id());
    psql(port, &format!("drop database if exists {db} with (force)")).unwrap();
    psql(port, &format!("create database {db} owner ferrod")).unwrap();
    let url = format!("postgres://ferrod:ferrod@127.0.0.1:{port}/{db}");
    let mut server = Server::start_with(ServerOpts::default().database(&url)).await;
    let stop = || {
        run(
            "pg_ctlcluster",
            &[PG_VERSION, CLUSTER, "stop", "-m", "fast"],
        )
    };
    let start = || run("pg_ctlcluster", &[PG_VERSION, CLUSTER, "start"]);
    // However the test ends, the cluster is left running for the cleanup below.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            let _ = run("pg_ctlcluster", &[PG_VERSION, CLUSTER, "start"]);
        }
    }
    let guard = Restart;
    outage_under_load(
        &mut server,
        async move {
            stop().expect("stop PostgreSQL");
        },
        async move {
            start().expect("start PostgreSQL");
        },
    )
    .await;
    server.kill9();
    drop(guard);
    let _ = psql(port, &format!("drop database if exists {db} with (force)"));
    // The cluster is this test's alone: stop it so it holds no memory between runs.
    let _ = run(
        "pg_ctlcluster",
        &[PG_VERSION, CLUSTER, "stop", "-m", "fast"],
    );
}
