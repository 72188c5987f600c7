//! One client connection: framing in, responses and events out, requests in flight.
//!
//! Reads are answered from memory at once; writes become futures that complete when their SQL
//! transaction committed, so many requests of one connection can be in flight (pipelining) and
//! their responses go out as they complete, each with its own message id. A read waits for the
//! writes that arrived before it on the same connection, so a client always reads its own writes.
//! Listener events share the socket through their own bounded queue (reference §10.3).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, warn};

use bytes::Buf;
use ferrod_codec::{
    CacheEvent, CodecError, DecodeError, FrameError, Outbound, RequestFrame, Response, ServerCodec,
};
use tokio_util::codec::Decoder;

use crate::cmd::{self, Action, ConnectionState};
use crate::context::ServerContext;
use crate::listeners::EventSink;

/// Responses waiting for the socket; beyond this the connection stops reading requests.
const OUTBOUND_QUEUE: usize = 1024;

/// Bounds a connection's shutdown: its started writes commit and are answered, and it waits for
/// the client to acknowledge its last answers, at most this long after the signal.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How a connection closes at shutdown depends on whether its client pipelines, because clients
/// recover from a close differently when they have a request outstanding on the connection: the
/// Java 15.0 client retries on an orderly close (FIN) but waits out its socket timeout on a reset
/// (its HeaderDecoder hands the error to the last answered operation, which removes the decoder, so
/// the pending one is never told); the npm client retries on a reset but not on an orderly close.
/// So no connection is closed while its client waits for an answer if that can be avoided:
///
/// - A client that waits for each answer before it sends its next request (the Java clients'
///   synchronous calls) is served on after the signal, and the connection closes in order at the
///   first moment nothing it sent is unanswered: then it has nothing outstanding, whatever it sends
///   next fails on the closed connection and is retried. It is served at most this long.
/// - A client that pipelines (sent a request before it had the previous answer) can always have a
///   request on its way: reading stops at the signal (or when it first pipelines after it), the
///   started requests are answered, and once its TCP acknowledged them the connection is reset if
///   the client sent more, closed in order otherwise (see [`CloseSocket`]).
const DRAIN_SERVE: std::time::Duration = std::time::Duration::from_millis(500);

/// What the connection reads: a request, or a run of bytes that cannot start one.
enum Inbound {
    Frame(Box<RequestFrame>),
    Garbage(FrameError),
}

/// The server codec plus Infinispan's recovery from a bad magic byte: answer it (message id 0)
/// and go on with the next byte that can start a request. Clients rely on this: the npm client
/// at 2.2/2.5 sends a stray interests byte after every ADD_CLIENT_LISTENER. Any other malformed
/// frame loses framing and closes the connection.
/// Bytes it consumes count towards STATS `totalBytesRead`.
struct ConnectionCodec {
    codec: ServerCodec,
    ctx: Arc<ServerContext>,
}

impl Decoder for ConnectionCodec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        let before = src.len();
        let item = self.decode_inbound(src);
        self.ctx.add_read(before - src.len());
        item
    }
}

impl ConnectionCodec {
    fn decode_inbound(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        match self.codec.decode(src) {
            Ok(frame) => Ok(frame.map(|f| Inbound::Frame(Box::new(f)))),
            Err(CodecError::Frame(e)) if matches!(e.error, DecodeError::InvalidMagic(_)) => {
                let skip = src
                    .iter()
                    .skip(1)
                    .position(|b| *b == ferrod_codec::header::REQUEST_MAGIC)
                    .map_or(src.len(), |p| p + 1);
                src.advance(skip);
                Ok(Some(Inbound::Garbage(e)))
            }
            Err(e) => Err(e),
        }
    }
}

pub async fn serve<S>(
    ctx: Arc<ServerContext>,
    stream: S,
    peer: String,
    peer_identity: Option<crate::tls::PeerIdentity>,
    socket: Option<SocketFd>,
    mut shutdown: broadcast::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let codec = ConnectionCodec {
        codec: ServerCodec::new(ctx.config.max_frame_bytes),
        ctx: ctx.clone(),
    };
    let mut frames = FramedRead::new(read_half, codec);
    let (out_tx, out_rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel::<CacheEvent>(ctx.config.max_listener_queue);
    let overflow = Arc::new(Notify::new());
    // Frames handed to the response queue, and those of them the write loop handed to the socket:
    // a request decoded while the two differ (or while writes are in flight) was sent before its
    // client had every earlier answer, i.e. the client pipelines.
    let mut answers_queued: u64 = 0;
    let answers_written = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_loop(
        ctx.clone(),
        write_half,
        out_rx,
        event_rx,
        answers_written.clone(),
    ));

    let mut state = ConnectionState {
        connection_id: ctx.next_connection_id(),
        event_sink: Some(EventSink {
            events: event_tx,
            overflow: overflow.clone(),
        }),
        auth: crate::auth::Session::with_peer_identity(
            peer_identity
                .as_ref()
                .map(crate::tls::PeerIdentity::user_name),
        ),
        ..Default::default()
    };
    let mut writes = FuturesUnordered::new();
    let max_inflight = ctx.config.max_inflight_per_connection;
    let mut fatal: Option<FrameError> = None;
    // Set once the server shuts down: the hard end of this connection's grace period.
    let mut draining: Option<tokio::time::Instant> = None;
    // A request read but not started because the server is shutting down.
    let mut dropped_request = false;
    // See DRAIN_SERVE.
    let mut pipelines = false;
    // Requests are read until shutdown (pipelining clients) or until this instant after it.
    let mut reading = true;
    let mut serve_until: Option<tokio::time::Instant> = None;
    // Closing at shutdown with nothing unanswered, the client waiting for nothing.
    let mut quiet_close = false;
    // Idle: no complete request and no answer for `idle_timeout`. Half a frame is not activity,
    // so a client that trickles bytes without ever finishing a request is closed too.
    let idle_timeout = ctx.config.idle_timeout;
    let mut last_activity = tokio::time::Instant::now();
    // One idle timer for the connection's life, moved only when it fires early (there was
    // activity since it was set): a fresh timer per request cost two timer-wheel updates each.
    let idle_timer = tokio::time::sleep_until(last_activity + idle_timeout.unwrap_or_default());
    tokio::pin!(idle_timer);
    // The shutdown signal and the listener-overflow notice, each waited for by one future for
    // the connection's life: a future made per loop turn registers and removes a waiter under
    // the channel's lock on every request. `signal` is never polled once it completed (it sets
    // `draining`, and both places that poll it check that first).
    let signal = PolledOnWake::new(async move {
        let _ = shutdown.recv().await;
    });
    tokio::pin!(signal);
    let overflowed = PolledOnWake::new(overflow.notified());
    tokio::pin!(overflowed);

    loop {
        if draining.is_some() && writes.is_empty() {
            if !reading {
                break;
            }
            if !pipelines
                && frames.read_buffer().is_empty()
                && socket.is_some_and(|s| s.unread_bytes() == Some(0))
            {
                quiet_close = true;
                break;
            }
        }
        let serve_end =
            tokio::time::sleep_until(serve_until.unwrap_or_else(tokio::time::Instant::now));
        let grace_end =
            tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now));
        // Listener connections are quiet by nature (Keycloak's sit waiting for events), and a
        // connection waiting for its writes to commit is not idle.
        let may_idle_close = idle_timeout.is_some()
            && writes.is_empty()
            && state.listener_count == 0
            && draining.is_none();
        tokio::select! {
            biased;
            _ = &mut signal, if draining.is_none() => {
                let now = tokio::time::Instant::now();
                draining = Some(now + DRAIN_GRACE);
                if pipelines {
                    reading = false;
                } else {
                    serve_until = Some(now + DRAIN_SERVE);
                }
                continue;
            }
            _ = serve_end, if serve_until.is_some() && reading => {
                debug!(%peer, "shutdown: no moment without a request in flight; no longer reading requests");
                reading = false;
                continue;
            }
            _ = grace_end, if draining.is_some() => {
                warn!(%peer, "shutdown grace period over with {} writes in flight; closing once they commit", writes.len());
                break;
            }
            _ = &mut overflowed => {
                warn!(%peer, "closing connection: its listener event queue overflowed");
                break;
            }
            Some((resp, version)) = writes.next(), if !writes.is_empty() => {
                last_activity = tokio::time::Instant::now();
                answers_queued += 1;
                if out_tx.send(Outbound::Response { response: resp, version }).await.is_err() {
                    break;
                }
            }
            frame = frames.next(), if writes.len() < max_inflight && reading => match frame {
                None => break,
                Some(Err(CodecError::Io(e))) => {
                    debug!(%peer, "connection read ended: {e}");
                    break;
                }
                Some(Err(CodecError::Frame(e))) => {
                    fatal = Some(e);
                    break;
                }
                Some(Ok(Inbound::Garbage(e))) => {
                    last_activity = tokio::time::Instant::now();
                    debug!(%peer, "skipping bytes that cannot start a request: {e}");
                    let resp = Response::error(0, e.error.status(), e.to_string());
                    let version = ferrod_codec::version::V20;
                    answers_queued += 1;
                    if out_tx.send(Outbound::Response { response: resp, version }).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Inbound::Frame(frame))) => {
                    pipelines |= !writes.is_empty()
                        || answers_queued > answers_written.load(Ordering::Acquire);
                    // Decoded in the same wake-up as the shutdown signal: handled as if it came
                    // after it, so no request of a pipelining client that reaches us after the
                    // signal is started.
                    if draining.is_none() && (&mut signal).now_or_never().is_some() {
                        let now = tokio::time::Instant::now();
                        draining = Some(now + DRAIN_GRACE);
                        serve_until = Some(now + DRAIN_SERVE);
                    }
                    if draining.is_some() && pipelines {
                        reading = false;
                        dropped_request = true;
                        continue;
                    }
                    last_activity = tokio::time::Instant::now();
                    let version = frame.header.version;
                    if cmd::waits_for_earlier_writes(&frame.request) {
                        while let Some((resp, v)) = writes.next().await {
                            answers_queued += 1;
                            if out_tx.send(Outbound::Response { response: resp, version: v }).await.is_err() {
                                break;
                            }
                        }
                    }
                    let sent = match cmd::dispatch(&ctx, &mut state, *frame) {
                        Action::Respond(resp) => {
                            answers_queued += 1;
                            out_tx.send(Outbound::Response { response: resp, version }).await.is_ok()
                        }
                        Action::Frames(frames, release) => {
                            let mut ok = true;
                            for f in frames {
                                answers_queued += 1;
                                ok = ok && out_tx.send(f).await.is_ok();
                            }
                            // The write loop drains queued responses before events, so events
                            // released now follow the frames above on the wire.
                            if let Some(l) = release {
                                l.release_held();
                            }
                            ok
                        }
                        Action::Write(fut) => {
                            writes.push(async move { (fut.await, version) });
                            true
                        }
                    };
                    if !sent {
                        break;
                    }
                }
            },
            // Last: a request that arrived just in time is served, not dropped.
            _ = &mut idle_timer, if may_idle_close => {
                let due = last_activity + idle_timeout.unwrap_or_default();
                if due > tokio::time::Instant::now() {
                    idle_timer.as_mut().reset(due);
                    continue;
                }
                debug!(%peer, "closing connection: no request for {:?} (idle_timeout_s)", idle_timeout.unwrap_or_default());
                break;
            }
        }
    }

    if state.listener_count > 0 {
        ctx.listeners.remove_connection(state.connection_id);
    }
    // Writes already handed to the store commit whatever happens to the client; answer them if
    // the client is still listening.
    while let Some((resp, version)) = writes.next().await {
        if out_tx
            .send(Outbound::Response {
                response: resp,
                version,
            })
            .await
            .is_err()
        {
            break;
        }
    }
    if let Some(e) = fatal {
        warn!(%peer, "closing connection after a malformed frame: {e}");
        let version = e.version.unwrap_or(ferrod_codec::version::V20);
        let resp = Response::error(e.message_id, e.error.status(), e.to_string());
        let _ = out_tx
            .send(Outbound::Response {
                response: resp,
                version,
            })
            .await;
    }
    drop(out_tx);
    drop(state);
    let Ok(mut write_half) = writer.await else {
        return;
    };
    // SAFETY: `frames` and `write_half`, the two halves of the stream `socket` was taken from,
    // are still open here, so its descriptor number names this connection's socket.
    let socket = socket.and_then(|fd| unsafe { fd.dup() });
    match (draining, socket) {
        // Shutdown, nothing unanswered (see DRAIN_SERVE): the orderly close follows the last
        // answer at once. Waiting for the client to acknowledge it would give a client that
        // waits for each answer the time to send its next request, which would then go unanswered.
        (Some(_), Some(_)) if quiet_close => {
            let _ = write_half.shutdown().await;
        }
        // Shutdown: see `CloseSocket`.
        (Some(grace_end), Some(socket)) => {
            socket.wait_sent(grace_end).await;
            if dropped_request || !frames.read_buffer().is_empty() || socket.has_unread_input() {
                debug!(%peer, "shutdown: resetting the connection, the client sent requests that will not be answered");
                socket.reset_on_close();
            } else {
                let _ = write_half.shutdown().await;
            }
        }
        _ => {
            let _ = write_half.shutdown().await;
        }
    }
}

/// A future that is polled again only once it asked to be: wraps the connection's long-lived
/// waits (the shutdown signal, the listener-overflow notice), which `select!` would otherwise
/// poll on every turn of the connection loop, i.e. on every request. Polling a pending tokio
/// broadcast receiver or `Notify` takes the channel's lock each time (the shutdown channel's is
/// shared by every connection), about 3 % of a GET's CPU under load; a wake-up flag is a load.
struct PolledOnWake<F> {
    inner: std::pin::Pin<Box<F>>,
    wake: Arc<WakeFlag>,
}

/// Set by the wrapped future's waker, which passes the wake-up on to the connection's task.
#[derive(Default)]
struct WakeFlag {
    woken: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl futures::task::ArcWake for WakeFlag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.woken.store(true, Ordering::Release);
        flag.task.wake();
    }
}

impl<F: std::future::Future> PolledOnWake<F> {
    fn new(inner: F) -> Self {
        let wake = Arc::new(WakeFlag::default());
        // Woken at the start, so the first poll reaches the inner future.
        wake.woken.store(true, Ordering::Relaxed);
        PolledOnWake {
            inner: Box::pin(inner),
            wake,
        }
    }
}

impl<F: std::future::Future> std::future::Future for PolledOnWake<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // Registered before the flag is read: a wake-up between the two is not lost.
        self.wake.task.register(cx.waker());
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Pending;
        }
        let waker = futures::task::waker(self.wake.clone());
        self.inner
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
    }
}

/// The connection's socket (a duplicate of its descriptor, see [`SocketFd`]), for the last step of
/// a graceful shutdown of a pipelining client's connection (see [`DRAIN_SERVE`]). The requests it
/// did not start must fail on the client at once, so that it retries them on another replica: the
/// npm client does so only on a connection error, not on an orderly end (its pending requests
/// would wait for their timeout). So a connection whose client sent requests it will not answer is
/// reset (RST), and one without is closed as usual (FIN), only after the client's TCP acknowledged
/// every answer: a reset discards whatever is still queued, and requests sent meanwhile are seen.
/// (The Java 15.0 client does not retry on a reset, see [`DRAIN_SERVE`]: a client that waits for
/// each answer is never reset with a request pending, it is closed in order.)
pub struct CloseSocket(std::os::fd::OwnedFd);

/// The descriptor number of a connection's socket, taken before the stream is wrapped (TLS) and
/// split, and duplicated into a [`CloseSocket`] only when the connection closes at shutdown: a
/// duplicate held for the connection's whole life would double the descriptors every connection
/// costs (10,000 idle connections need 10,000 more than the limit they were sized for).
#[derive(Clone, Copy)]
pub struct SocketFd(std::os::fd::RawFd);

impl SocketFd {
    pub fn of(stream: &impl std::os::fd::AsRawFd) -> SocketFd {
        SocketFd(stream.as_raw_fd())
    }

    /// Bytes from the client waiting in the kernel; `None` if the kernel does not say. Only called
    /// while the connection's stream is open (the descriptor number names its socket).
    fn unread_bytes(self) -> Option<usize> {
        ioctl_bytes(self.0, libc::FIONREAD as libc::c_ulong)
    }

    /// `None` when the descriptor cannot be duplicated (out of descriptors): the connection then
    /// closes as usual.
    ///
    /// # Safety
    /// The stream this was taken from must still be open (else the number may name another
    /// file by now).
    unsafe fn dup(self) -> Option<CloseSocket> {
        // SAFETY: guaranteed by the caller (see above).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) };
        fd.try_clone_to_owned().ok().map(CloseSocket)
    }
}

/// An ioctl that reports a byte count of a socket (FIONREAD, TIOCOUTQ).
fn ioctl_bytes(fd: std::os::fd::RawFd, request: libc::c_ulong) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD and TIOCOUTQ write one int through the pointer, which points to a live
    // local; on a descriptor that is not (or no longer) a socket the call fails with EBADF or
    // ENOTTY and writes nothing.
    let r = unsafe { libc::ioctl(fd, request as _, &mut n) };
    (r == 0).then_some(n.max(0) as usize)
}

impl CloseSocket {
    fn ioctl_bytes(&self, request: libc::c_ulong) -> Option<usize> {
        use std::os::fd::AsRawFd;
        ioctl_bytes(self.0.as_raw_fd(), request)
    }

    /// Waits until the kernel has no unacknowledged bytes of ours left for this socket, at most
    /// until `until`.
    async fn wait_sent(&self, until: tokio::time::Instant) {
        #[cfg(target_os = "linux")]
        while self
            .ioctl_bytes(libc::TIOCOUTQ as libc::c_ulong)
            .unwrap_or(0)
            > 0
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = until;
    }

    /// Bytes from the client that are waiting in the kernel.
    fn has_unread_input(&self) -> bool {
        self.ioctl_bytes(libc::FIONREAD as libc::c_ulong)
            .is_some_and(|n| n > 0)
    }

    /// SO_LINGER with a zero timeout: the last close of the socket sends RST.
    fn reset_on_close(&self) {
        let _ = socket2::SockRef::from(&self.0).set_linger(Some(std::time::Duration::ZERO));
    }
}

/// Encodes outbound frames (responses and listener events) and writes them in as few syscalls
/// as the queues allow. Ends when the response queue closes (queued events are then dropped),
/// having flushed, and gives the writer back: how it closes is the connection's choice.
/// `answers_written` counts the frames of the response queue handed to the socket, before the
/// write: a client cannot send a request in reply to an answer before it is counted.
async fn write_loop<W: AsyncWrite + Send + Unpin>(
    ctx: Arc<ServerContext>,
    writer: W,
    mut responses: mpsc::Receiver<Outbound>,
    mut events: mpsc::Receiver<CacheEvent>,
    answers_written: Arc<AtomicU64>,
) -> W {
    let mut writer = writer;
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let mut answers = 0;
        let first = tokio::select! {
            biased;
            r = responses.recv() => match r {
                Some(r) => {
                    answers += 1;
                    r
                }
                None => break,
            },
            Some(e) = events.recv() => Outbound::Event(e),
        };
        let _ = codec.encode(first, &mut buf);
        while buf.len() < 256 * 1024 {
            match responses.try_recv() {
                Ok(next) => {
                    answers += 1;
                    let _ = codec.encode(next, &mut buf);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected)
                | Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match events.try_recv() {
                Ok(e) => {
                    let _ = codec.encode(Outbound::Event(e), &mut buf);
                }
                Err(_) => break,
            }
        }
        ctx.bytes_written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        answers_written.fetch_add(answers, Ordering::Release);
        if writer.write_all(&buf).await.is_err() {
            return writer;
        }
        buf.clear();
    }
    let _ = writer.flush().await;
    writer
}
