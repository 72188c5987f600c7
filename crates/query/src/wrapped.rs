//! ProtoStream's `WrappedMessage` envelope (`org/infinispan/protostream/message-wrapping.proto`):
//! how HotRod clients using ProtoStream marshal every key, value and query parameter, and how a
//! server returns query results. A scalar travels in its own field (a string is field 9, so
//! `"abc"` is `4A 03 61 62 63`); a message travels as its protobuf bytes in field 17 with its
//! type in field 19 (`@TypeId`) or 16 (full name); an enum as its number in field 18 with its
//! type likewise.
//!
//! [`decode`] turns bytes into a [`WrappedValue`] (messages as `prost_reflect::DynamicMessage`
//! of the registered schema); [`WrappedValue::encode`] is the reverse, writing fields in the
//! order ProtoStream writes them so ferrod's bytes are the Java client's bytes.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost::Message as _;
use prost_reflect::{DynamicMessage, EnumDescriptor, ReflectMessage};

use crate::schema::{Schemas, TypeDescriptor};

// Field numbers of WrappedMessage.
pub const WRAPPED_DOUBLE: u32 = 1;
pub const WRAPPED_FLOAT: u32 = 2;
pub const WRAPPED_INT64: u32 = 3;
pub const WRAPPED_UINT64: u32 = 4;
pub const WRAPPED_INT32: u32 = 5;
pub const WRAPPED_FIXED64: u32 = 6;
pub const WRAPPED_FIXED32: u32 = 7;
pub const WRAPPED_BOOL: u32 = 8;
pub const WRAPPED_STRING: u32 = 9;
pub const WRAPPED_BYTES: u32 = 10;
pub const WRAPPED_UINT32: u32 = 11;
pub const WRAPPED_SFIXED32: u32 = 12;
pub const WRAPPED_SFIXED64: u32 = 13;
pub const WRAPPED_SINT32: u32 = 14;
pub const WRAPPED_SINT64: u32 = 15;
pub const WRAPPED_TYPE_NAME: u32 = 16;
pub const WRAPPED_MESSAGE: u32 = 17;
pub const WRAPPED_ENUM: u32 = 18;
pub const WRAPPED_TYPE_ID: u32 = 19;
pub const WRAPPED_CHAR: u32 = 20;
pub const WRAPPED_SHORT: u32 = 21;
pub const WRAPPED_BYTE: u32 = 22;
pub const WRAPPED_DATE_MILLIS: u32 = 23;
pub const WRAPPED_INSTANT_SECONDS: u32 = 24;
pub const WRAPPED_INSTANT_NANOS: u32 = 25;
pub const WRAPPED_EMPTY: u32 = 26;
pub const WRAPPED_CONTAINER_SIZE: u32 = 27;
pub const WRAPPED_CONTAINER_TYPE_NAME: u32 = 28;
pub const WRAPPED_CONTAINER_TYPE_ID: u32 = 29;
pub const WRAPPED_CONTAINER_MESSAGE: u32 = 30;

/// A decoded WrappedMessage.
#[derive(Clone, Debug, PartialEq)]
pub enum WrappedValue {
    /// Java `null`: no bytes at all, or `wrappedEmpty`.
    Null,
    Double(f64),
    Float(f32),
    Int64(i64),
    UInt64(u64),
    Int32(i32),
    Fixed64(u64),
    Fixed32(u32),
    Bool(bool),
    String(String),
    Bytes(Bytes),
    UInt32(u32),
    SFixed32(i32),
    SFixed64(i64),
    SInt32(i32),
    SInt64(i64),
    /// A Java `char` (a UTF-16 code unit).
    Char(u16),
    Short(i16),
    Byte(i8),
    /// A `java.util.Date`, in ms since the epoch.
    DateMillis(i64),
    /// A `java.time.Instant`.
    Instant {
        seconds: i64,
        nanos: i32,
    },
    Enum {
        descriptor: EnumDescriptor,
        number: i32,
    },
    Message(DynamicMessage),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrappedError {
    #[error("malformed WrappedMessage: {0}")]
    Malformed(String),
    #[error("unknown type id {0} in WrappedMessage")]
    UnknownTypeId(u32),
    #[error("unknown type '{0}' in WrappedMessage")]
    UnknownTypeName(String),
    #[error("WrappedMessage carries a {0} without its type")]
    MissingType(&'static str),
    #[error("wrapped message of type {type_name} does not decode: {reason}")]
    BadMessage { type_name: String, reason: String },
    #[error("wrapped containers (arrays, collections) are not supported")]
    Container,
}

/// The fields of one WrappedMessage, before its type is looked up.
#[derive(Default)]
struct Raw {
    scalar: Option<WrappedValue>,
    message: Option<Bytes>,
    enum_number: Option<i32>,
    type_name: Option<String>,
    type_id: Option<u32>,
    instant_seconds: Option<i64>,
    instant_nanos: Option<i32>,
    container: bool,
}

fn malformed(e: impl std::fmt::Display) -> WrappedError {
    WrappedError::Malformed(e.to_string())
}

fn varint(buf: &mut &[u8]) -> Result<u64, WrappedError> {
    decode_varint(buf).map_err(malformed)
}

fn fixed32(buf: &mut &[u8]) -> Result<u32, WrappedError> {
    if buf.remaining() < 4 {
        return Err(malformed("truncated fixed32"));
    }
    Ok(buf.get_u32_le())
}

fn fixed64(buf: &mut &[u8]) -> Result<u64, WrappedError> {
    if buf.remaining() < 8 {
        return Err(malformed("truncated fixed64"));
    }
    Ok(buf.get_u64_le())
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], WrappedError> {
    let len = varint(buf)?;
    let len = usize::try_from(len).map_err(malformed)?;
    if buf.len() < len {
        return Err(malformed("length-delimited field runs past the end"));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn skip(buf: &mut &[u8], wire: WireType) -> Result<(), WrappedError> {
    match wire {
        WireType::Varint => varint(buf).map(|_| ()),
        WireType::SixtyFourBit => fixed64(buf).map(|_| ()),
        WireType::ThirtyTwoBit => fixed32(buf).map(|_| ()),
        WireType::LengthDelimited => length_delimited(buf).map(|_| ()),
        WireType::StartGroup | WireType::EndGroup => Err(malformed("groups are not supported")),
    }
}

fn zigzag32(v: u64) -> i32 {
    let v = v as u32;
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn read_raw(mut buf: &[u8]) -> Result<Raw, WrappedError> {
    let mut raw = Raw::default();
    let buf = &mut buf;
    while !buf.is_empty() {
        let (field, wire) = decode_key(buf).map_err(malformed)?;
        use WireType::*;
        let scalar = match (field, wire) {
            (WRAPPED_DOUBLE, SixtyFourBit) => WrappedValue::Double(f64::from_bits(fixed64(buf)?)),
            (WRAPPED_FLOAT, ThirtyTwoBit) => WrappedValue::Float(f32::from_bits(fixed32(buf)?)),
            (WRAPPED_INT64, Varint) => WrappedValue::Int64(varint(buf)? as i64),
            (WRAPPED_UINT64, Varint) => WrappedValue::UInt64(varint(buf)?),
            (WRAPPED_INT32, Varint) => WrappedValue::Int32(varint(buf)? as i32),
            (WRAPPED_FIXED64, SixtyFourBit) => WrappedValue::Fixed64(fixed64(buf)?),
            (WRAPPED_FIXED32, ThirtyTwoBit) => WrappedValue::Fixed32(fixed32(buf)?),
            (WRAPPED_BOOL, Varint) => WrappedValue::Bool(varint(buf)? != 0),
            (WRAPPED_STRING, LengthDelimited) => {
                let bytes = length_delimited(buf)?;
                WrappedValue::String(
                    std::str::from_utf8(bytes)
                        .map_err(|_| malformed("wrappedString is not UTF-8"))?
                        .to_string(),
                )
            }
            (WRAPPED_BYTES, LengthDelimited) => {
                WrappedValue::Bytes(Bytes::copy_from_slice(length_delimited(buf)?))
            }
            (WRAPPED_UINT32, Varint) => WrappedValue::UInt32(varint(buf)? as u32),
            (WRAPPED_SFIXED32, ThirtyTwoBit) => WrappedValue::SFixed32(fixed32(buf)? as i32),
            (WRAPPED_SFIXED64, SixtyFourBit) => WrappedValue::SFixed64(fixed64(buf)? as i64),
            (WRAPPED_SINT32, Varint) => WrappedValue::SInt32(zigzag32(varint(buf)?)),
            (WRAPPED_SINT64, Varint) => WrappedValue::SInt64(zigzag64(varint(buf)?)),
            (WRAPPED_CHAR, Varint) => WrappedValue::Char(varint(buf)? as u16),
            (WRAPPED_SHORT, Varint) => WrappedValue::Short(varint(buf)? as i16),
            (WRAPPED_BYTE, Varint) => WrappedValue::Byte(varint(buf)? as i8),
            (WRAPPED_DATE_MILLIS, Varint) => WrappedValue::DateMillis(varint(buf)? as i64),
            (WRAPPED_EMPTY, Varint) => {
                varint(buf)?;
                WrappedValue::Null
            }
            (WRAPPED_INSTANT_SECONDS, Varint) => {
                raw.instant_seconds = Some(varint(buf)? as i64);
                continue;
            }
            (WRAPPED_INSTANT_NANOS, Varint) => {
                raw.instant_nanos = Some(varint(buf)? as i32);
                continue;
            }
            (WRAPPED_TYPE_NAME, LengthDelimited) => {
                let bytes = length_delimited(buf)?;
                raw.type_name = Some(
                    std::str::from_utf8(bytes)
                        .map_err(|_| malformed("wrappedTypeName is not UTF-8"))?
                        .to_string(),
                );
                continue;
            }
            (WRAPPED_TYPE_ID, Varint) => {
                raw.type_id = Some(varint(buf)? as u32);
                continue;
            }
            (WRAPPED_ENUM, Varint) => {
                raw.enum_number = Some(varint(buf)? as i32);
                continue;
            }
            (WRAPPED_MESSAGE, LengthDelimited) => {
                raw.message = Some(Bytes::copy_from_slice(length_delimited(buf)?));
                continue;
            }
            (
                WRAPPED_CONTAINER_SIZE
                | WRAPPED_CONTAINER_TYPE_NAME
                | WRAPPED_CONTAINER_TYPE_ID
                | WRAPPED_CONTAINER_MESSAGE,
                _,
            ) => {
                raw.container = true;
                skip(buf, wire)?;
                continue;
            }
            (f, w) if f <= WRAPPED_CONTAINER_MESSAGE => {
                return Err(malformed(format!("field {f} with wire type {w:?}")))
            }
            // Unknown fields are skipped, as protobuf readers do.
            (_, w) => {
                skip(buf, w)?;
                continue;
            }
        };
        raw.scalar = Some(scalar);
    }
    Ok(raw)
}

/// Decodes a WrappedMessage; messages and enums are looked up in `schemas`.
pub fn decode(bytes: &[u8], schemas: &Schemas) -> Result<WrappedValue, WrappedError> {
    let raw = read_raw(bytes)?;
    if raw.container {
        return Err(WrappedError::Container);
    }
    if let Some(seconds) = raw.instant_seconds {
        return Ok(WrappedValue::Instant {
            seconds,
            nanos: raw.instant_nanos.unwrap_or(0),
        });
    }
    if raw.message.is_none() && raw.enum_number.is_none() {
        return Ok(raw.scalar.unwrap_or(WrappedValue::Null));
    }
    let what = if raw.message.is_some() {
        "message"
    } else {
        "enum"
    };
    let ty = match (raw.type_id, &raw.type_name) {
        (Some(id), _) => schemas
            .type_by_id(id)
            .ok_or(WrappedError::UnknownTypeId(id))?,
        (None, Some(name)) => schemas
            .message(name)
            .map(TypeDescriptor::Message)
            .or_else(|| schemas.enumeration(name).map(TypeDescriptor::Enum))
            .ok_or_else(|| WrappedError::UnknownTypeName(name.clone()))?,
        (None, None) => return Err(WrappedError::MissingType(what)),
    };
    match (ty, raw.message, raw.enum_number) {
        (TypeDescriptor::Message(desc), Some(bytes), _) => {
            let name = desc.full_name().to_string();
            DynamicMessage::decode(desc, bytes)
                .map(WrappedValue::Message)
                .map_err(|e| WrappedError::BadMessage {
                    type_name: name,
                    reason: e.to_string(),
                })
        }
        (TypeDescriptor::Enum(descriptor), None, Some(number)) => {
            Ok(WrappedValue::Enum { descriptor, number })
        }
        (t, _, _) => Err(malformed(format!("{} is not a {what}", t.full_name()))),
    }
}

/// The string a WrappedMessage carries, if it is exactly a wrapped string (no schema needed).
pub fn decode_string(bytes: &[u8]) -> Option<String> {
    match read_raw(bytes).ok()? {
        Raw {
            scalar: Some(WrappedValue::String(s)),
            message: None,
            enum_number: None,
            type_name: None,
            type_id: None,
            instant_seconds: None,
            instant_nanos: None,
            container: false,
        } => Some(s),
        _ => None,
    }
}

/// `s` as a WrappedMessage (field 9).
pub fn encode_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 6);
    put_bytes(&mut out, WRAPPED_STRING, s.as_bytes());
    out
}

fn put_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::Varint, out);
    encode_varint(v, out);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    encode_key(field, WireType::ThirtyTwoBit, out);
    out.put_u32_le(v);
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::SixtyFourBit, out);
    out.put_u64_le(v);
}

/// The type reference ProtoStream writes: the `@TypeId` if the type has one, else its name.
fn put_type(out: &mut Vec<u8>, full_name: &str, schemas: &Schemas) {
    match schemas.type_id(full_name) {
        Some(id) => put_varint(out, WRAPPED_TYPE_ID, id as u64),
        None => put_bytes(out, WRAPPED_TYPE_NAME, full_name.as_bytes()),
    }
}

impl WrappedValue {
    /// A field value as the Java server wraps it in a projection: ProtoStream unmarshals a field
    /// to its Java type and wraps that, so every 32-bit integer kind travels as an `Integer`
    /// (field 5), every 64-bit one as a `Long` (field 3), `bytes` as `byte[]`. Lists and maps
    /// have no single wrapped form (`None`).
    pub fn from_field(
        value: &prost_reflect::Value,
        kind: &prost_reflect::Kind,
    ) -> Option<WrappedValue> {
        use prost_reflect::{Kind, Value};
        Some(match (value, kind) {
            (Value::Bool(v), _) => WrappedValue::Bool(*v),
            (Value::I32(v), _) => WrappedValue::Int32(*v),
            (Value::U32(v), _) => WrappedValue::Int32(*v as i32),
            (Value::I64(v), _) => WrappedValue::Int64(*v),
            (Value::U64(v), _) => WrappedValue::Int64(*v as i64),
            (Value::F32(v), _) => WrappedValue::Float(*v),
            (Value::F64(v), _) => WrappedValue::Double(*v),
            (Value::String(v), _) => WrappedValue::String(v.clone()),
            (Value::Bytes(v), _) => WrappedValue::Bytes(v.clone()),
            (Value::EnumNumber(n), Kind::Enum(descriptor)) => WrappedValue::Enum {
                descriptor: descriptor.clone(),
                number: *n,
            },
            (Value::Message(m), _) => WrappedValue::Message(m.clone()),
            _ => return None,
        })
    }

    /// The WrappedMessage bytes of this value. `schemas` supplies the `@TypeId` of messages and
    /// enums (types without one are written by full name).
    pub fn encode(&self, schemas: &Schemas) -> Vec<u8> {
        let mut out = Vec::new();
        // Java ints are sign-extended to 64 bits on the wire (protobuf int32).
        let i32v = |v: i32| v as i64 as u64;
        match self {
            // ProtoStream writes nothing for a top-level null.
            WrappedValue::Null => {}
            WrappedValue::Double(v) => put_fixed64(&mut out, WRAPPED_DOUBLE, v.to_bits()),
            WrappedValue::Float(v) => put_fixed32(&mut out, WRAPPED_FLOAT, v.to_bits()),
            WrappedValue::Int64(v) => put_varint(&mut out, WRAPPED_INT64, *v as u64),
            WrappedValue::UInt64(v) => put_varint(&mut out, WRAPPED_UINT64, *v),
            WrappedValue::Int32(v) => put_varint(&mut out, WRAPPED_INT32, i32v(*v)),
            WrappedValue::Fixed64(v) => put_fixed64(&mut out, WRAPPED_FIXED64, *v),
            WrappedValue::Fixed32(v) => put_fixed32(&mut out, WRAPPED_FIXED32, *v),
            WrappedValue::Bool(v) => put_varint(&mut out, WRAPPED_BOOL, *v as u64),
            WrappedValue::String(s) => put_bytes(&mut out, WRAPPED_STRING, s.as_bytes()),
            WrappedValue::Bytes(b) => put_bytes(&mut out, WRAPPED_BYTES, b),
            WrappedValue::UInt32(v) => put_varint(&mut out, WRAPPED_UINT32, *v as u64),
            WrappedValue::SFixed32(v) => put_fixed32(&mut out, WRAPPED_SFIXED32, *v as u32),
            WrappedValue::SFixed64(v) => put_fixed64(&mut out, WRAPPED_SFIXED64, *v as u64),
            WrappedValue::SInt32(v) => put_varint(
                &mut out,
                WRAPPED_SINT32,
                ((*v << 1) ^ (*v >> 31)) as u32 as u64,
            ),
            WrappedValue::SInt64(v) => {
                put_varint(&mut out, WRAPPED_SINT64, ((*v << 1) ^ (*v >> 63)) as u64)
            }
            WrappedValue::Char(c) => put_varint(&mut out, WRAPPED_CHAR, *c as u64),
            WrappedValue::Short(v) => put_varint(&mut out, WRAPPED_SHORT, i32v(*v as i32)),
            WrappedValue::Byte(v) => put_varint(&mut out, WRAPPED_BYTE, i32v(*v as i32)),
            WrappedValue::DateMillis(v) => put_varint(&mut out, WRAPPED_DATE_MILLIS, *v as u64),
            WrappedValue::Instant { seconds, nanos } => {
                put_varint(&mut out, WRAPPED_INSTANT_SECONDS, *seconds as u64);
                put_varint(&mut out, WRAPPED_INSTANT_NANOS, i32v(*nanos));
            }
            WrappedValue::Enum { descriptor, number } => {
                put_type(&mut out, descriptor.full_name(), schemas);
                put_varint(&mut out, WRAPPED_ENUM, i32v(*number));
            }
            WrappedValue::Message(m) => {
                put_type(&mut out, m.descriptor().full_name(), schemas);
                put_bytes(&mut out, WRAPPED_MESSAGE, &m.encode_to_vec());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
