//! One task per connection: raw HotRod over tokio TCP with ferrod-codec's `ClientCodec`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrod_codec::{
    status, ClientCodec, Expiration, Incoming, Request, RequestFrame, RequestHeader, Response,
    ResponseBody,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_util::codec::Framed;

use crate::mix::{Mix, OpKind};
use crate::rng::Rng;
use crate::stats::Stats;

/// What every connection shares.
pub struct Shared {
    pub addr: String,
    pub cache: String,
    pub version: u8,
    pub keys: Vec<Bytes>,
    pub value: Bytes,
    pub mix: Mix,
    pub pipeline: usize,
    /// Expiration of PUT_IF_ABSENT (Keycloak-like sessions: a lifespan in ms).
    pub pia_expiration: Expiration,
    /// Makes fresh keys unique to this run.
    pub run_tag: u64,
}

/// The measured window: ops that start before `measure_start` (warmup) or finish after `end`
/// are not counted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub measure_start: Instant,
    pub end: Instant,
}

pub type Conn = Framed<TcpStream, ClientCodec>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn connect(addr: &str) -> std::io::Result<Conn> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Framed::new(stream, ClientCodec::new()))
}

pub fn frame(version: u8, cache: &str, message_id: u64, request: Request) -> RequestFrame {
    RequestFrame {
        header: RequestHeader::new(version, request.opcode(), message_id, cache),
        request,
    }
}

/// Opens a connection and PINGs it; returns the server's answer for the report.
pub async fn ping(addr: &str, version: u8, cache: &str) -> Result<Response, String> {
    let mut conn = connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    conn.send(frame(version, cache, 1, Request::Ping))
        .await
        .map_err(|e| format!("PING to {addr}: {e}"))?;
    match timeout(Duration::from_secs(10), conn.next()).await {
        Err(_) => Err(format!("no answer to PING from {addr} within 10 s")),
        Ok(None) => Err(format!("{addr} closed the connection after PING")),
        Ok(Some(Err(e))) => Err(format!("bad answer to PING from {addr}: {e}")),
        Ok(Some(Ok(Incoming::Response(r)))) => Ok(r),
        Ok(Some(Ok(other))) => Err(format!("unexpected frame after PING: {other:?}")),
    }
}

fn is_error(r: &Response) -> bool {
    status::is_error(r.header.status) || matches!(r.body, ResponseBody::Error(_))
}

/// Puts keys `id, id + stride, ...` once each with `pipeline` requests in flight.
/// Returns (puts acknowledged, errors).
pub async fn preload(
    shared: Arc<Shared>,
    id: usize,
    stride: usize,
    pipeline: usize,
) -> Result<(u64, u64), String> {
    let mut conn = connect(&shared.addr)
        .await
        .map_err(|e| format!("preload connect: {e}"))?;
    let mut next = id;
    let mut in_flight = 0usize;
    let mut message_id = 0u64;
    let (mut done, mut errors) = (0u64, 0u64);
    loop {
        while in_flight < pipeline && next < shared.keys.len() {
            message_id += 1;
            let req = Request::Put {
                key: shared.keys[next].clone(),
                expiration: Expiration::DEFAULT,
                value: shared.value.clone(),
            };
            conn.feed(frame(shared.version, &shared.cache, message_id, req))
                .await
                .map_err(|e| format!("preload send: {e}"))?;
            in_flight += 1;
            next += stride;
        }
        if in_flight == 0 {
            return Ok((done, errors));
        }
        conn.flush()
            .await
            .map_err(|e| format!("preload send: {e}"))?;
        match timeout(Duration::from_secs(60), conn.next()).await {
            Err(_) => return Err("preload: no answer within 60 s".into()),
            Ok(None) => return Err("preload: server closed the connection".into()),
            Ok(Some(Err(e))) => return Err(format!("preload: {e}")),
            Ok(Some(Ok(Incoming::Response(r)))) => {
                in_flight -= 1;
                done += 1;
                errors += u64::from(is_error(&r));
            }
            Ok(Some(Ok(_event))) => {}
        }
    }
}

#[derive(Debug)]
enum Stage {
    Single,
    /// First half of a read-then-replace: the GET_WITH_METADATA.
    ReplaceRead,
    /// Second half: the REPLACE_IF_UNMODIFIED.
    ReplaceWrite,
}

#[derive(Debug)]
struct Pending {
    kind: OpKind,
    stage: Stage,
    key: Bytes,
    started: Instant,
}

/// Keys this connection created with PUT_IF_ABSENT, oldest first. REMOVE takes them, so the
/// create/remove half of the mix churns its own keys and leaves the shared keyspace populated.
struct Keys {
    created: VecDeque<Bytes>,
    fresh_counter: u64,
}

struct Worker {
    shared: Arc<Shared>,
    id: usize,
    rng: Rng,
    keys: Keys,
    stats: Stats,
    window: Window,
    next_message_id: u64,
}

impl Worker {
    fn random_key(&mut self) -> Bytes {
        let n = self.shared.keys.len() as u64;
        self.shared.keys[(self.rng.next_u64() % n) as usize].clone()
    }

    fn message_id(&mut self) -> u64 {
        self.next_message_id += 1;
        self.next_message_id
    }

    /// Chooses the next operation and builds its first request.
    fn start_op(&mut self) -> (u64, RequestFrame, Pending) {
        let mut kind = self.shared.mix.pick(self.rng.next_u64());
        // Nothing of ours to remove yet: create instead. Over a run this shifts O(sqrt(n)) ops
        // from REMOVE to PUT_IF_ABSENT and keeps every REMOVE a real delete.
        if kind == OpKind::Remove
            && self.keys.created.is_empty()
            && self.shared.mix.contains(OpKind::PutIfAbsent)
        {
            kind = OpKind::PutIfAbsent;
        }
        let (stage, key, request) = match kind {
            OpKind::Get => {
                let key = self.random_key();
                (Stage::Single, key.clone(), Request::Get { key })
            }
            OpKind::GetMeta => {
                let key = self.random_key();
                (Stage::Single, key.clone(), Request::GetWithMetadata { key })
            }
            OpKind::Put => {
                let key = self.random_key();
                let request = Request::Put {
                    key: key.clone(),
                    expiration: Expiration::DEFAULT,
                    value: self.shared.value.clone(),
                };
                (Stage::Single, key, request)
            }
            OpKind::Replace => {
                let key = self.random_key();
                (
                    Stage::ReplaceRead,
                    key.clone(),
                    Request::GetWithMetadata { key },
                )
            }
            OpKind::PutIfAbsent => {
                self.keys.fresh_counter += 1;
                let key = Bytes::from(format!(
                    "fresh:{:x}:{}:{}",
                    self.shared.run_tag, self.id, self.keys.fresh_counter
                ));
                let request = Request::PutIfAbsent {
                    key: key.clone(),
                    expiration: self.shared.pia_expiration,
                    value: self.shared.value.clone(),
                };
                (Stage::Single, key, request)
            }
            OpKind::Remove => {
                let key = match self.keys.created.pop_front() {
                    Some(k) => k,
                    None => self.random_key(),
                };
                (Stage::Single, key.clone(), Request::Remove { key })
            }
        };
        let id = self.message_id();
        let frame = frame(self.shared.version, &self.shared.cache, id, request);
        let pending = Pending {
            kind,
            stage,
            key,
            started: Instant::now(),
        };
        (id, frame, pending)
    }

    fn in_window(&self, p: &Pending, now: Instant) -> bool {
        p.started >= self.window.measure_start && now <= self.window.end
    }

    /// Handles one response; returns a follow-up request (the replace after its read).
    fn on_response(&mut self, p: Pending, r: &Response) -> Option<(u64, RequestFrame, Pending)> {
        let now = Instant::now();
        let counted = self.in_window(&p, now);
        let error = is_error(r);
        if counted {
            self.stats.requests += 1;
            if error {
                self.stats.record_error_status(r.header.status);
            }
        }
        let st = r.header.status;
        let miss = match (&p.stage, p.kind) {
            (Stage::ReplaceRead, _) => {
                if !error && st == status::SUCCESS {
                    if let ResponseBody::WithMetadata { metadata, .. } = &r.body {
                        let id = self.message_id();
                        let request = Request::ReplaceIfUnmodified {
                            key: p.key.clone(),
                            expiration: Expiration::DEFAULT,
                            version: metadata.version,
                            value: self.shared.value.clone(),
                        };
                        let frame = frame(self.shared.version, &self.shared.cache, id, request);
                        let next = Pending {
                            stage: Stage::ReplaceWrite,
                            ..p
                        };
                        return Some((id, frame, next));
                    }
                }
                let miss = !error;
                if counted && miss {
                    self.stats.replace_read_miss += 1;
                }
                miss
            }
            (Stage::ReplaceWrite, _) => {
                if counted && !error {
                    if st == status::SUCCESS || st == status::SUCCESS_WITH_PREVIOUS {
                        self.stats.replace_success += 1;
                    } else {
                        self.stats.replace_conflict += 1;
                    }
                }
                false
            }
            (Stage::Single, OpKind::Get | OpKind::GetMeta | OpKind::Remove) => {
                st == status::KEY_DOES_NOT_EXIST
            }
            (Stage::Single, OpKind::PutIfAbsent) => {
                let created = st == status::SUCCESS || st == status::SUCCESS_WITH_PREVIOUS;
                if created {
                    self.keys.created.push_back(p.key.clone());
                }
                !error && !created
            }
            (Stage::Single, _) => false,
        };
        if counted {
            self.stats
                .record(p.kind, now.duration_since(p.started), error, miss);
        }
        None
    }

    /// Runs one connection until the window ends; returns false to stop, true to reconnect.
    async fn session(&mut self, conn: &mut Conn) -> Result<(), String> {
        let mut in_flight: HashMap<u64, Pending> = HashMap::with_capacity(self.shared.pipeline);
        loop {
            let mut fed = false;
            while in_flight.len() < self.shared.pipeline && Instant::now() < self.window.end {
                let (id, frame, pending) = self.start_op();
                conn.feed(frame).await.map_err(|e| format!("send: {e}"))?;
                in_flight.insert(id, pending);
                fed = true;
            }
            if fed {
                conn.flush().await.map_err(|e| format!("send: {e}"))?;
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let incoming = match timeout_at(self.window.end, conn.next()).await {
                // The window closed with requests in flight: they are not counted.
                Err(_) => return Ok(()),
                Ok(None) => return Err("server closed the connection".into()),
                Ok(Some(Err(e))) => return Err(format!("receive: {e}")),
                Ok(Some(Ok(i))) => i,
            };
            let Incoming::Response(r) = incoming else {
                continue;
            };
            let Some(p) = in_flight.remove(&r.header.message_id) else {
                // An error that names no request (message id 0): one op is lost, so start over.
                self.stats.record_error_status(r.header.status);
                return Err(format!("response for unknown message id: {r:?}"));
            };
            if let Some((id, frame, next)) = self.on_response(p, &r) {
                conn.feed(frame).await.map_err(|e| format!("send: {e}"))?;
                in_flight.insert(id, next);
                if in_flight.len() >= self.shared.pipeline || Instant::now() >= self.window.end {
                    conn.flush().await.map_err(|e| format!("send: {e}"))?;
                }
            }
        }
    }
}

/// Drives one connection through warmup and the measured window.
pub async fn run(shared: Arc<Shared>, id: usize, window: Window, verbose: bool) -> Stats {
    let mut worker = Worker {
        rng: Rng::new(shared.run_tag ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        shared,
        id,
        keys: Keys {
            created: VecDeque::new(),
            fresh_counter: 0,
        },
        stats: Stats::default(),
        window,
        next_message_id: 0,
    };
    let mut reported = false;
    while Instant::now() < window.end {
        let result = match connect(&worker.shared.addr).await {
            Ok(mut conn) => worker.session(&mut conn).await,
            Err(e) => Err(format!("connect: {e}")),
        };
        match result {
            Ok(()) => break,
            Err(e) => {
                worker.stats.connection_errors += 1;
                if verbose || !reported {
                    eprintln!("ferrod-load: connection {id}: {e}; reconnecting");
                    reported = true;
                }
                let _ = timeout_at(window.end, sleep(Duration::from_millis(100))).await;
            }
        }
    }
    worker.stats
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use ferrod_codec::{op, EntryMetadata, Outbound, PingInfo, ServerCodec};
    use tokio::net::TcpListener;

    use super::*;

    type Map = Arc<Mutex<HashMap<Bytes, (i64, Bytes)>>>;

    /// A tiny in-memory HotRod server; GETs of `key:0000000000` fail with a server error.
    async fn mock_server() -> (String, Map) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let map: Map = Arc::default();
        let m = map.clone();
        tokio::spawn(async move {
            let version = Arc::new(std::sync::atomic::AtomicI64::new(1));
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let (m, version) = (m.clone(), version.clone());
                tokio::spawn(async move {
                    let mut f = Framed::new(s, ServerCodec::default());
                    while let Some(Ok(req)) = f.next().await {
                        let h = &req.header;
                        let next_version =
                            || version.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let ok = |st, body| Response::new(h.message_id, h.opcode, st, body);
                        let resp = {
                            let mut map = m.lock().unwrap();
                            match req.request {
                                Request::Ping => ok(
                                    status::SUCCESS,
                                    ResponseBody::Ping(PingInfo {
                                        key_type: ferrod_codec::MediaType::Unspecified,
                                        value_type: ferrod_codec::MediaType::Unspecified,
                                        server_version: 41,
                                        operations: vec![op::GET, op::PUT],
                                    }),
                                ),
                                Request::Get { key } if &key[..] == b"key:0000000000" => {
                                    Response::error(h.message_id, status::SERVER_ERROR, "boom")
                                }
                                Request::Get { key } => match map.get(&key) {
                                    Some((_, v)) => {
                                        ok(status::SUCCESS, ResponseBody::Value(v.clone()))
                                    }
                                    None => ok(status::KEY_DOES_NOT_EXIST, ResponseBody::Empty),
                                },
                                Request::GetWithMetadata { key } => match map.get(&key) {
                                    Some((ver, v)) => ok(
                                        status::SUCCESS,
                                        ResponseBody::WithMetadata {
                                            metadata: EntryMetadata {
                                                lifespan: None,
                                                max_idle: None,
                                                version: *ver,
                                            },
                                            value: v.clone(),
                                        },
                                    ),
                                    None => ok(status::KEY_DOES_NOT_EXIST, ResponseBody::Empty),
                                },
                                Request::Put { key, value, .. } => {
                                    map.insert(key, (next_version(), value));
                                    ok(status::SUCCESS, ResponseBody::Empty)
                                }
                                Request::PutIfAbsent { key, value, .. } => match map.entry(key) {
                                    std::collections::hash_map::Entry::Vacant(e) => {
                                        e.insert((next_version(), value));
                                        ok(status::SUCCESS, ResponseBody::Empty)
                                    }
                                    std::collections::hash_map::Entry::Occupied(_) => {
                                        ok(status::NOT_EXECUTED, ResponseBody::Empty)
                                    }
                                },
                                Request::ReplaceIfUnmodified {
                                    key,
                                    version: expected,
                                    value,
                                    ..
                                } => match map.get(&key) {
                                    Some((ver, _)) if *ver == expected => {
                                        map.insert(key, (next_version(), value));
                                        ok(status::SUCCESS, ResponseBody::Empty)
                                    }
                                    Some(_) => ok(status::NOT_EXECUTED, ResponseBody::Empty),
                                    None => ok(status::KEY_DOES_NOT_EXIST, ResponseBody::Empty),
                                },
                                Request::Remove { key } => match map.remove(&key) {
                                    Some(_) => ok(status::SUCCESS, ResponseBody::Empty),
                                    None => ok(status::KEY_DOES_NOT_EXIST, ResponseBody::Empty),
                                },
                                _ => Response::error(
                                    h.message_id,
                                    status::UNKNOWN_OPERATION,
                                    "unsupported",
                                ),
                            }
                        };
                        let out = Outbound::Response {
                            response: resp,
                            version: h.version,
                        };
                        if f.send(out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, map)
    }

    fn shared(addr: String, mix: &str, keys: u64, pipeline: usize) -> Arc<Shared> {
        Arc::new(Shared {
            addr,
            cache: String::new(),
            version: 41,
            keys: (0..keys)
                .map(|i| Bytes::from(format!("key:{i:010}")))
                .collect(),
            value: Bytes::from_static(b"0123456789"),
            mix: mix.parse().unwrap(),
            pipeline,
            pia_expiration: Expiration::DEFAULT,
            run_tag: 7,
        })
    }

    #[tokio::test]
    async fn ping_preload_and_keycloak_mix_against_a_mock_server() {
        let (addr, map) = mock_server().await;
        let pong = ping(&addr, 41, "").await.unwrap();
        assert!(matches!(pong.body, ResponseBody::Ping(_)));

        let keys = 200;
        let sh = shared(addr, "keycloak", keys, 4);
        let mut tasks = Vec::new();
        for id in 0..3 {
            tasks.push(tokio::spawn(preload(sh.clone(), id, 3, 5)));
        }
        let mut done = 0;
        for t in tasks {
            let (d, e) = t.await.unwrap().unwrap();
            assert_eq!(e, 0);
            done += d;
        }
        assert_eq!(done, keys);
        assert_eq!(map.lock().unwrap().len(), keys as usize);

        let now = Instant::now();
        let window = Window {
            measure_start: now + Duration::from_millis(100),
            end: now + Duration::from_millis(500),
        };
        let mut total = Stats::default();
        let tasks: Vec<_> = (0..4)
            .map(|id| tokio::spawn(run(sh.clone(), id, window, true)))
            .collect();
        for t in tasks {
            total.merge(&t.await.unwrap());
        }
        assert!(Instant::now() < window.end + Duration::from_secs(1));
        let ops = total.total_ops();
        assert!(ops > 100, "only {ops} ops");
        assert_eq!(total.total_errors(), 0, "{:?}", total.error_statuses);
        let replace = total.kind(OpKind::Replace).unwrap().ops;
        let getm = total.kind(OpKind::GetMeta).unwrap().ops;
        assert!(
            replace > 0 && getm > replace,
            "getm {getm} replace {replace}"
        );
        // every replace read hits (the keyspace stays populated) and most replaces win
        assert_eq!(
            total.replace_success + total.replace_conflict + total.replace_read_miss,
            replace
        );
        assert!(total.replace_success > total.replace_conflict);
        // a read-then-replace is two requests
        assert!(total.requests > ops);
        assert_eq!(total.kind(OpKind::GetMeta).unwrap().misses, 0);
        // creates and removes churn their own keys: the shared keyspace is intact
        let shared_left = (0..keys)
            .filter(|i| {
                map.lock()
                    .unwrap()
                    .contains_key(&Bytes::from(format!("key:{i:010}")))
            })
            .count() as u64;
        assert_eq!(shared_left, keys);
        // removes only delete what PUT_IF_ABSENT created, so they never miss
        assert_eq!(total.kind(OpKind::Remove).unwrap().misses, 0);
    }

    #[tokio::test]
    async fn error_statuses_are_counted_not_fatal() {
        let (addr, _map) = mock_server().await;
        // one key, which the mock answers with SERVER_ERROR
        let sh = shared(addr, "get", 1, 2);
        let now = Instant::now();
        let window = Window {
            measure_start: now,
            end: now + Duration::from_millis(200),
        };
        let stats = run(sh, 0, window, true).await;
        let get = stats.kind(OpKind::Get).unwrap();
        assert!(get.ops > 0);
        assert_eq!(get.errors, get.ops);
        assert_eq!(stats.error_statuses[&status::SERVER_ERROR], get.ops);
        assert_eq!(stats.connection_errors, 0);
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = ping(&addr, 41, "").await.unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }
}
