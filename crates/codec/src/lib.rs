//! The HotRod wire format, protocol 2.0 to 4.1: primitives, headers, every request, response and
//! event frame, media types, and restartable tokio-util codecs for both ends of a connection.
//!
//! No I/O and no server state live here. Decoding never panics: any input yields a frame,
//! "incomplete", or a typed error.

pub mod constants;
pub mod error;
pub mod event;
pub mod expiration;
pub mod frame;
pub mod header;
pub mod media;
pub mod primitives;
pub mod request;
pub mod response;

pub use constants::{flags, op, status, version};
pub use error::{DecodeError, FrameError};
pub use event::{CacheEvent, CounterEvent, EventKind, EventPayload};
pub use expiration::{Duration, Expiration, Expiry, TimeUnit};
pub use frame::{
    ClientCodec, CodecError, Incoming, Outbound, RequestFrame, ServerCodec, DEFAULT_MAX_FRAME_LEN,
};
pub use header::{RequestHeader, ResponseHeader, Topology};
pub use media::MediaType;
pub use request::{CounterConfig, Factory, Request, TxModification, Xid};
pub use response::{
    EntryMetadata, IterationEntry, PingInfo, PreviousValue, Response, ResponseBody,
};
