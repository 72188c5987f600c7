//! Response bodies with their per-version rules (reference §7, §8, §9, §11), encode/read pairs.

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::{op, status, version};
use crate::error::DecodeError;
use crate::header::ResponseHeader;
use crate::media::MediaType;
use crate::primitives::{put_bool, put_bytes, put_string, put_vint, put_vlong, Reader, Result};
use crate::request::{CounterConfig, Xid};

/// The metadata block (§7.1). Lifespan and max-idle travel in whole seconds, timestamps in epoch ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMetadata {
    /// `(created_ms, lifespan_seconds)`, `None` = immortal.
    pub lifespan: Option<(i64, u32)>,
    /// `(last_used_ms, max_idle_seconds)`, `None` = no max-idle.
    pub max_idle: Option<(i64, u32)>,
    pub version: i64,
}

impl EntryMetadata {
    /// What the 4.x previous-value block says when there was no previous entry: flags 3, version -1.
    pub const ABSENT: EntryMetadata = EntryMetadata {
        lifespan: None,
        max_idle: None,
        version: -1,
    };

    pub fn write(&self, buf: &mut BytesMut) {
        let mut flags = 0u8;
        if self.lifespan.is_none() {
            flags |= 0x01;
        }
        if self.max_idle.is_none() {
            flags |= 0x02;
        }
        buf.put_u8(flags);
        if let Some((created, lifespan)) = self.lifespan {
            buf.put_i64(created);
            put_vint(buf, lifespan);
        }
        if let Some((last_used, max_idle)) = self.max_idle {
            buf.put_i64(last_used);
            put_vint(buf, max_idle);
        }
        buf.put_i64(self.version);
    }

    pub fn read(r: &mut Reader<'_>) -> Result<EntryMetadata> {
        let flags = r.u8()?;
        let lifespan = if flags & 0x01 == 0 {
            Some((r.i64()?, r.vint()?))
        } else {
            None
        };
        let max_idle = if flags & 0x02 == 0 {
            Some((r.i64()?, r.vint()?))
        } else {
            None
        };
        Ok(EntryMetadata {
            lifespan,
            max_idle,
            version: r.i64()?,
        })
    }
}

/// A previous (or current, for "not executed") value returned with statuses 0x03/0x04.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousValue {
    /// Only travels in 4.0+; read back as `ABSENT` metadata-free values before that.
    pub metadata: EntryMetadata,
    pub value: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingInfo {
    pub key_type: MediaType,
    pub value_type: MediaType,
    pub server_version: u8,
    pub operations: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterationEntry {
    pub metadata: Option<EntryMetadata>,
    pub key: Bytes,
    /// One value normally; N when the filter-converter projects N columns.
    pub values: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// Status only.
    Empty,
    /// 0x50 error responses.
    Error(String),
    /// GET, EXEC, QUERY: one byte array, never metadata.
    Value(Bytes),
    /// Statuses 0x03/0x04. `None` = there was no previous entry.
    Previous(Option<PreviousValue>),
    Ping(PingInfo),
    Versioned {
        version: i64,
        value: Bytes,
    },
    WithMetadata {
        metadata: EntryMetadata,
        value: Bytes,
    },
    Stats(Vec<(String, String)>),
    BulkGet(Vec<(Bytes, Bytes)>),
    BulkGetKeys(Vec<Bytes>),
    AuthMechs(Vec<String>),
    Auth {
        complete: bool,
        challenge: Bytes,
    },
    Size(u64),
    GetAll(Vec<(Bytes, Bytes)>),
    IterationId(String),
    IterationBatch {
        finished_segments: Bytes,
        projection_count: u32,
        entries: Vec<IterationEntry>,
    },
    CounterConfig(CounterConfig),
    CounterValue(i64),
    Names(Vec<String>),
    MultimapValues(Vec<Bytes>),
    MultimapWithMetadata {
        metadata: EntryMetadata,
        values: Vec<Bytes>,
    },
    Bool(bool),
    XaCode(i32),
    Xids(Vec<Xid>),
    StreamId(i32),
    GetStreamChunk {
        stream_id: i32,
        complete: bool,
        metadata: Option<EntryMetadata>,
        chunk: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub header: ResponseHeader,
    pub body: ResponseBody,
}

impl Response {
    /// A response to `request_opcode` with the given status and body and no topology.
    pub fn new(message_id: u64, request_opcode: u8, status: u8, body: ResponseBody) -> Response {
        Response {
            header: ResponseHeader {
                message_id,
                opcode: op::response_for(request_opcode),
                status,
                topology: None,
            },
            body,
        }
    }

    /// An error response: op 0x50, never topology (§4).
    pub fn error(message_id: u64, status: u8, message: impl Into<String>) -> Response {
        Response {
            header: ResponseHeader {
                message_id,
                opcode: op::ERROR_RESPONSE,
                status,
                topology: None,
            },
            body: ResponseBody::Error(message.into()),
        }
    }

    /// Encodes header and body for a request of protocol `version`.
    pub fn write(&self, buf: &mut BytesMut, version: u8) {
        self.header.write(buf);
        self.body.write(buf, version);
    }

    /// Reads a response to a request `request_opcode` sent at `version` by a client of `intelligence`.
    pub fn read(
        r: &mut Reader<'_>,
        request_opcode: u8,
        version: u8,
        intelligence: u8,
    ) -> Result<Response> {
        let header = ResponseHeader::read(r, intelligence)?;
        let body = ResponseBody::read(r, &header, request_opcode, version)?;
        Ok(Response { header, body })
    }
}

fn write_values(buf: &mut BytesMut, values: &[Bytes]) {
    put_vint(buf, values.len() as u32);
    for v in values {
        put_bytes(buf, v);
    }
}

fn read_values(r: &mut Reader<'_>) -> Result<Vec<Bytes>> {
    let n = r.count(1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.bytes()?);
    }
    Ok(out)
}

fn read_pairs_terminated(r: &mut Reader<'_>, with_value: bool) -> Result<Vec<(Bytes, Bytes)>> {
    let mut out = Vec::new();
    while r.u8()? == 1 {
        let k = r.bytes()?;
        let v = if with_value { r.bytes()? } else { Bytes::new() };
        out.push((k, v));
    }
    Ok(out)
}

impl ResponseBody {
    pub fn write(&self, buf: &mut BytesMut, v: u8) {
        match self {
            ResponseBody::Empty => {}
            ResponseBody::Error(msg) => put_string(buf, msg),
            ResponseBody::Value(b) => put_bytes(buf, b),
            ResponseBody::Previous(prev) => {
                if v >= version::V40 {
                    match prev {
                        Some(p) => {
                            p.metadata.write(buf);
                            put_bytes(buf, &p.value);
                        }
                        None => {
                            EntryMetadata::ABSENT.write(buf);
                            put_vint(buf, 0);
                        }
                    }
                } else {
                    put_bytes(buf, prev.as_ref().map(|p| &p.value[..]).unwrap_or(&[]));
                }
            }
            ResponseBody::Ping(p) => {
                if v >= version::V29 {
                    p.key_type.write(buf);
                    p.value_type.write(buf);
                }
                if v >= version::V30 {
                    buf.put_u8(p.server_version);
                    put_vint(buf, p.operations.len() as u32);
                    for o in &p.operations {
                        buf.put_u16(u16::from(*o));
                    }
                }
            }
            ResponseBody::Versioned { version, value } => {
                buf.put_i64(*version);
                put_bytes(buf, value);
            }
            ResponseBody::WithMetadata { metadata, value } => {
                metadata.write(buf);
                put_bytes(buf, value);
            }
            ResponseBody::Stats(stats) => {
                put_vint(buf, stats.len() as u32);
                for (k, val) in stats {
                    put_string(buf, k);
                    put_string(buf, val);
                }
            }
            ResponseBody::BulkGet(entries) => {
                for (k, val) in entries {
                    buf.put_u8(1);
                    put_bytes(buf, k);
                    put_bytes(buf, val);
                }
                buf.put_u8(0);
            }
            ResponseBody::BulkGetKeys(keys) => {
                for k in keys {
                    buf.put_u8(1);
                    put_bytes(buf, k);
                }
                buf.put_u8(0);
            }
            ResponseBody::AuthMechs(mechs) => {
                put_vint(buf, mechs.len() as u32);
                for m in mechs {
                    put_string(buf, m);
                }
            }
            ResponseBody::Auth {
                complete,
                challenge,
            } => {
                put_bool(buf, *complete);
                put_bytes(buf, challenge);
            }
            ResponseBody::Size(n) => put_vlong(buf, *n),
            ResponseBody::GetAll(entries) => {
                put_vint(buf, entries.len() as u32);
                for (k, val) in entries {
                    put_bytes(buf, k);
                    put_bytes(buf, val);
                }
            }
            ResponseBody::IterationId(id) => put_string(buf, id),
            ResponseBody::IterationBatch {
                finished_segments,
                projection_count,
                entries,
            } => {
                put_bytes(buf, finished_segments);
                put_vint(buf, entries.len() as u32);
                if entries.is_empty() {
                    return;
                }
                if v >= version::V24 {
                    put_vint(buf, *projection_count);
                }
                for e in entries {
                    if v >= version::V25 {
                        match &e.metadata {
                            Some(m) => {
                                buf.put_u8(1);
                                m.write(buf);
                            }
                            None => buf.put_u8(0),
                        }
                    }
                    put_bytes(buf, &e.key);
                    for val in &e.values {
                        put_bytes(buf, val);
                    }
                }
            }
            ResponseBody::CounterConfig(c) => c.write(buf),
            ResponseBody::CounterValue(n) => buf.put_i64(*n),
            ResponseBody::Names(names) => {
                put_vint(buf, names.len() as u32);
                for n in names {
                    put_string(buf, n);
                }
            }
            ResponseBody::MultimapValues(values) => write_values(buf, values),
            ResponseBody::MultimapWithMetadata { metadata, values } => {
                metadata.write(buf);
                write_values(buf, values);
            }
            ResponseBody::Bool(b) => put_bool(buf, *b),
            ResponseBody::XaCode(c) => buf.put_i32(*c),
            ResponseBody::Xids(xids) => {
                put_vint(buf, xids.len() as u32);
                for x in xids {
                    crate::primitives::put_signed_vint(buf, x.format_id);
                    buf.put_u8(x.global_transaction_id.len() as u8);
                    buf.put_slice(&x.global_transaction_id);
                    buf.put_u8(x.branch_qualifier.len() as u8);
                    buf.put_slice(&x.branch_qualifier);
                }
            }
            ResponseBody::StreamId(id) => buf.put_i32(*id),
            ResponseBody::GetStreamChunk {
                stream_id,
                complete,
                metadata,
                chunk,
            } => {
                buf.put_i32(*stream_id);
                put_bool(buf, *complete);
                if let Some(m) = metadata {
                    m.write(buf);
                }
                put_bytes(buf, chunk);
            }
        }
    }

    /// Reads the body of a response whose header is `h`, answering `request_opcode` at version `v`.
    pub fn read(
        r: &mut Reader<'_>,
        h: &ResponseHeader,
        request_opcode: u8,
        v: u8,
    ) -> Result<ResponseBody> {
        if h.opcode == op::ERROR_RESPONSE {
            return Ok(ResponseBody::Error(r.string()?));
        }
        if h.opcode != op::response_for(request_opcode) {
            return Err(DecodeError::malformed(format!(
                "response op 0x{:02X} does not answer request op 0x{request_opcode:02X}",
                h.opcode
            )));
        }
        // 2.4-2.8 servers send 0x06/0x07/0x08 instead of 0x00/0x03/0x04 for object-storage caches
        // (§7.3); the body is the same.
        let st = match h.status {
            status::SUCCESS_OBJ_STORAGE => status::SUCCESS,
            status::SUCCESS_WITH_PREVIOUS_OBJ_STORAGE => status::SUCCESS_WITH_PREVIOUS,
            status::NOT_EXECUTED_WITH_PREVIOUS_OBJ_STORAGE => status::NOT_EXECUTED_WITH_PREVIOUS,
            other => other,
        };
        if st == status::SUCCESS_WITH_PREVIOUS || st == status::NOT_EXECUTED_WITH_PREVIOUS {
            // Counters reuse 0x04 for "boundary reached" without a body.
            if matches!(
                request_opcode,
                op::COUNTER_ADD_AND_GET
                    | op::COUNTER_CAS
                    | op::COUNTER_GET_AND_SET
                    | op::COUNTER_RESET
            ) {
                return Ok(ResponseBody::Empty);
            }
            if v >= version::V40 {
                let metadata = EntryMetadata::read(r)?;
                let value = r.bytes()?;
                if metadata.version == -1 && value.is_empty() {
                    return Ok(ResponseBody::Previous(None));
                }
                return Ok(ResponseBody::Previous(Some(PreviousValue {
                    metadata,
                    value,
                })));
            }
            let value = r.bytes()?;
            return Ok(ResponseBody::Previous(if value.is_empty() {
                None
            } else {
                Some(PreviousValue {
                    metadata: EntryMetadata::ABSENT,
                    value,
                })
            }));
        }
        if st != status::SUCCESS {
            return Ok(ResponseBody::Empty);
        }
        let body = match request_opcode {
            op::GET | op::EXEC | op::QUERY => ResponseBody::Value(r.bytes()?),
            op::PING => {
                let (key_type, value_type) = if v >= version::V29 {
                    (MediaType::read(r)?, MediaType::read(r)?)
                } else {
                    (MediaType::Unspecified, MediaType::Unspecified)
                };
                let (server_version, operations) = if v >= version::V30 {
                    let sv = r.u8()?;
                    let n = r.count(2)?;
                    let mut ops = Vec::with_capacity(n);
                    for _ in 0..n {
                        let code = r.u16()?;
                        let code = u8::try_from(code).map_err(|_| {
                            DecodeError::malformed(format!("op code 0x{code:04X} out of range"))
                        })?;
                        ops.push(code);
                    }
                    (sv, ops)
                } else {
                    (0, Vec::new())
                };
                ResponseBody::Ping(PingInfo {
                    key_type,
                    value_type,
                    server_version,
                    operations,
                })
            }
            op::GET_WITH_VERSION => ResponseBody::Versioned {
                version: r.i64()?,
                value: r.bytes()?,
            },
            op::GET_WITH_METADATA | op::GET_STREAM => ResponseBody::WithMetadata {
                metadata: EntryMetadata::read(r)?,
                value: r.bytes()?,
            },
            op::STATS => {
                let n = r.count(2)?;
                let mut stats = Vec::with_capacity(n);
                for _ in 0..n {
                    stats.push((r.string()?, r.string()?));
                }
                ResponseBody::Stats(stats)
            }
            op::BULK_GET => ResponseBody::BulkGet(read_pairs_terminated(r, true)?),
            op::BULK_GET_KEYS => ResponseBody::BulkGetKeys(
                read_pairs_terminated(r, false)?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect(),
            ),
            op::AUTH_MECH_LIST | op::COUNTER_GET_NAMES => {
                let n = r.count(1)?;
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    names.push(r.string()?);
                }
                if request_opcode == op::AUTH_MECH_LIST {
                    ResponseBody::AuthMechs(names)
                } else {
                    ResponseBody::Names(names)
                }
            }
            op::AUTH => ResponseBody::Auth {
                complete: r.bool()?,
                challenge: r.bytes()?,
            },
            op::SIZE | op::SIZE_MULTIMAP => ResponseBody::Size(r.vlong()?),
            op::GET_ALL => {
                let n = r.count(2)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((r.bytes()?, r.bytes()?));
                }
                ResponseBody::GetAll(entries)
            }
            op::ITERATION_START => ResponseBody::IterationId(r.string()?),
            op::ITERATION_NEXT => {
                let finished_segments = r.bytes()?;
                // An entry can be as short as one byte (2.4, projection count 0: just the key).
                let n = r.count(1)?;
                let projection_count = if n > 0 && v >= version::V24 {
                    r.vint()?
                } else {
                    1
                };
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let metadata = if v >= version::V25 && r.u8()? == 1 {
                        Some(EntryMetadata::read(r)?)
                    } else {
                        None
                    };
                    let key = r.bytes()?;
                    let mut values = Vec::with_capacity(projection_count.min(64) as usize);
                    for _ in 0..projection_count {
                        values.push(r.bytes()?);
                    }
                    entries.push(IterationEntry {
                        metadata,
                        key,
                        values,
                    });
                }
                ResponseBody::IterationBatch {
                    finished_segments,
                    projection_count,
                    entries,
                }
            }
            op::COUNTER_GET_CONFIGURATION => ResponseBody::CounterConfig(CounterConfig::read(r)?),
            op::COUNTER_ADD_AND_GET
            | op::COUNTER_GET
            | op::COUNTER_CAS
            | op::COUNTER_GET_AND_SET => ResponseBody::CounterValue(r.i64()?),
            op::GET_MULTIMAP => ResponseBody::MultimapValues(read_values(r)?),
            op::GET_MULTIMAP_WITH_METADATA => ResponseBody::MultimapWithMetadata {
                metadata: EntryMetadata::read(r)?,
                values: read_values(r)?,
            },
            op::REMOVE_KEY_MULTIMAP
            | op::REMOVE_ENTRY_MULTIMAP
            | op::CONTAINS_ENTRY_MULTIMAP
            | op::CONTAINS_KEY_MULTIMAP
            | op::CONTAINS_VALUE_MULTIMAP => ResponseBody::Bool(r.bool()?),
            op::PREPARE_TX | op::PREPARE_TX_2 | op::COMMIT_TX | op::ROLLBACK_TX => {
                ResponseBody::XaCode(r.i32()?)
            }
            op::FETCH_TX_RECOVERY => {
                let n = r.count(3)?;
                let mut xids = Vec::with_capacity(n);
                for _ in 0..n {
                    let format_id = r.signed_vint()?;
                    let gl = r.u8()? as usize;
                    let g = Bytes::copy_from_slice(r.raw(gl)?);
                    let bl = r.u8()? as usize;
                    let b = Bytes::copy_from_slice(r.raw(bl)?);
                    xids.push(Xid {
                        format_id,
                        global_transaction_id: g,
                        branch_qualifier: b,
                    });
                }
                ResponseBody::Xids(xids)
            }
            op::START_PUT_STREAM => ResponseBody::StreamId(r.i32()?),
            op::START_GET_STREAM => ResponseBody::GetStreamChunk {
                stream_id: r.i32()?,
                complete: r.bool()?,
                metadata: Some(EntryMetadata::read(r)?),
                chunk: r.bytes()?,
            },
            op::NEXT_GET_STREAM => ResponseBody::GetStreamChunk {
                stream_id: r.i32()?,
                complete: r.bool()?,
                metadata: None,
                chunk: r.bytes()?,
            },
            _ => ResponseBody::Empty,
        };
        Ok(body)
    }
}
