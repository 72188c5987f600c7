//! What a new connection speaks, decided from its first bytes, like Infinispan's single port:
//! 0x16 starts a TLS handshake, 0xA0 is the HotRod request magic, an ASCII capital letter starts
//! an HTTP request line (GET, HEAD, POST...). After a TLS handshake the same test runs on the
//! first decrypted bytes. HotRod goes to `connection::serve`, HTTP to `rest::serve`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::connection;
use crate::context::ServerContext;
use crate::rest;
use crate::tls::{PeerIdentity, TlsMode, TlsState};

/// First byte of a TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// A client that opens a TLS connection must finish the handshake within this time, so idle
/// half-open connections do not hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the port treats connections; built once at startup.
pub struct Transport {
    pub tls: Option<Arc<TlsState>>,
    pub rest: bool,
}

impl Transport {
    fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map_or(TlsMode::Off, |t| t.settings.mode)
    }
}

/// What the first bytes of a (plain or decrypted) stream announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tls,
    Http,
    /// HotRod, and anything unknown: the HotRod codec answers a bad magic byte itself.
    HotRod,
}

pub fn classify(first: u8, rest_enabled: bool) -> Protocol {
    match first {
        TLS_HANDSHAKE => Protocol::Tls,
        b'A'..=b'Z' if rest_enabled => Protocol::Http,
        _ => Protocol::HotRod,
    }
}

/// Completes once the configured idle timeout has passed; never when there is none. A connection
/// that has not sent its first byte yet is idle like one between requests.
async fn idle_timeout(ctx: &ServerContext) {
    match ctx.config.idle_timeout {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Serves one accepted connection until it closes or the server shuts down.
pub async fn serve(
    ctx: Arc<ServerContext>,
    transport: Arc<Transport>,
    stream: TcpStream,
    peer: String,
    mut shutdown: broadcast::Receiver<()>,
) {
    // Peek, not read: for a plain connection the byte stays in the socket for its handler.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        r = stream.peek(&mut first) => r,
        _ = shutdown.recv() => return,
        _ = idle_timeout(&ctx) => {
            debug!(%peer, "closing connection: nothing sent within idle_timeout_s");
            return;
        }
    };
    match peeked {
        Ok(1..) => {}
        // Closed before sending anything: a TCP probe.
        Ok(0) => return,
        Err(e) => {
            debug!(%peer, "connection read ended: {e}");
            return;
        }
    }
    let protocol = classify(first[0], transport.rest);
    match (protocol, transport.tls_mode()) {
        (Protocol::Tls, TlsMode::Off) => {
            warn!(%peer, "closing connection: the client starts TLS but TLS is not configured (tls_certificate)");
        }
        (Protocol::Tls, _) => {
            let Some(tls) = transport.tls.clone() else {
                return;
            };
            serve_tls(ctx, &transport, &tls, stream, peer, shutdown).await;
        }
        (_, TlsMode::Required) => {
            warn!(%peer, "closing plain connection: TLS is required on this port (tls_mode = required)");
        }
        (Protocol::Http, _) => rest::serve(ctx, stream, peer, shutdown).await,
        (Protocol::HotRod, _) => {
            let socket = Some(connection::SocketFd::of(&stream));
            connection::serve(ctx, stream, peer, None, socket, shutdown).await
        }
    }
}

async fn serve_tls(
    ctx: Arc<ServerContext>,
    transport: &Transport,
    tls: &TlsState,
    stream: TcpStream,
    peer: String,
    mut shutdown: broadcast::Receiver<()>,
) {
    let socket = Some(connection::SocketFd::of(&stream));
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream));
    let mut stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                warn!(%peer, "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}; closing");
                return;
            }
        },
        _ = shutdown.recv() => return,
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| PeerIdentity::from_certificate(cert));
    if let Some(id) = &identity {
        debug!(%peer, "TLS client certificate: {id}");
    }
    // The first decrypted bytes say what the client speaks inside TLS.
    let mut prefix = BytesMut::with_capacity(4096);
    let read = tokio::select! {
        r = stream.read_buf(&mut prefix) => r,
        _ = shutdown.recv() => return,
        _ = idle_timeout(&ctx) => {
            debug!(%peer, "closing TLS connection: nothing sent within idle_timeout_s");
            return;
        }
    };
    match read {
        Ok(1..) => {}
        Ok(0) => return,
        Err(e) => {
            debug!(%peer, "TLS connection read ended: {e}");
            return;
        }
    }
    let stream = Prefixed {
        prefix,
        inner: stream,
    };
    match classify(prefix_first(&stream), transport.rest) {
        Protocol::Http => rest::serve(ctx, stream, peer, shutdown).await,
        _ => connection::serve(ctx, stream, peer, identity, socket, shutdown).await,
    }
}

fn prefix_first<S>(s: &Prefixed<S>) -> u8 {
    s.prefix.first().copied().unwrap_or(0)
}

/// A stream whose first bytes were already read (to see what it speaks): they are read again
/// before the rest of the stream.
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_decides() {
        assert_eq!(classify(0x16, true), Protocol::Tls);
        assert_eq!(classify(0xA0, true), Protocol::HotRod);
        assert_eq!(classify(b'G', true), Protocol::Http);
        assert_eq!(classify(b'P', true), Protocol::Http);
        assert_eq!(classify(b'G', false), Protocol::HotRod);
        assert_eq!(classify(0x00, true), Protocol::HotRod);
    }

    #[tokio::test]
    async fn prefixed_replays_its_bytes_first() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"def")
            .await
            .unwrap();
        drop(a);
        let mut s = Prefixed {
            prefix: BytesMut::from(&b"abc"[..]),
            inner: b,
        };
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdef");
    }
}
