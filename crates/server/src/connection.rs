//! One client connection: framing in, responses and events out, requests in flight.
//!
//! Reads are answered from memory at once; writes become futures that complete when their SQL
//! transaction committed, so many requests of one connection can be in flight (pipelining) and
//! their responses go out as they complete, each with its own message id. A read waits for the
//! writes that arrived before it on the same connection, so a client always reads its own writes.
//! Listener events share the socket through their own bounded queue (reference §10.3).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
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

/// On shutdown a connection keeps serving what its client already sent: it closes once it has
/// been quiet this long with nothing in flight, or when the grace period ends.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_millis(100);
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

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
    let writer = tokio::spawn(write_loop(ctx.clone(), write_half, out_rx, event_rx));

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
    // Idle: no complete request and no answer for `idle_timeout`. Half a frame is not activity,
    // so a client that trickles bytes without ever finishing a request is closed too.
    let idle_timeout = ctx.config.idle_timeout;
    let mut last_activity = tokio::time::Instant::now();

    loop {
        let quiet = tokio::time::sleep(DRAIN_IDLE);
        let grace_end =
            tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now));
        let idle_end = tokio::time::sleep_until(last_activity + idle_timeout.unwrap_or_default());
        // Listener connections are quiet by nature (Keycloak's sit waiting for events), and a
        // connection waiting for its writes to commit is not idle.
        let may_idle_close = idle_timeout.is_some()
            && writes.is_empty()
            && state.listener_count == 0
            && draining.is_none();
        tokio::select! {
            biased;
            _ = shutdown.recv(), if draining.is_none() => {
                // Requests already sent (in the socket or our buffer) are still answered; closing
                // at once would leave clients waiting for answers that never come.
                draining = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                continue;
            }
            _ = grace_end, if draining.is_some() => break,
            _ = overflow.notified() => {
                warn!(%peer, "closing connection: its listener event queue overflowed");
                break;
            }
            Some((resp, version)) = writes.next(), if !writes.is_empty() => {
                last_activity = tokio::time::Instant::now();
                if out_tx.send(Outbound::Response { response: resp, version }).await.is_err() {
                    break;
                }
            }
            frame = frames.next(), if writes.len() < max_inflight => match frame {
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
                    if out_tx.send(Outbound::Response { response: resp, version }).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Inbound::Frame(frame))) => {
                    last_activity = tokio::time::Instant::now();
                    let version = frame.header.version;
                    if cmd::waits_for_earlier_writes(&frame.request) {
                        while let Some((resp, v)) = writes.next().await {
                            if out_tx.send(Outbound::Response { response: resp, version: v }).await.is_err() {
                                break;
                            }
                        }
                    }
                    let sent = match cmd::dispatch(&ctx, &mut state, *frame) {
                        Action::Respond(resp) => out_tx.send(Outbound::Response { response: resp, version }).await.is_ok(),
                        Action::Frames(frames, release) => {
                            let mut ok = true;
                            for f in frames {
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
            _ = quiet, if draining.is_some() && writes.is_empty() => break,
            // Last: a request that arrived just in time is served, not dropped.
            _ = idle_end, if may_idle_close => {
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
    let _ = writer.await;
}

/// Encodes outbound frames (responses and listener events) and writes them in as few syscalls
/// as the queues allow. Ends when the response queue closes; queued events are then dropped.
async fn write_loop<W: AsyncWrite + Send>(
    ctx: Arc<ServerContext>,
    writer: W,
    mut responses: mpsc::Receiver<Outbound>,
    mut events: mpsc::Receiver<CacheEvent>,
) {
    tokio::pin!(writer);
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            r = responses.recv() => match r {
                Some(r) => r,
                None => break,
            },
            Some(e) = events.recv() => Outbound::Event(e),
        };
        let _ = codec.encode(first, &mut buf);
        while buf.len() < 256 * 1024 {
            match responses.try_recv() {
                Ok(next) => {
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
        if writer.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}
