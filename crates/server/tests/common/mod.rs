//! Harness for the server's integration tests: the real `ferrod` binary as a child process on a
//! free port with its own temporary directory, and a raw HotRod client built on the codec.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrod_codec::{
    flags, op, status, Duration as WireDuration, EntryMetadata, Expiration, Incoming, MediaType,
    Request, RequestFrame, RequestHeader, Response, ResponseBody, TimeUnit,
};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Framed};

pub use ferrod_codec::ClientCodec;

/// How long any single response may take before a test fails instead of hanging.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------------------
// Server process
// ------------------------------------------------------------------------------------------------

/// Options for one server; `Default` is an SQLite database in the temp dir and no config file.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Contents of `ferrod.toml` (e.g. `[[cache]]` tables); `None` = no `--config`.
    pub config_toml: Option<String>,
    /// Database URL; `None` = `sqlite://DIR/ferrod.db`.
    pub database_url: Option<String>,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    /// Run with ferrod's default log filter (no `FERROD_LOG`); else `FERROD_LOG=info`.
    pub default_log: bool,
}

impl ServerOpts {
    pub fn with_config(toml: &str) -> Self {
        ServerOpts {
            config_toml: Some(toml.to_string()),
            ..Default::default()
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_string());
        self
    }

    /// Leave `FERROD_LOG` unset, so ferrod's own default filter applies.
    pub fn default_log(mut self) -> Self {
        self.default_log = true;
        self
    }

    pub fn database(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }
}

pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub database_url: String,
    args: Vec<String>,
    default_log: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(ServerOpts::default()).await
    }

    pub async fn start_with(opts: ServerOpts) -> Server {
        let mut dir = tempfile::tempdir().expect("tempdir");
        let database_url = opts
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("ferrod.db").display()));
        // A free port can be taken by someone else between probing and binding: retry then.
        for attempt in 0.. {
            let port = free_port();
            let mut args = vec![
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--database-url".to_string(),
                database_url.clone(),
            ];
            if let Some(toml) = &opts.config_toml {
                let p = dir.path().join("ferrod.toml");
                std::fs::write(&p, toml).expect("write config");
                args.push("--config".into());
                args.push(p.display().to_string());
            }
            args.extend(opts.extra_args.iter().cloned());
            let mut server = Server {
                child: None,
                dir,
                port,
                database_url: database_url.clone(),
                args,
                default_log: opts.default_log,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(e) if attempt < 3 && e.contains("cannot listen") => {
                    dir = server.into_dir();
                    continue;
                }
                Err(e) => panic!("ferrod did not start: {e}\n--- log ---\n{}", server.log()),
            }
        }
        unreachable!()
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        self.kill9();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ferrod.log")
    }

    /// Everything the server wrote to stderr over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        // Ready means this run logged that it is listening. A successful connect alone is not
        // enough: until the server binds, the port is free, and a connect can reach whoever
        // else took it meanwhile, or even the connecting socket itself (TCP self-connect when
        // the kernel picks the same port as the source), and the test's first request then
        // meets a reset.
        const READY: &str = "ferrod ready on";
        let readies_before = self.log().matches(READY).count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferrod"));
        command.env_remove("FERROD_CONFIG");
        if self.default_log {
            command.env_remove("FERROD_LOG");
        } else {
            command.env("FERROD_LOG", "info");
        }
        let child = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = self.log();
                let reason = if log.contains("cannot listen") {
                    "cannot listen"
                } else {
                    "exited"
                };
                return Err(format!("{reason} ({st})"));
            }
            if self.log().matches(READY).count() > readies_before
                && TcpStream::connect(self.addr()).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("not ready (listening and accepting connections) within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of our own child process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Sends SIGTERM without waiting (see [`Server::wait_exit`]).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// The exit status once the process ended; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop (SIGTERM); panics if the process does not exit within 30 s or fails.
    pub async fn stop(&mut self) {
        self.sigterm();
        self.expect_graceful_exit().await;
    }

    /// After a SIGTERM: panics if the process does not exit within 30 s or fails.
    pub async fn expect_graceful_exit(&mut self) {
        match self.wait_exit(Duration::from_secs(30)).await {
            Some(st) => assert!(st.success(), "ferrod exited with {st}\n{}", self.log()),
            None => panic!("ferrod did not stop within 30 s of SIGTERM\n{}", self.log()),
        }
    }

    /// SIGKILL: the process dies at whatever instant it is in.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the binary again with the same arguments (same port, database and config).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        // The old listener's port can linger briefly; retry for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) if e.contains("cannot listen") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("ferrod did not restart: {e}\n{}", self.log()),
            }
        }
    }

    /// Whether the process is still alive (it did not crash).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn assert_running(&mut self) {
        assert!(self.is_running(), "ferrod died\n{}", self.log());
    }

    /// Resident set size of the server process in KiB (Linux /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr()).await
    }

    pub async fn client_v(&self, version: u8) -> Client {
        let mut c = Client::connect(&self.addr()).await;
        c.version = version;
        c
    }

    pub async fn raw(&self) -> TcpStream {
        TcpStream::connect(self.addr()).await.expect("connect")
    }

    pub fn db_path(&self) -> PathBuf {
        PathBuf::from(self.database_url.trim_start_matches("sqlite://"))
    }

    /// Another connection to this server's SQLite file holding its write lock (BEGIN EXCLUSIVE)
    /// until it is rolled back or closed: the server's writes wait for it.
    pub async fn hold_sqlite_write_lock(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let url = format!("sqlite://{}", self.db_path().display());
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .unwrap();
        other
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------------------------------------------
// Client
// ------------------------------------------------------------------------------------------------

static MESSAGE_IDS: AtomicU64 = AtomicU64::new(1);

pub struct Client {
    pub framed: Framed<TcpStream, ClientCodec>,
    /// Protocol version of the requests this client sends.
    pub version: u8,
    /// Cache name of the requests ("" = default cache).
    pub cache: String,
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A 2.2+ expiration of `lifespan` and `max_idle`, each `None` = infinite.
pub fn exp_ms(lifespan: Option<u64>, max_idle: Option<u64>) -> Expiration {
    let d = |x: Option<u64>| match x {
        Some(ms) => WireDuration::Amount(ms, TimeUnit::Milliseconds),
        None => WireDuration::Infinite,
    };
    Expiration::Units {
        lifespan: d(lifespan),
        max_idle: d(max_idle),
    }
}

pub fn exp_secs(lifespan: Option<u64>, max_idle: Option<u64>) -> Expiration {
    let d = |x: Option<u64>| match x {
        Some(s) => WireDuration::Amount(s, TimeUnit::Seconds),
        None => WireDuration::Infinite,
    };
    Expiration::Units {
        lifespan: d(lifespan),
        max_idle: d(max_idle),
    }
}

/// What a plain `put(k, v)` of the Java client sends: the cache's defaults.
pub const EXP_DEFAULT: Expiration = Expiration::DEFAULT;

impl Client {
    pub async fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            framed: Framed::new(stream, ClientCodec::new()),
            version: 41,
            cache: String::new(),
        }
    }

    pub fn with_cache(mut self, cache: &str) -> Self {
        self.cache = cache.to_string();
        self
    }

    pub fn next_id() -> u64 {
        MESSAGE_IDS.fetch_add(1, Ordering::Relaxed)
    }

    pub fn header(&self, opcode: u8, flags: u32) -> RequestHeader {
        let mut h = RequestHeader::new(self.version, opcode, Client::next_id(), &self.cache);
        h.flags = flags;
        h
    }

    pub fn frame(&self, request: Request, flags: u32) -> RequestFrame {
        RequestFrame {
            header: self.header(request.opcode(), flags),
            request,
        }
    }

    pub async fn send(&mut self, frame: RequestFrame) {
        self.framed.send(frame).await.expect("send");
    }

    /// The next frame from the server; panics on timeout, EOF or a decode error.
    pub async fn recv(&mut self) -> Response {
        match self.try_recv().await {
            Some(Ok(Incoming::Response(r))) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub async fn try_recv(&mut self) -> Option<Result<Incoming, ferrod_codec::CodecError>> {
        tokio::time::timeout(CALL_TIMEOUT, self.framed.next())
            .await
            .expect("timed out waiting for the server")
    }

    /// Sends one frame and returns its response (checking the message id is echoed).
    pub async fn call(&mut self, frame: RequestFrame) -> Response {
        let id = frame.header.message_id;
        self.send(frame).await;
        let r = self.recv().await;
        assert_eq!(r.header.message_id, id, "message id not echoed: {r:?}");
        r
    }

    pub async fn req(&mut self, request: Request) -> Response {
        let f = self.frame(request, 0);
        self.call(f).await
    }

    pub async fn req_flags(&mut self, request: Request, flags: u32) -> Response {
        let f = self.frame(request, flags);
        self.call(f).await
    }

    // --- per-op helpers ------------------------------------------------------------------------

    pub async fn put_exp(&mut self, k: &str, v: &str, expiration: Expiration) -> Response {
        self.req(Request::Put {
            key: b(k),
            expiration,
            value: b(v),
        })
        .await
    }

    /// Plain put (cache defaults); asserts success.
    pub async fn put(&mut self, k: &str, v: &str) {
        let r = self.put_exp(k, v, EXP_DEFAULT).await;
        assert_eq!(r.header.status, status::SUCCESS, "put {k}: {r:?}");
    }

    pub async fn put_bytes(&mut self, k: Bytes, v: Bytes) -> Response {
        self.req(Request::Put {
            key: k,
            expiration: EXP_DEFAULT,
            value: v,
        })
        .await
    }

    pub async fn get(&mut self, k: &str) -> Option<Bytes> {
        self.get_bytes(b(k)).await
    }

    pub async fn get_bytes(&mut self, k: Bytes) -> Option<Bytes> {
        let r = self.req(Request::Get { key: k }).await;
        match (r.header.status, r.body) {
            (status::SUCCESS, ResponseBody::Value(v)) => Some(v),
            (status::KEY_DOES_NOT_EXIST, ResponseBody::Empty) => None,
            (st, body) => panic!("GET: unexpected status 0x{st:02X} body {body:?}"),
        }
    }

    pub async fn get_str(&mut self, k: &str) -> Option<String> {
        self.get(k)
            .await
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    pub async fn get_with_version(&mut self, k: &str) -> Option<(i64, Bytes)> {
        let r = self.req(Request::GetWithVersion { key: b(k) }).await;
        match (r.header.status, r.body) {
            (status::SUCCESS, ResponseBody::Versioned { version, value }) => Some((version, value)),
            (status::KEY_DOES_NOT_EXIST, ResponseBody::Empty) => None,
            (st, body) => panic!("GET_WITH_VERSION: unexpected 0x{st:02X} {body:?}"),
        }
    }

    pub async fn version_of(&mut self, k: &str) -> Option<i64> {
        self.get_with_version(k).await.map(|(v, _)| v)
    }

    pub async fn get_with_metadata(&mut self, k: &str) -> Option<(EntryMetadata, Bytes)> {
        let r = self.req(Request::GetWithMetadata { key: b(k) }).await;
        match (r.header.status, r.body) {
            (status::SUCCESS, ResponseBody::WithMetadata { metadata, value }) => {
                Some((metadata, value))
            }
            (status::KEY_DOES_NOT_EXIST, ResponseBody::Empty) => None,
            (st, body) => panic!("GET_WITH_METADATA: unexpected 0x{st:02X} {body:?}"),
        }
    }

    pub async fn contains(&mut self, k: &str) -> bool {
        let r = self.req(Request::ContainsKey { key: b(k) }).await;
        match r.header.status {
            status::SUCCESS => true,
            status::KEY_DOES_NOT_EXIST => false,
            st => panic!("CONTAINS_KEY: unexpected 0x{st:02X} {r:?}"),
        }
    }

    pub async fn size(&mut self) -> u64 {
        let r = self.req(Request::Size).await;
        match r.body {
            ResponseBody::Size(n) => n,
            other => panic!("SIZE: {other:?}"),
        }
    }

    pub async fn clear(&mut self) {
        let r = self.req(Request::Clear).await;
        assert_eq!(r.header.status, status::SUCCESS, "{r:?}");
    }

    pub async fn ping(&mut self) -> Response {
        self.req(Request::Ping).await
    }

    pub async fn stats(&mut self) -> Vec<(String, String)> {
        match self.req(Request::Stats).await.body {
            ResponseBody::Stats(s) => s,
            other => panic!("STATS: {other:?}"),
        }
    }

    pub async fn exec(&mut self, task: &str, params: &[(&str, &str)]) -> Response {
        self.req(Request::Exec {
            task: task.to_string(),
            params: params.iter().map(|(k, v)| (k.to_string(), b(v))).collect(),
        })
        .await
    }

    /// All entries through ITERATION_START/NEXT/END; returns (entries, number of batches).
    pub async fn iterate_all(
        &mut self,
        batch_size: u32,
        include_metadata: bool,
        filter: Option<ferrod_codec::Factory>,
    ) -> (Vec<ferrod_codec::IterationEntry>, usize) {
        let r = self
            .req(Request::IterationStart {
                segments: None,
                filter_converter: filter,
                batch_size,
                include_metadata,
            })
            .await;
        let id = match r.body {
            ResponseBody::IterationId(id) => id,
            other => panic!("ITERATION_START: {other:?} ({r:?})", r = r.header),
        };
        let mut all = Vec::new();
        let mut batches = 0;
        loop {
            let r = self
                .req(Request::IterationNext {
                    iteration_id: id.clone(),
                })
                .await;
            assert_eq!(r.header.status, status::SUCCESS, "{r:?}");
            let ResponseBody::IterationBatch { entries, .. } = r.body else {
                panic!("ITERATION_NEXT body {:?}", r.body)
            };
            if entries.is_empty() {
                break;
            }
            assert!(entries.len() <= batch_size as usize);
            batches += 1;
            all.extend(entries);
        }
        let r = self.req(Request::IterationEnd { iteration_id: id }).await;
        assert_eq!(r.header.status, status::SUCCESS, "{r:?}");
        (all, batches)
    }
}

/// Asserts an error response with `status` whose message contains `needle`.
#[track_caller]
pub fn assert_error(r: &Response, st: u8, needle: &str) {
    assert_eq!(r.header.opcode, op::ERROR_RESPONSE, "not an error: {r:?}");
    assert_eq!(r.header.status, st, "wrong status: {r:?}");
    match &r.body {
        ResponseBody::Error(msg) => assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "error message {msg:?} lacks {needle:?}"
        ),
        other => panic!("error without message: {other:?}"),
    }
}

#[track_caller]
pub fn assert_status(r: &Response, st: u8) {
    assert_eq!(
        r.header.status, st,
        "expected status 0x{st:02X}, got 0x{:02X}: {r:?}",
        r.header.status
    );
}

pub fn media_id(m: &MediaType) -> Option<u32> {
    match m {
        MediaType::Predefined { id, .. } => Some(*id),
        _ => None,
    }
}

pub fn encode(frame: &RequestFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame.write(&mut buf);
    buf
}

/// Writes raw bytes on a fresh connection (optionally half-closing it), then reads whatever the
/// server answers until it closes the connection or `wait` passes.
/// Returns the raw bytes read and whether the server closed the connection.
pub async fn raw_exchange(
    stream: &mut TcpStream,
    bytes: &[u8],
    half_close: bool,
    wait: Duration,
) -> (Vec<u8>, bool) {
    stream.write_all(bytes).await.expect("write");
    if half_close {
        stream.shutdown().await.expect("shutdown");
    }
    read_until_close(stream, wait).await
}

pub async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            // A reset after the server closed with unread input counts as closed.
            Ok(Err(_)) => return (out, true),
        }
    }
}

/// Decodes the response frames in `bytes` with a client codec primed with `pending` requests.
pub fn decode_all(bytes: &[u8], pending: &[RequestFrame]) -> Vec<Response> {
    let mut codec = ClientCodec::new();
    let mut sink = BytesMut::new();
    for f in pending {
        tokio_util::codec::Encoder::encode(&mut codec, f.clone(), &mut sink).unwrap();
    }
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(item) = codec.decode(&mut buf).expect("undecodable response") {
        match item {
            Incoming::Response(r) => out.push(r),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(buf.is_empty(), "trailing bytes after responses: {buf:?}");
    out
}

// ------------------------------------------------------------------------------------------------
// PostgreSQL
// ------------------------------------------------------------------------------------------------

/// A fresh PostgreSQL database for one test, dropped when this guard is dropped.
pub struct PgDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDb {
    /// `None` (with a notice) when `FERROD_TEST_PG_URL` is not set.
    pub async fn create(test: &str) -> Option<PgDb> {
        let Ok(base) = std::env::var("FERROD_TEST_PG_URL") else {
            eprintln!("NOTICE: FERROD_TEST_PG_URL is not set; skipping PostgreSQL test {test}");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "ferrod_it_{}_{}_{}",
            test.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(20)
                .collect::<String>(),
            std::process::id(),
            nanos % 1_000_000_000
        )
        .to_lowercase();
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("connect to FERROD_TEST_PG_URL");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let url = replace_db(&base, &name);
        Some(PgDb {
            url,
            admin_url: base,
            name,
        })
    }
}

/// The URL with its database path replaced by `db` (query string kept).
pub fn replace_db(url: &str, db: &str) -> String {
    let (main, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let after_scheme = main.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match main[after_scheme..].find('/') {
        Some(slash) => &main[..after_scheme + slash],
        None => main,
    };
    format!("{base}/{db}{query}")
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Dropping needs async; a throwaway runtime on another thread keeps this usable from
        // inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut c)
                            .await;
                    let _ = c.close().await;
                }
            })
        })
        .join();
    }
}

pub fn pg_url_set() -> bool {
    std::env::var("FERROD_TEST_PG_URL").is_ok()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub const FRV: u32 = flags::FORCE_RETURN_VALUE;

/// A connection opened before the bad input, checked afterwards.
pub async fn sentinel(server: &Server) -> Client {
    let mut c = server.client_v(40).await;
    c.put("sentinel", "alive").await;
    c
}

pub async fn check_alive(server: &mut Server, c: &mut Client) {
    server.assert_running();
    c.put("sentinel", "still-alive").await;
    assert_eq!(c.get_str("sentinel").await.as_deref(), Some("still-alive"));
    // And new connections are accepted.
    let mut fresh = server.client().await;
    assert_eq!(
        fresh.get_str("sentinel").await.as_deref(),
        Some("still-alive")
    );
}
