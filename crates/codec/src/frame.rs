//! Restartable framing for tokio-util. HotRod frames carry no length prefix, so the decoder parses
//! the whole frame from the start of the buffer each time and consumes nothing until it is complete.

use std::collections::HashMap;
use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::constants::op;
use crate::error::{DecodeError, FrameError};
use crate::event::{CacheEvent, CounterEvent};
use crate::header::{RequestHeader, ResponseHeader, REQUEST_MAGIC, RESPONSE_MAGIC};
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
        // Only the first `max_frame_len` bytes are looked at: a frame longer than that is
        // incomplete within them, and refused below once more bytes than that are buffered,
        // whether its fields are each under the limit or not.
        let window = &src[..src.len().min(self.max_frame_len)];
        match RequestFrame::parse(window, self.max_frame_len)? {
            Some((frame, len)) => {
                src.advance(len);
                Ok(Some(frame))
            }
            None if src.len() > self.max_frame_len => {
                // A field that is itself past the limit is the more precise complaint.
                if let Err(e) = RequestFrame::parse(src, self.max_frame_len) {
                    return Err(CodecError::Frame(e));
                }
                // Echo what the header says, when it got that far.
                let mut r = Reader::new(src, self.max_frame_len);
                let (message_id, version) = match r.u8().map(|_| RequestHeader::read(&mut r)) {
                    Ok(Ok(h)) => (h.message_id, Some(h.version)),
                    Ok(Err((_, id, v))) => (id, v),
                    Err(_) => (0, None),
                };
                Err(CodecError::Frame(FrameError {
                    error: DecodeError::TooLarge {
                        len: src.len() as u64,
                        limit: self.max_frame_len,
                    },
                    message_id,
                    version,
                    consumed: None,
                }))
            }
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
#[derive(Debug)]
pub struct ClientCodec {
    pending: HashMap<u64, (u8, u8, u8)>,
    max_frame_len: usize,
    /// Intelligence of the last request sent, used for frames that answer no request (events).
    intelligence: u8,
}

impl Default for ClientCodec {
    fn default() -> Self {
        ClientCodec::new()
    }
}

impl ClientCodec {
    pub fn new() -> Self {
        ClientCodec::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        ClientCodec {
            pending: HashMap::new(),
            max_frame_len,
            intelligence: crate::header::INTELLIGENCE_BASIC,
        }
    }

    /// Number of requests sent whose response has not been decoded yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
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
        self.intelligence = item.header.intelligence;
        item.write(dst);
        Ok(())
    }
}

/// Reads magic, message id and op code: the part of a response header whose layout does not
/// depend on the intelligence of the request it answers.
fn peek_response(r: &mut Reader<'_>) -> Result<(u64, u8), DecodeError> {
    let magic = r.u8()?;
    if magic != RESPONSE_MAGIC {
        return Err(DecodeError::InvalidMagic(magic));
    }
    let message_id = r.vlong()?;
    let opcode = r.u8()?;
    Ok((message_id, opcode))
}

impl Decoder for ClientCodec {
    type Item = Incoming;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        let max = self.max_frame_len;
        let frame_err = |error, message_id| {
            CodecError::Frame(FrameError {
                error,
                message_id,
                version: None,
                consumed: None,
            })
        };
        // Peek without consuming, to learn which request the frame answers: the topology block
        // of the header depends on that request's intelligence, the body on its op and version.
        let (message_id, opcode) = match peek_response(&mut Reader::new(src, max)) {
            Ok(p) => p,
            Err(DecodeError::Incomplete) => return self.incomplete(src, 0),
            Err(e) => return Err(frame_err(e, 0)),
        };
        let is_cache_event =
            (op::CACHE_ENTRY_CREATED_EVENT..=op::CACHE_ENTRY_EXPIRED_EVENT).contains(&opcode);
        let mut r = Reader::new(src, max);
        // Events may carry id 0 (live) or the ADD_CLIENT_LISTENER id (initial state, §10.3);
        // either way their op code says what they are.
        let item = if is_cache_event || opcode == op::COUNTER_EVENT {
            let parsed = ResponseHeader::read(&mut r, self.intelligence).and_then(|header| {
                if is_cache_event {
                    CacheEvent::read_body(&mut r, &header).map(Incoming::Event)
                } else {
                    CounterEvent::read_body(&mut r).map(Incoming::CounterEvent)
                }
            });
            match parsed {
                Ok(item) => item,
                Err(DecodeError::Incomplete) => return self.incomplete(src, message_id),
                Err(e) => return Err(frame_err(e, message_id)),
            }
        } else {
            let (req_opcode, version, intelligence) = match self.pending.get(&message_id) {
                Some(p) => *p,
                // An error for a request whose header could not be parsed carries id 0.
                None if opcode == op::ERROR_RESPONSE => (op::PING, 41, self.intelligence),
                None => {
                    return Err(frame_err(
                        DecodeError::malformed(format!(
                            "response for unknown message id {message_id}"
                        )),
                        message_id,
                    ))
                }
            };
            match Response::read(&mut r, req_opcode, version, intelligence) {
                Ok(resp) => {
                    self.pending.remove(&message_id);
                    Incoming::Response(resp)
                }
                Err(DecodeError::Incomplete) => return self.incomplete(src, message_id),
                Err(e) => return Err(frame_err(e, message_id)),
            }
        };
        let len = r.position();
        src.advance(len);
        Ok(Some(item))
    }
}

impl ClientCodec {
    fn incomplete(&self, src: &BytesMut, message_id: u64) -> Result<Option<Incoming>, CodecError> {
        if src.len() > self.max_frame_len {
            return Err(CodecError::Frame(FrameError {
                error: DecodeError::TooLarge {
                    len: src.len() as u64,
                    limit: self.max_frame_len,
                },
                message_id,
                version: None,
                consumed: None,
            }));
        }
        Ok(None)
    }
}
