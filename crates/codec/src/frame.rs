//! Restartable framing for tokio-util. HotRod frames carry no length prefix, so the decoder parses
//! the whole frame from the start of the buffer each time and consumes nothing until it is complete.

use std::collections::HashMap;
use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::constants::op;
use crate::error::{DecodeError, FrameError};
use crate::event::{CacheEvent, CounterEvent};
use crate::header::{RequestHeader, ResponseHeader, REQUEST_MAGIC};
use crate::primitives::Reader;
use crate::request::Request;
use crate::response::Response;

/// Default bound for one frame (and any field in it): a 64 MiB value plus room for its header.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024 * 1024 + 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    pub header: RequestHeader,
    pub request: Request,
}

impl RequestFrame {
    pub fn write(&self, buf: &mut BytesMut) {
        self.header.write(buf);
        self.request.write(buf, self.header.version);
    }

    /// Parses one frame from the start of `buf`. `Ok(None)` means "incomplete, wait for more";
    /// on success returns the frame and its length in bytes.
    pub fn parse(
        buf: &[u8],
        max_frame_len: usize,
    ) -> Result<Option<(RequestFrame, usize)>, FrameError> {
        let fail = |error, message_id, version| FrameError {
            error,
            message_id,
            version,
            consumed: None,
        };
        let mut r = Reader::new(buf, max_frame_len);
        match r.u8() {
            Ok(REQUEST_MAGIC) => {}
            Ok(other) => return Err(fail(DecodeError::InvalidMagic(other), 0, None)),
            Err(_) => return Ok(None),
        }
        let header = match RequestHeader::read(&mut r) {
            Ok(h) => h,
            Err((DecodeError::Incomplete, ..)) => return Ok(None),
            Err((e, id, v)) => return Err(fail(e, id, v)),
        };
        match Request::read(&mut r, header.opcode, header.version) {
            Ok(request) => Ok(Some((RequestFrame { header, request }, r.position()))),
            Err(DecodeError::Incomplete) => Ok(None),
            Err(e) => Err(fail(e, header.message_id, Some(header.version))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Server side: decodes requests, encodes responses and events.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    max_frame_len: usize,
}

impl ServerCodec {
    pub fn new(max_frame_len: usize) -> Self {
        ServerCodec { max_frame_len }
    }
}

impl Default for ServerCodec {
    fn default() -> Self {
        ServerCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for ServerCodec {
    type Item = RequestFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RequestFrame>, CodecError> {
        match RequestFrame::parse(src, self.max_frame_len)? {
            Some((frame, len)) => {
                src.advance(len);
                Ok(Some(frame))
            }
            None if src.len() > self.max_frame_len => Err(CodecError::Frame(FrameError {
                error: DecodeError::TooLarge {
                    len: src.len() as u64,
                    limit: self.max_frame_len,
                },
                message_id: 0,
                version: None,
                consumed: None,
            })),
            None => Ok(None),
        }
    }
}

/// What the server writes: responses (encoded by their request's version) and events.
#[derive(Debug, Clone)]
pub enum Outbound {
    Response { response: Response, version: u8 },
    Event(CacheEvent),
    CounterEvent(CounterEvent),
}

impl Encoder<Outbound> for ServerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Outbound::Response { response, version } => response.write(dst, version),
            Outbound::Event(e) => e.write(dst),
            Outbound::CounterEvent(e) => e.write(dst),
        }
        Ok(())
    }
}

/// What a client reads: responses to its requests, and events pushed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Response(Response),
    Event(CacheEvent),
    CounterEvent(CounterEvent),
}

/// Client side, for tests and the load generator: encodes requests and remembers each message
/// id's op code and version, which the response body layout depends on.
#[derive(Debug, Default)]
pub struct ClientCodec {
    pending: HashMap<u64, (u8, u8, u8)>,
    max_frame_len: usize,
}

impl ClientCodec {
    pub fn new() -> Self {
        ClientCodec {
            pending: HashMap::new(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl Encoder<RequestFrame> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, item: RequestFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.pending.insert(
            item.header.message_id,
            (
                item.header.opcode,
                item.header.version,
                item.header.intelligence,
            ),
        );
        item.write(dst);
        Ok(())
    }
}

impl Decoder for ClientCodec {
    type Item = Incoming;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        let max = self.max_frame_len;
        let mut r = Reader::new(src, max);
        let frame_err = |error| {
            CodecError::Frame(FrameError {
                error,
                message_id: 0,
                version: None,
                consumed: None,
            })
        };
        // Peek the header without consuming, to learn which request it answers.
        let header = match ResponseHeader::read(&mut r, 3) {
            Ok(h) => h,
            Err(DecodeError::Incomplete) => return Ok(None),
            Err(e) => return Err(frame_err(e)),
        };
        let is_cache_event = (op::CACHE_ENTRY_CREATED_EVENT..=op::CACHE_ENTRY_EXPIRED_EVENT)
            .contains(&header.opcode);
        // Events may carry id 0 (live) or the ADD_CLIENT_LISTENER id (initial state, §10.3);
        // either way their op code says what they are.
        let item = if is_cache_event {
            match CacheEvent::read_body(&mut r, &header) {
                Ok(e) => Incoming::Event(e),
                Err(DecodeError::Incomplete) => return Ok(None),
                Err(e) => return Err(frame_err(e)),
            }
        } else if header.opcode == op::COUNTER_EVENT {
            match CounterEvent::read_body(&mut r) {
                Ok(e) => Incoming::CounterEvent(e),
                Err(DecodeError::Incomplete) => return Ok(None),
                Err(e) => return Err(frame_err(e)),
            }
        } else {
            let (opcode, version, intelligence) = match self.pending.get(&header.message_id) {
                Some(p) => *p,
                None => {
                    // An error for a request whose header could not be parsed carries id 0.
                    if header.opcode == op::ERROR_RESPONSE {
                        (op::PING, 41, 1)
                    } else {
                        return Err(frame_err(DecodeError::malformed(format!(
                            "response for unknown message id {}",
                            header.message_id
                        ))));
                    }
                }
            };
            // Re-read with the client's real intelligence (topology layout depends on it).
            let mut r2 = Reader::new(src, max);
            match Response::read(&mut r2, opcode, version, intelligence) {
                Ok(resp) => {
                    self.pending.remove(&header.message_id);
                    let len = r2.position();
                    src.advance(len);
                    return Ok(Some(Incoming::Response(resp)));
                }
                Err(DecodeError::Incomplete) => return Ok(None),
                Err(e) => return Err(frame_err(e)),
            }
        };
        let len = r.position();
        src.advance(len);
        Ok(Some(item))
    }
}
