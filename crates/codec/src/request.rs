//! Typed request bodies for every op code of the reference's table (§8), with read/write pairs.
//! Field orders follow the server grammar `hotrod.gr`, which is the most precise statement.

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::{op, version};
use crate::error::DecodeError;
use crate::expiration::Expiration;
use crate::primitives::{
    put_bool, put_bytes, put_optional_bytes, put_signed_vint, put_string, put_vint, Reader, Result,
};

/// A filter/converter factory name with its parameters (listener and iteration requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factory {
    pub name: String,
    pub params: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xid {
    pub format_id: i32,
    pub global_transaction_id: Bytes,
    pub branch_qualifier: Bytes,
}

/// Control byte bits of a transaction modification (§15.3).
pub mod control {
    pub const NOT_READ: u8 = 0x01;
    pub const NON_EXISTING: u8 = 0x02;
    pub const REMOVE_OP: u8 = 0x04;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxModification {
    pub key: Bytes,
    pub control: u8,
    /// Present unless NOT_READ or NON_EXISTING.
    pub version_read: Option<i64>,
    /// Present unless REMOVE_OP.
    pub write: Option<(Expiration, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterConfig {
    /// bit0 WEAK, bit1 BOUNDED, bit2 PERSISTENT.
    pub flags: u8,
    pub concurrency_level: Option<u32>,
    pub bounds: Option<(i64, i64)>,
    pub initial_value: i64,
}

impl CounterConfig {
    pub fn read(r: &mut Reader<'_>) -> Result<CounterConfig> {
        let flags = r.u8()?;
        let concurrency_level = if flags & 1 != 0 {
            Some(r.vint()?)
        } else {
            None
        };
        let bounds = if flags & 2 != 0 {
            Some((r.i64()?, r.i64()?))
        } else {
            None
        };
        Ok(CounterConfig {
            flags,
            concurrency_level,
            bounds,
            initial_value: r.i64()?,
        })
    }

    pub fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(self.flags);
        if self.flags & 1 != 0 {
            put_vint(buf, self.concurrency_level.unwrap_or(0));
        }
        if self.flags & 2 != 0 {
            let (lo, hi) = self.bounds.unwrap_or((i64::MIN, i64::MAX));
            buf.put_i64(lo);
            buf.put_i64(hi);
        }
        buf.put_i64(self.initial_value);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        key: Bytes,
        expiration: Expiration,
        value: Bytes,
    },
    Get {
        key: Bytes,
    },
    PutIfAbsent {
        key: Bytes,
        expiration: Expiration,
        value: Bytes,
    },
    Replace {
        key: Bytes,
        expiration: Expiration,
        value: Bytes,
    },
    ReplaceIfUnmodified {
        key: Bytes,
        expiration: Expiration,
        version: i64,
        value: Bytes,
    },
    Remove {
        key: Bytes,
    },
    RemoveIfUnmodified {
        key: Bytes,
        version: i64,
    },
    ContainsKey {
        key: Bytes,
    },
    GetWithVersion {
        key: Bytes,
    },
    Clear,
    Stats,
    Ping,
    BulkGet {
        count: u32,
    },
    GetWithMetadata {
        key: Bytes,
    },
    BulkGetKeys {
        scope: u32,
    },
    Query {
        query: Bytes,
    },
    AuthMechList,
    Auth {
        mechanism: String,
        response: Bytes,
    },
    AddClientListener {
        listener_id: Bytes,
        include_current_state: bool,
        filter: Option<Factory>,
        converter: Option<Factory>,
        /// From 2.1.
        use_raw_data: bool,
        /// From 2.6; 0 = all.
        interests: u32,
    },
    RemoveClientListener {
        listener_id: Bytes,
    },
    Size,
    Exec {
        task: String,
        params: Vec<(String, Bytes)>,
    },
    PutAll {
        expiration: Expiration,
        entries: Vec<(Bytes, Bytes)>,
    },
    GetAll {
        keys: Vec<Bytes>,
    },
    IterationStart {
        segments: Option<Bytes>,
        filter_converter: Option<Factory>,
        batch_size: u32,
        include_metadata: bool,
    },
    IterationNext {
        iteration_id: String,
    },
    IterationEnd {
        iteration_id: String,
    },
    GetStream {
        key: Bytes,
        offset: u32,
    },
    /// `version`: 0 = put, -1 = putIfAbsent, else replaceIfUnmodified. Chunks are joined.
    PutStream {
        key: Bytes,
        expiration: Expiration,
        version: i64,
        value: Bytes,
    },
    PrepareTx {
        xid: Xid,
        one_phase_commit: bool,
        modifications: Vec<TxModification>,
    },
    CommitTx {
        xid: Xid,
    },
    RollbackTx {
        xid: Xid,
    },
    AddBloomFilterListener {
        listener_id: Bytes,
        bloom_bits: u32,
    },
    UpdateBloomFilter {
        bits: Bytes,
    },
    CounterCreate {
        name: String,
        config: CounterConfig,
    },
    CounterGetConfiguration {
        name: String,
    },
    CounterIsDefined {
        name: String,
    },
    CounterAddAndGet {
        name: String,
        delta: i64,
    },
    CounterReset {
        name: String,
    },
    CounterGet {
        name: String,
    },
    CounterCas {
        name: String,
        expect: i64,
        update: i64,
    },
    CounterAddListener {
        name: String,
        listener_id: Bytes,
    },
    CounterRemoveListener {
        name: String,
        listener_id: Bytes,
    },
    CounterRemove {
        name: String,
    },
    CounterGetNames,
    GetMultimap {
        key: Bytes,
        supports_duplicates: bool,
    },
    GetMultimapWithMetadata {
        key: Bytes,
        supports_duplicates: bool,
    },
    PutMultimap {
        key: Bytes,
        expiration: Expiration,
        value: Bytes,
        supports_duplicates: bool,
    },
    RemoveKeyMultimap {
        key: Bytes,
        supports_duplicates: bool,
    },
    RemoveEntryMultimap {
        key: Bytes,
        expiration: Expiration,
        value: Bytes,
        supports_duplicates: bool,
    },
    SizeMultimap {
        supports_duplicates: bool,
    },
    ContainsEntryMultimap {
        key: Bytes,
        expiration: Expiration,
        value: Bytes,
        supports_duplicates: bool,
    },
    ContainsKeyMultimap {
        key: Bytes,
        supports_duplicates: bool,
    },
    ContainsValueMultimap {
        expiration: Expiration,
        value: Bytes,
        supports_duplicates: bool,
    },
    ForgetTx {
        xid: Xid,
    },
    FetchTxRecovery,
    PrepareTx2 {
        xid: Xid,
        one_phase_commit: bool,
        recoverable: bool,
        timeout_ms: i64,
        modifications: Vec<TxModification>,
    },
    CounterGetAndSet {
        name: String,
        value: i64,
    },
    StartPutStream {
        key: Bytes,
        expiration: Expiration,
        version: i64,
    },
    NextPutStream {
        stream_id: i32,
        last_chunk: bool,
        chunk: Bytes,
    },
    EndPutStream {
        stream_id: i32,
    },
    StartGetStream {
        key: Bytes,
        batch_size: u32,
    },
    NextGetStream {
        stream_id: i32,
    },
    EndGetStream {
        stream_id: i32,
    },
}

fn read_factory(r: &mut Reader<'_>, name: String) -> Result<Option<Factory>> {
    if name.is_empty() {
        return Ok(None);
    }
    let n = r.byte_count(1)?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        params.push(r.bytes()?);
    }
    Ok(Some(Factory { name, params }))
}

fn write_factory(buf: &mut BytesMut, f: &Option<Factory>) {
    match f {
        None => put_string(buf, ""),
        Some(f) => {
            put_string(buf, &f.name);
            // The grammar reads a byte; a vInt is the same below 128 (all a server accepts).
            put_vint(buf, f.params.len() as u32);
            for p in &f.params {
                put_bytes(buf, p);
            }
        }
    }
}

fn read_xid(r: &mut Reader<'_>) -> Result<Xid> {
    let format_id = r.signed_vint()?;
    let glen = r.u8()? as usize;
    let gtrid = Bytes::copy_from_slice(r.raw(glen)?);
    let blen = r.u8()? as usize;
    let bqual = Bytes::copy_from_slice(r.raw(blen)?);
    Ok(Xid {
        format_id,
        global_transaction_id: gtrid,
        branch_qualifier: bqual,
    })
}

fn write_xid(buf: &mut BytesMut, x: &Xid) {
    put_signed_vint(buf, x.format_id);
    buf.put_u8(x.global_transaction_id.len() as u8);
    buf.put_slice(&x.global_transaction_id);
    buf.put_u8(x.branch_qualifier.len() as u8);
    buf.put_slice(&x.branch_qualifier);
}

fn read_modifications(r: &mut Reader<'_>, version: u8) -> Result<Vec<TxModification>> {
    let n = r.count(2)?;
    let mut mods = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.bytes()?;
        let control = r.u8()?;
        let version_read = if control & (control::NOT_READ | control::NON_EXISTING) == 0 {
            Some(r.i64()?)
        } else {
            None
        };
        let write = if control & control::REMOVE_OP == 0 {
            let e = Expiration::read(r, version)?;
            Some((e, r.bytes()?))
        } else {
            None
        };
        mods.push(TxModification {
            key,
            control,
            version_read,
            write,
        });
    }
    Ok(mods)
}

fn write_modifications(buf: &mut BytesMut, mods: &[TxModification], version: u8) {
    put_vint(buf, mods.len() as u32);
    for m in mods {
        put_bytes(buf, &m.key);
        buf.put_u8(m.control);
        if m.control & (control::NOT_READ | control::NON_EXISTING) == 0 {
            buf.put_i64(m.version_read.unwrap_or(0));
        }
        if m.control & control::REMOVE_OP == 0 {
            let (e, v) = m
                .write
                .clone()
                .unwrap_or((Expiration::DEFAULT, Bytes::new()));
            e.write(buf, version);
            put_bytes(buf, &v);
        }
    }
}

fn dup(r: &mut Reader<'_>, v: u8) -> Result<bool> {
    if v >= version::V40 {
        r.bool()
    } else {
        Ok(false)
    }
}

fn put_dup(buf: &mut BytesMut, v: u8, d: bool) {
    if v >= version::V40 {
        put_bool(buf, d);
    }
}

impl Request {
    /// Reads the body of a request whose header says `opcode` at `version`.
    pub fn read(r: &mut Reader<'_>, opcode: u8, v: u8) -> Result<Request> {
        use Request::*;
        let req = match opcode {
            op::PUT => Put {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
            },
            op::GET => Get { key: r.bytes()? },
            op::PUT_IF_ABSENT => PutIfAbsent {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
            },
            op::REPLACE => Replace {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
            },
            op::REPLACE_IF_UNMODIFIED => ReplaceIfUnmodified {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                version: r.i64()?,
                value: r.bytes()?,
            },
            op::REMOVE => Remove { key: r.bytes()? },
            op::REMOVE_IF_UNMODIFIED => RemoveIfUnmodified {
                key: r.bytes()?,
                version: r.i64()?,
            },
            op::CONTAINS_KEY => ContainsKey { key: r.bytes()? },
            op::GET_WITH_VERSION => GetWithVersion { key: r.bytes()? },
            op::CLEAR => Clear,
            op::STATS => Stats,
            op::PING => Ping,
            op::BULK_GET => BulkGet { count: r.vint()? },
            op::GET_WITH_METADATA => GetWithMetadata { key: r.bytes()? },
            op::BULK_GET_KEYS => BulkGetKeys { scope: r.vint()? },
            op::QUERY => Query { query: r.bytes()? },
            op::AUTH_MECH_LIST => AuthMechList,
            op::AUTH => Auth {
                mechanism: r.string()?,
                response: r.bytes()?,
            },
            op::ADD_CLIENT_LISTENER => {
                let listener_id = r.bytes()?;
                let include_current_state = r.bool()?;
                let fname = r.string()?;
                let filter = read_factory(r, fname)?;
                let cname = r.string()?;
                let converter = read_factory(r, cname)?;
                let use_raw_data = if v >= version::V21 { r.bool()? } else { false };
                let interests = if v >= version::V26 { r.vint()? } else { 0 };
                AddClientListener {
                    listener_id,
                    include_current_state,
                    filter,
                    converter,
                    use_raw_data,
                    interests,
                }
            }
            op::REMOVE_CLIENT_LISTENER => RemoveClientListener {
                listener_id: r.bytes()?,
            },
            op::SIZE => Size,
            op::EXEC => {
                let task = r.string()?;
                let n = r.byte_count(2)?;
                let mut params = Vec::with_capacity(n);
                for _ in 0..n {
                    params.push((r.string()?, r.bytes()?));
                }
                Exec { task, params }
            }
            op::PUT_ALL => {
                let expiration = Expiration::read(r, v)?;
                let n = r.count(2)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((r.bytes()?, r.bytes()?));
                }
                PutAll {
                    expiration,
                    entries,
                }
            }
            op::GET_ALL => {
                let n = r.count(1)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes()?);
                }
                GetAll { keys }
            }
            op::ITERATION_START => {
                let segments = r.optional_bytes()?;
                let filter_converter = match r.optional_string()? {
                    None => None,
                    Some(name) => {
                        let n = r.byte_count(1)?;
                        let mut params = Vec::with_capacity(n);
                        for _ in 0..n {
                            params.push(r.bytes()?);
                        }
                        Some(Factory { name, params })
                    }
                };
                let batch_size = r.vint()?;
                let include_metadata = if v >= version::V24 { r.bool()? } else { false };
                IterationStart {
                    segments,
                    filter_converter,
                    batch_size,
                    include_metadata,
                }
            }
            op::ITERATION_NEXT => IterationNext {
                iteration_id: r.string()?,
            },
            op::ITERATION_END => IterationEnd {
                iteration_id: r.string()?,
            },
            op::GET_STREAM => GetStream {
                key: r.bytes()?,
                offset: r.vint()?,
            },
            op::PUT_STREAM => {
                let key = r.bytes()?;
                let expiration = Expiration::read(r, v)?;
                let version = r.i64()?;
                // Two passes: find every chunk first and copy only once the terminator is there,
                // so that re-parsing an incomplete stream (restartable decoding) stays cheap.
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut total = 0usize;
                loop {
                    let len = r.vint()? as usize;
                    if len == 0 {
                        break;
                    }
                    let chunk = r.raw(len)?;
                    total += chunk.len();
                    if total > r.max_len() {
                        return Err(DecodeError::TooLarge {
                            len: total as u64,
                            limit: r.max_len(),
                        });
                    }
                    chunks.push(chunk);
                }
                let mut value = BytesMut::with_capacity(total);
                for chunk in chunks {
                    value.extend_from_slice(chunk);
                }
                PutStream {
                    key,
                    expiration,
                    version,
                    value: value.freeze(),
                }
            }
            op::PREPARE_TX => PrepareTx {
                xid: read_xid(r)?,
                one_phase_commit: r.bool()?,
                modifications: read_modifications(r, v)?,
            },
            op::COMMIT_TX => CommitTx { xid: read_xid(r)? },
            op::ROLLBACK_TX => RollbackTx { xid: read_xid(r)? },
            op::ADD_BLOOM_FILTER_LISTENER => AddBloomFilterListener {
                listener_id: r.bytes()?,
                bloom_bits: r.vint()?,
            },
            op::UPDATE_BLOOM_FILTER => UpdateBloomFilter { bits: r.bytes()? },
            op::COUNTER_CREATE => CounterCreate {
                name: r.string()?,
                config: CounterConfig::read(r)?,
            },
            op::COUNTER_GET_CONFIGURATION => CounterGetConfiguration { name: r.string()? },
            op::COUNTER_IS_DEFINED => CounterIsDefined { name: r.string()? },
            op::COUNTER_ADD_AND_GET => CounterAddAndGet {
                name: r.string()?,
                delta: r.i64()?,
            },
            op::COUNTER_RESET => CounterReset { name: r.string()? },
            op::COUNTER_GET => CounterGet { name: r.string()? },
            op::COUNTER_CAS => CounterCas {
                name: r.string()?,
                expect: r.i64()?,
                update: r.i64()?,
            },
            op::COUNTER_ADD_LISTENER => CounterAddListener {
                name: r.string()?,
                listener_id: r.bytes()?,
            },
            op::COUNTER_REMOVE_LISTENER => CounterRemoveListener {
                name: r.string()?,
                listener_id: r.bytes()?,
            },
            op::COUNTER_REMOVE => CounterRemove { name: r.string()? },
            op::COUNTER_GET_NAMES => CounterGetNames,
            op::GET_MULTIMAP => GetMultimap {
                key: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::GET_MULTIMAP_WITH_METADATA => GetMultimapWithMetadata {
                key: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::PUT_MULTIMAP => PutMultimap {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::REMOVE_KEY_MULTIMAP => RemoveKeyMultimap {
                key: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::REMOVE_ENTRY_MULTIMAP => RemoveEntryMultimap {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::SIZE_MULTIMAP => SizeMultimap {
                supports_duplicates: dup(r, v)?,
            },
            op::CONTAINS_ENTRY_MULTIMAP => ContainsEntryMultimap {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::CONTAINS_KEY_MULTIMAP => ContainsKeyMultimap {
                key: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::CONTAINS_VALUE_MULTIMAP => ContainsValueMultimap {
                expiration: Expiration::read(r, v)?,
                value: r.bytes()?,
                supports_duplicates: dup(r, v)?,
            },
            op::FORGET_TX => ForgetTx { xid: read_xid(r)? },
            op::FETCH_TX_RECOVERY => FetchTxRecovery,
            op::PREPARE_TX_2 => PrepareTx2 {
                xid: read_xid(r)?,
                one_phase_commit: r.bool()?,
                recoverable: r.bool()?,
                timeout_ms: r.i64()?,
                modifications: read_modifications(r, v)?,
            },
            op::COUNTER_GET_AND_SET => CounterGetAndSet {
                name: r.string()?,
                value: r.i64()?,
            },
            op::START_PUT_STREAM => StartPutStream {
                key: r.bytes()?,
                expiration: Expiration::read(r, v)?,
                version: r.i64()?,
            },
            op::NEXT_PUT_STREAM => {
                let stream_id = r.i32()?;
                let last_chunk = r.bool()?;
                let chunk = r.bytes()?;
                if chunk.is_empty() {
                    return Err(DecodeError::malformed(
                        "a put-stream chunk must not be empty",
                    ));
                }
                NextPutStream {
                    stream_id,
                    last_chunk,
                    chunk,
                }
            }
            op::END_PUT_STREAM => EndPutStream {
                stream_id: r.i32()?,
            },
            op::START_GET_STREAM => StartGetStream {
                key: r.bytes()?,
                batch_size: r.vint()?,
            },
            op::NEXT_GET_STREAM => NextGetStream {
                stream_id: r.i32()?,
            },
            op::END_GET_STREAM => EndGetStream {
                stream_id: r.i32()?,
            },
            other => return Err(DecodeError::UnknownOperation(other)),
        };
        Ok(req)
    }

    /// The request op code of this body.
    pub fn opcode(&self) -> u8 {
        use Request::*;
        match self {
            Put { .. } => op::PUT,
            Get { .. } => op::GET,
            PutIfAbsent { .. } => op::PUT_IF_ABSENT,
            Replace { .. } => op::REPLACE,
            ReplaceIfUnmodified { .. } => op::REPLACE_IF_UNMODIFIED,
            Remove { .. } => op::REMOVE,
            RemoveIfUnmodified { .. } => op::REMOVE_IF_UNMODIFIED,
            ContainsKey { .. } => op::CONTAINS_KEY,
            GetWithVersion { .. } => op::GET_WITH_VERSION,
            Clear => op::CLEAR,
            Stats => op::STATS,
            Ping => op::PING,
            BulkGet { .. } => op::BULK_GET,
            GetWithMetadata { .. } => op::GET_WITH_METADATA,
            BulkGetKeys { .. } => op::BULK_GET_KEYS,
            Query { .. } => op::QUERY,
            AuthMechList => op::AUTH_MECH_LIST,
            Auth { .. } => op::AUTH,
            AddClientListener { .. } => op::ADD_CLIENT_LISTENER,
            RemoveClientListener { .. } => op::REMOVE_CLIENT_LISTENER,
            Size => op::SIZE,
            Exec { .. } => op::EXEC,
            PutAll { .. } => op::PUT_ALL,
            GetAll { .. } => op::GET_ALL,
            IterationStart { .. } => op::ITERATION_START,
            IterationNext { .. } => op::ITERATION_NEXT,
            IterationEnd { .. } => op::ITERATION_END,
            GetStream { .. } => op::GET_STREAM,
            PutStream { .. } => op::PUT_STREAM,
            PrepareTx { .. } => op::PREPARE_TX,
            CommitTx { .. } => op::COMMIT_TX,
            RollbackTx { .. } => op::ROLLBACK_TX,
            AddBloomFilterListener { .. } => op::ADD_BLOOM_FILTER_LISTENER,
            UpdateBloomFilter { .. } => op::UPDATE_BLOOM_FILTER,
            CounterCreate { .. } => op::COUNTER_CREATE,
            CounterGetConfiguration { .. } => op::COUNTER_GET_CONFIGURATION,
            CounterIsDefined { .. } => op::COUNTER_IS_DEFINED,
            CounterAddAndGet { .. } => op::COUNTER_ADD_AND_GET,
            CounterReset { .. } => op::COUNTER_RESET,
            CounterGet { .. } => op::COUNTER_GET,
            CounterCas { .. } => op::COUNTER_CAS,
            CounterAddListener { .. } => op::COUNTER_ADD_LISTENER,
            CounterRemoveListener { .. } => op::COUNTER_REMOVE_LISTENER,
            CounterRemove { .. } => op::COUNTER_REMOVE,
            CounterGetNames => op::COUNTER_GET_NAMES,
            GetMultimap { .. } => op::GET_MULTIMAP,
            GetMultimapWithMetadata { .. } => op::GET_MULTIMAP_WITH_METADATA,
            PutMultimap { .. } => op::PUT_MULTIMAP,
            RemoveKeyMultimap { .. } => op::REMOVE_KEY_MULTIMAP,
            RemoveEntryMultimap { .. } => op::REMOVE_ENTRY_MULTIMAP,
            SizeMultimap { .. } => op::SIZE_MULTIMAP,
            ContainsEntryMultimap { .. } => op::CONTAINS_ENTRY_MULTIMAP,
            ContainsKeyMultimap { .. } => op::CONTAINS_KEY_MULTIMAP,
            ContainsValueMultimap { .. } => op::CONTAINS_VALUE_MULTIMAP,
            ForgetTx { .. } => op::FORGET_TX,
            FetchTxRecovery => op::FETCH_TX_RECOVERY,
            PrepareTx2 { .. } => op::PREPARE_TX_2,
            CounterGetAndSet { .. } => op::COUNTER_GET_AND_SET,
            StartPutStream { .. } => op::START_PUT_STREAM,
            NextPutStream { .. } => op::NEXT_PUT_STREAM,
            EndPutStream { .. } => op::END_PUT_STREAM,
            StartGetStream { .. } => op::START_GET_STREAM,
            NextGetStream { .. } => op::NEXT_GET_STREAM,
            EndGetStream { .. } => op::END_GET_STREAM,
        }
    }

    /// Writes the body for a request header of version `v`.
    pub fn write(&self, buf: &mut BytesMut, v: u8) {
        use Request::*;
        match self {
            Put {
                key,
                expiration,
                value,
            }
            | PutIfAbsent {
                key,
                expiration,
                value,
            }
            | Replace {
                key,
                expiration,
                value,
            } => {
                put_bytes(buf, key);
                expiration.write(buf, v);
                put_bytes(buf, value);
            }
            ReplaceIfUnmodified {
                key,
                expiration,
                version,
                value,
            } => {
                put_bytes(buf, key);
                expiration.write(buf, v);
                buf.put_i64(*version);
                put_bytes(buf, value);
            }
            Get { key }
            | Remove { key }
            | ContainsKey { key }
            | GetWithVersion { key }
            | GetWithMetadata { key } => put_bytes(buf, key),
            RemoveIfUnmodified { key, version } => {
                put_bytes(buf, key);
                buf.put_i64(*version);
            }
            Clear | Stats | Ping | AuthMechList | Size | CounterGetNames | FetchTxRecovery => {}
            BulkGet { count } => put_vint(buf, *count),
            BulkGetKeys { scope } => put_vint(buf, *scope),
            Query { query } => put_bytes(buf, query),
            Auth {
                mechanism,
                response,
            } => {
                put_string(buf, mechanism);
                put_bytes(buf, response);
            }
            AddClientListener {
                listener_id,
                include_current_state,
                filter,
                converter,
                use_raw_data,
                interests,
            } => {
                put_bytes(buf, listener_id);
                put_bool(buf, *include_current_state);
                write_factory(buf, filter);
                write_factory(buf, converter);
                if v >= version::V21 {
                    put_bool(buf, *use_raw_data);
                }
                if v >= version::V26 {
                    put_vint(buf, *interests);
                }
            }
            RemoveClientListener { listener_id } => put_bytes(buf, listener_id),
            Exec { task, params } => {
                put_string(buf, task);
                // Clients write a vInt, the grammar reads a byte: identical below 128.
                put_vint(buf, params.len() as u32);
                for (k, val) in params {
                    put_string(buf, k);
                    put_bytes(buf, val);
                }
            }
            PutAll {
                expiration,
                entries,
            } => {
                expiration.write(buf, v);
                put_vint(buf, entries.len() as u32);
                for (k, val) in entries {
                    put_bytes(buf, k);
                    put_bytes(buf, val);
                }
            }
            GetAll { keys } => {
                put_vint(buf, keys.len() as u32);
                for k in keys {
                    put_bytes(buf, k);
                }
            }
            IterationStart {
                segments,
                filter_converter,
                batch_size,
                include_metadata,
            } => {
                put_optional_bytes(buf, segments.as_deref());
                match filter_converter {
                    None => put_optional_bytes(buf, None),
                    Some(f) => {
                        put_optional_bytes(buf, Some(f.name.as_bytes()));
                        put_vint(buf, f.params.len() as u32);
                        for p in &f.params {
                            put_bytes(buf, p);
                        }
                    }
                }
                put_vint(buf, *batch_size);
                if v >= version::V24 {
                    put_bool(buf, *include_metadata);
                }
            }
            IterationNext { iteration_id } | IterationEnd { iteration_id } => {
                put_string(buf, iteration_id)
            }
            GetStream { key, offset } => {
                put_bytes(buf, key);
                put_vint(buf, *offset);
            }
            PutStream {
                key,
                expiration,
                version,
                value,
            } => {
                put_bytes(buf, key);
                expiration.write(buf, v);
                buf.put_i64(*version);
                for chunk in value.chunks(64 * 1024) {
                    put_bytes(buf, chunk);
                }
                put_vint(buf, 0);
            }
            PrepareTx {
                xid,
                one_phase_commit,
                modifications,
            } => {
                write_xid(buf, xid);
                put_bool(buf, *one_phase_commit);
                write_modifications(buf, modifications, v);
            }
            CommitTx { xid } | RollbackTx { xid } | ForgetTx { xid } => write_xid(buf, xid),
            AddBloomFilterListener {
                listener_id,
                bloom_bits,
            } => {
                put_bytes(buf, listener_id);
                put_vint(buf, *bloom_bits);
            }
            UpdateBloomFilter { bits } => put_bytes(buf, bits),
            CounterCreate { name, config } => {
                put_string(buf, name);
                config.write(buf);
            }
            CounterGetConfiguration { name }
            | CounterIsDefined { name }
            | CounterReset { name }
            | CounterGet { name }
            | CounterRemove { name } => put_string(buf, name),
            CounterAddAndGet { name, delta } => {
                put_string(buf, name);
                buf.put_i64(*delta);
            }
            CounterCas {
                name,
                expect,
                update,
            } => {
                put_string(buf, name);
                buf.put_i64(*expect);
                buf.put_i64(*update);
            }
            CounterAddListener { name, listener_id }
            | CounterRemoveListener { name, listener_id } => {
                put_string(buf, name);
                put_bytes(buf, listener_id);
            }
            GetMultimap {
                key,
                supports_duplicates,
            }
            | GetMultimapWithMetadata {
                key,
                supports_duplicates,
            }
            | RemoveKeyMultimap {
                key,
                supports_duplicates,
            }
            | ContainsKeyMultimap {
                key,
                supports_duplicates,
            } => {
                put_bytes(buf, key);
                put_dup(buf, v, *supports_duplicates);
            }
            PutMultimap {
                key,
                expiration,
                value,
                supports_duplicates,
            }
            | RemoveEntryMultimap {
                key,
                expiration,
                value,
                supports_duplicates,
            }
            | ContainsEntryMultimap {
                key,
                expiration,
                value,
                supports_duplicates,
            } => {
                put_bytes(buf, key);
                expiration.write(buf, v);
                put_bytes(buf, value);
                put_dup(buf, v, *supports_duplicates);
            }
            SizeMultimap {
                supports_duplicates,
            } => put_dup(buf, v, *supports_duplicates),
            ContainsValueMultimap {
                expiration,
                value,
                supports_duplicates,
            } => {
                expiration.write(buf, v);
                put_bytes(buf, value);
                put_dup(buf, v, *supports_duplicates);
            }
            PrepareTx2 {
                xid,
                one_phase_commit,
                recoverable,
                timeout_ms,
                modifications,
            } => {
                write_xid(buf, xid);
                put_bool(buf, *one_phase_commit);
                put_bool(buf, *recoverable);
                buf.put_i64(*timeout_ms);
                write_modifications(buf, modifications, v);
            }
            CounterGetAndSet { name, value } => {
                put_string(buf, name);
                buf.put_i64(*value);
            }
            StartPutStream {
                key,
                expiration,
                version,
            } => {
                put_bytes(buf, key);
                expiration.write(buf, v);
                buf.put_i64(*version);
            }
            NextPutStream {
                stream_id,
                last_chunk,
                chunk,
            } => {
                buf.put_i32(*stream_id);
                put_bool(buf, *last_chunk);
                put_bytes(buf, chunk);
            }
            EndPutStream { stream_id }
            | NextGetStream { stream_id }
            | EndGetStream { stream_id } => buf.put_i32(*stream_id),
            StartGetStream { key, batch_size } => {
                put_bytes(buf, key);
                put_vint(buf, *batch_size);
            }
        }
    }
}
