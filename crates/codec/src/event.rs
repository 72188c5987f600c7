//! Client-listener and counter event frames (reference §10.2, §15.1).

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::{op, status};
use crate::error::DecodeError;
use crate::header::ResponseHeader;
use crate::primitives::{put_bool, put_bytes, put_string, Reader, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Modified,
    Removed,
    Expired,
}

impl EventKind {
    pub fn opcode(self) -> u8 {
        match self {
            EventKind::Created => op::CACHE_ENTRY_CREATED_EVENT,
            EventKind::Modified => op::CACHE_ENTRY_MODIFIED_EVENT,
            EventKind::Removed => op::CACHE_ENTRY_REMOVED_EVENT,
            EventKind::Expired => op::CACHE_ENTRY_EXPIRED_EVENT,
        }
    }

    pub fn from_opcode(code: u8) -> Option<EventKind> {
        match code {
            op::CACHE_ENTRY_CREATED_EVENT => Some(EventKind::Created),
            op::CACHE_ENTRY_MODIFIED_EVENT => Some(EventKind::Modified),
            op::CACHE_ENTRY_REMOVED_EVENT => Some(EventKind::Removed),
            op::CACHE_ENTRY_EXPIRED_EVENT => Some(EventKind::Expired),
            _ => None,
        }
    }

    /// The listener-interest bit of this kind (2.6+ ADD_CLIENT_LISTENER).
    pub fn interest_bit(self) -> u32 {
        match self {
            EventKind::Created => 0x01,
            EventKind::Modified => 0x02,
            EventKind::Removed => 0x04,
            EventKind::Expired => 0x08,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPayload {
    /// Key, plus the version for created/modified events.
    Plain { key: Bytes, version: Option<i64> },
    /// Converter output; `raw` (marker 2, since 2.1) when the listener asked for raw data.
    Custom { raw: bool, data: Bytes },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEvent {
    /// 0 for live events; the ADD_CLIENT_LISTENER id for initial-state events (§10.3).
    pub message_id: u64,
    pub kind: EventKind,
    pub listener_id: Bytes,
    pub retried: bool,
    pub payload: EventPayload,
}

impl CacheEvent {
    pub fn write(&self, buf: &mut BytesMut) {
        ResponseHeader {
            message_id: self.message_id,
            opcode: self.kind.opcode(),
            status: status::SUCCESS,
            topology: None,
        }
        .write(buf);
        put_bytes(buf, &self.listener_id);
        match &self.payload {
            EventPayload::Plain { key, version } => {
                buf.put_u8(0);
                put_bool(buf, self.retried);
                put_bytes(buf, key);
                if matches!(self.kind, EventKind::Created | EventKind::Modified) {
                    buf.put_i64(version.unwrap_or(0));
                }
            }
            EventPayload::Custom { raw, data } => {
                buf.put_u8(if *raw { 2 } else { 1 });
                put_bool(buf, self.retried);
                put_bytes(buf, data);
            }
        }
    }

    /// Reads the body after a response header whose op code is an event op code.
    pub fn read_body(r: &mut Reader<'_>, header: &ResponseHeader) -> Result<CacheEvent> {
        let kind = EventKind::from_opcode(header.opcode).ok_or_else(|| {
            DecodeError::malformed(format!("op 0x{:02X} is not a cache event", header.opcode))
        })?;
        let listener_id = r.bytes()?;
        let marker = r.u8()?;
        let retried = r.bool()?;
        let payload = match marker {
            0 => {
                let key = r.bytes()?;
                let version = if matches!(kind, EventKind::Created | EventKind::Modified) {
                    Some(r.i64()?)
                } else {
                    None
                };
                EventPayload::Plain { key, version }
            }
            1 | 2 => EventPayload::Custom {
                raw: marker == 2,
                data: r.bytes()?,
            },
            other => {
                return Err(DecodeError::malformed(format!(
                    "unknown event marker {other}"
                )))
            }
        };
        Ok(CacheEvent {
            message_id: header.message_id,
            kind,
            listener_id,
            retried,
            payload,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterEvent {
    pub counter_name: String,
    pub listener_id: Bytes,
    /// bits 0-1 old state, bits 2-3 new state (0 valid, 1 lower bound reached, 2 upper bound reached).
    pub state: u8,
    pub old_value: i64,
    pub new_value: i64,
}

impl CounterEvent {
    pub fn write(&self, buf: &mut BytesMut) {
        ResponseHeader {
            message_id: 0,
            opcode: op::COUNTER_EVENT,
            status: status::SUCCESS,
            topology: None,
        }
        .write(buf);
        put_string(buf, &self.counter_name);
        put_bytes(buf, &self.listener_id);
        buf.put_u8(self.state);
        buf.put_i64(self.old_value);
        buf.put_i64(self.new_value);
    }

    pub fn read_body(r: &mut Reader<'_>) -> Result<CounterEvent> {
        Ok(CounterEvent {
            counter_name: r.string()?,
            listener_id: r.bytes()?,
            state: r.u8()?,
            old_value: r.i64()?,
            new_value: r.i64()?,
        })
    }
}

/// The `___eager-key-value-version-converter` payload Keycloak reads (keycloak-contract §3.4):
/// `vInt keyLen | key | [vInt valueLen | value | 8-byte version]`.
pub fn key_value_version_payload(key: &[u8], value_and_version: Option<(&[u8], i64)>) -> Bytes {
    let mut buf = BytesMut::with_capacity(key.len() + 16);
    put_bytes(&mut buf, key);
    if let Some((value, version)) = value_and_version {
        put_bytes(&mut buf, value);
        buf.put_i64(version);
    }
    buf.freeze()
}

/// Protobuf type name of `org.infinispan.commons.util.KeyValueWithPrevious` (it has no type id).
pub const KEY_VALUE_WITH_PREVIOUS_TYPE: &str = "org.infinispan.global.commons.KeyValueWithPrevious";

/// How the key and values inside a `KeyValueWithPrevious` are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrappedContent {
    /// The stored bytes already are protostream `WrappedMessage`s (what the Java client writes
    /// into a protostream cache): embedded as they are.
    Protostream,
    /// Anything else: each wrapped as a protostream `bytes` value.
    Bytes,
}

fn put_proto_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_proto_field(buf: &mut BytesMut, field: u64, data: &[u8]) {
    put_proto_varint(buf, (field << 3) | 2);
    put_proto_varint(buf, data.len() as u64);
    buf.put_slice(data);
}

/// The `key-value-with-previous-converter-factory` payload: a protostream `WrappedMessage`
/// (field 16 type name, field 17 message) holding a `KeyValueWithPrevious` whose fields 1-3
/// (key, value, previous value) are `WrappedMessage`s; an absent value is an empty one, which
/// the client reads as null.
pub fn key_value_with_previous_payload(
    key: &[u8],
    value: Option<&[u8]>,
    previous: Option<&[u8]>,
    content: WrappedContent,
) -> Bytes {
    let wrapped = |b: Option<&[u8]>| -> BytesMut {
        let mut w = BytesMut::new();
        match (b, content) {
            (None, _) => {}
            (Some(b), WrappedContent::Protostream) => w.put_slice(b),
            // WrappedMessage.WRAPPED_BYTES
            (Some(b), WrappedContent::Bytes) => put_proto_field(&mut w, 10, b),
        }
        w
    };
    let mut message = BytesMut::new();
    put_proto_field(&mut message, 1, &wrapped(Some(key)));
    put_proto_field(&mut message, 2, &wrapped(value));
    put_proto_field(&mut message, 3, &wrapped(previous));
    let mut buf = BytesMut::with_capacity(message.len() + 64);
    put_proto_field(&mut buf, 16, KEY_VALUE_WITH_PREVIOUS_TYPE.as_bytes());
    put_proto_field(&mut buf, 17, &message);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_with_previous_layout() {
        // key "k" as the Java client marshals a String (WrappedMessage field 9), value likewise,
        // no previous value.
        let key = [0x4a, 1, b'k'];
        let value = [0x4a, 1, b'v'];
        let p =
            key_value_with_previous_payload(&key, Some(&value), None, WrappedContent::Protostream);
        let mut want = vec![0x82, 0x01, KEY_VALUE_WITH_PREVIOUS_TYPE.len() as u8];
        want.extend_from_slice(KEY_VALUE_WITH_PREVIOUS_TYPE.as_bytes());
        want.extend_from_slice(&[
            0x8a, 0x01, 12, 0x0a, 3, 0x4a, 1, b'k', 0x12, 3, 0x4a, 1, b'v', 0x1a, 0,
        ]);
        assert_eq!(&p[..], &want[..]);
        let p = key_value_with_previous_payload(b"k", None, Some(b"p"), WrappedContent::Bytes);
        assert!(
            p.ends_with(&[0x8a, 0x01, 12, 0x0a, 3, 0x52, 1, b'k', 0x12, 0, 0x1a, 3, 0x52, 1, b'p'])
        );
    }

    #[test]
    fn plain_created_event_layout() {
        let e = CacheEvent {
            message_id: 0,
            kind: EventKind::Created,
            listener_id: Bytes::from_static(&[9, 9]),
            retried: false,
            payload: EventPayload::Plain {
                key: Bytes::from_static(b"k"),
                version: Some(7),
            },
        };
        let mut b = BytesMut::new();
        e.write(&mut b);
        assert_eq!(
            b.to_vec(),
            [
                0xA1, 0x00, 0x60, 0x00, 0x00, 0x02, 9, 9, 0x00, 0x00, 0x01, b'k', 0, 0, 0, 0, 0, 0,
                0, 7
            ]
        );
        let mut r = Reader::new(&b, 1024);
        let h = ResponseHeader::read(&mut r, 1).unwrap();
        assert_eq!(CacheEvent::read_body(&mut r, &h).unwrap(), e);
    }
}
