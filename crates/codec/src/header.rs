//! Request and response headers (reference §2, §3).

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::version;
use crate::error::DecodeError;
use crate::media::MediaType;
use crate::primitives::{put_bytes, put_string, put_vint, put_vlong, Reader, Result};

pub const REQUEST_MAGIC: u8 = 0xA0;
pub const RESPONSE_MAGIC: u8 = 0xA1;

/// Client intelligence levels.
pub const INTELLIGENCE_BASIC: u8 = 1;
pub const INTELLIGENCE_TOPOLOGY_AWARE: u8 = 2;
pub const INTELLIGENCE_HASH_DISTRIBUTION_AWARE: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub message_id: u64,
    /// `major*10 + minor`; every request is parsed by its own version (clients handshake at 3.1).
    pub version: u8,
    pub opcode: u8,
    pub cache_name: String,
    pub flags: u32,
    pub intelligence: u8,
    pub topology_id: u32,
    /// From 2.8; `Unspecified` before.
    pub key_type: MediaType,
    pub value_type: MediaType,
    /// From 4.0 (OpenTelemetry propagation in the Java client); parsed and kept, not interpreted.
    pub other_params: Vec<(String, Bytes)>,
}

impl RequestHeader {
    /// A header with the defaults the Java client uses, for tests and the load generator.
    pub fn new(version: u8, opcode: u8, message_id: u64, cache_name: &str) -> Self {
        RequestHeader {
            message_id,
            version,
            opcode,
            cache_name: cache_name.to_string(),
            flags: 0,
            intelligence: INTELLIGENCE_BASIC,
            topology_id: 0,
            key_type: MediaType::Unspecified,
            value_type: MediaType::Unspecified,
            other_params: Vec::new(),
        }
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Reads the header after the magic byte. On error, returns what was known so far
    /// (message id, version) so the error response can echo it.
    pub fn read(
        r: &mut Reader<'_>,
    ) -> std::result::Result<RequestHeader, (DecodeError, u64, Option<u8>)> {
        let message_id = r.vlong().map_err(|e| (e, 0, None))?;
        let wrap = |e: DecodeError, v: Option<u8>| (e, message_id, v);
        let version = r.u8().map_err(|e| wrap(e, None))?;
        if !version::is_supported(version) {
            return Err(wrap(DecodeError::UnknownVersion(version), Some(version)));
        }
        let v = Some(version);
        let opcode = r.u8().map_err(|e| wrap(e, v))?;
        let cache_name = r.string().map_err(|e| wrap(e, v))?;
        let flags = r.vint().map_err(|e| wrap(e, v))?;
        let intelligence = r.u8().map_err(|e| wrap(e, v))?;
        let topology_id = r.vint().map_err(|e| wrap(e, v))?;
        let (key_type, value_type) = if version >= version::V28 {
            (
                MediaType::read(r).map_err(|e| wrap(e, v))?,
                MediaType::read(r).map_err(|e| wrap(e, v))?,
            )
        } else {
            (MediaType::Unspecified, MediaType::Unspecified)
        };
        let mut other_params = Vec::new();
        if version >= version::V40 {
            let n = r.count(2).map_err(|e| wrap(e, v))?;
            for _ in 0..n {
                let name = r.string().map_err(|e| wrap(e, v))?;
                let value = r.bytes().map_err(|e| wrap(e, v))?;
                other_params.push((name, value));
            }
        }
        Ok(RequestHeader {
            message_id,
            version,
            opcode,
            cache_name,
            flags,
            intelligence,
            topology_id,
            key_type,
            value_type,
            other_params,
        })
    }

    /// Writes magic + header.
    pub fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(REQUEST_MAGIC);
        put_vlong(buf, self.message_id);
        buf.put_u8(self.version);
        buf.put_u8(self.opcode);
        put_string(buf, &self.cache_name);
        put_vint(buf, self.flags);
        buf.put_u8(self.intelligence);
        put_vint(buf, self.topology_id);
        if self.version >= version::V28 {
            self.key_type.write(buf);
            self.value_type.write(buf);
        }
        if self.version >= version::V40 {
            put_vint(buf, self.other_params.len() as u32);
            for (k, v) in &self.other_params {
                put_string(buf, k);
                put_bytes(buf, v);
            }
        }
    }
}

/// How many (empty) segments a hash-version-0 topology keeps in memory when read.
pub const MAX_EMPTY_SEGMENTS: usize = 1 << 16;

/// A topology block after marker 1 (§3.1). ferrod replicas answer without one unless configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub topology_id: u32,
    pub servers: Vec<(String, u16)>,
    /// Present for hash-distribution-aware clients: hash function version and segment owners
    /// (indexes into `servers`, one list per segment).
    pub hash: Option<HashTopology>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTopology {
    pub hash_function_version: u8,
    pub segments: Vec<Vec<u32>>,
}

impl Topology {
    pub fn write(&self, buf: &mut BytesMut) {
        put_vint(buf, self.topology_id);
        put_vint(buf, self.servers.len() as u32);
        for (host, port) in &self.servers {
            put_string(buf, host);
            buf.put_u16(*port);
        }
        if let Some(hash) = &self.hash {
            buf.put_u8(hash.hash_function_version);
            put_vint(buf, hash.segments.len() as u32);
            if hash.hash_function_version > 0 {
                for owners in &hash.segments {
                    buf.put_u8(owners.len() as u8);
                    for o in owners {
                        put_vint(buf, *o);
                    }
                }
            }
        }
    }

    /// `with_hash` is whether the client that reads it sent intelligence 3.
    pub fn read(r: &mut Reader<'_>, with_hash: bool) -> Result<Topology> {
        let topology_id = r.vint()?;
        let n = r.count(3)?;
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            servers.push((r.string()?, r.u16()?));
        }
        let hash = if with_hash {
            let hash_function_version = r.u8()?;
            let mut segments = Vec::new();
            if hash_function_version > 0 {
                // Each segment takes at least its owner-count byte.
                let num_segments = r.count(1)?;
                segments.reserve(num_segments);
                for _ in 0..num_segments {
                    let owners = r.u8()? as usize;
                    let mut o = Vec::with_capacity(owners);
                    for _ in 0..owners {
                        o.push(r.vint()?);
                    }
                    segments.push(o);
                }
            } else {
                // "Empty hash info": the segments carry no bytes, so the count is only bounded by
                // the frame limit; keep at most 2^16 (empty) owner lists in memory.
                let num_segments = r.vint()? as usize;
                if num_segments > r.max_len() {
                    return Err(DecodeError::TooLarge {
                        len: num_segments as u64,
                        limit: r.max_len(),
                    });
                }
                segments = vec![Vec::new(); num_segments.min(MAX_EMPTY_SEGMENTS)];
            }
            Some(HashTopology {
                hash_function_version,
                segments,
            })
        } else {
            None
        };
        Ok(Topology {
            topology_id,
            servers,
            hash,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    pub message_id: u64,
    pub opcode: u8,
    pub status: u8,
    pub topology: Option<Topology>,
}

impl ResponseHeader {
    pub fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(RESPONSE_MAGIC);
        put_vlong(buf, self.message_id);
        buf.put_u8(self.opcode);
        buf.put_u8(self.status);
        match &self.topology {
            None => buf.put_u8(0),
            Some(t) => {
                buf.put_u8(1);
                t.write(buf);
            }
        }
    }

    pub fn read(r: &mut Reader<'_>, client_intelligence: u8) -> Result<ResponseHeader> {
        let magic = r.u8()?;
        if magic != RESPONSE_MAGIC {
            return Err(DecodeError::InvalidMagic(magic));
        }
        let message_id = r.vlong()?;
        let opcode = r.u8()?;
        let status = r.u8()?;
        let topology = match r.u8()? {
            0 => None,
            _ => Some(Topology::read(
                r,
                client_intelligence == INTELLIGENCE_HASH_DISTRIBUTION_AWARE,
            )?),
        };
        Ok(ResponseHeader {
            message_id,
            opcode,
            status,
            topology,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::op;

    #[test]
    fn java16_first_ping_bytes_from_reference() {
        // A0 00 1F 17 00 00 03 FF FF FF FF 0F 00 00: PING, msgId 0, v3.1, default cache,
        // intelligence 3, topology -1, no media types (§2).
        let bytes = [
            0xA0, 0x00, 0x1F, 0x17, 0x00, 0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00, 0x00,
        ];
        let mut r = Reader::new(&bytes[1..], 1024);
        let h = RequestHeader::read(&mut r).unwrap();
        assert_eq!(h.message_id, 0);
        assert_eq!(h.version, 31);
        assert_eq!(h.opcode, op::PING);
        assert_eq!(h.cache_name, "");
        assert_eq!(h.intelligence, 3);
        assert_eq!(h.topology_id as i32, -1);
        assert_eq!(r.remaining(), 0);
        let mut out = BytesMut::new();
        h.write(&mut out);
        assert_eq!(out.to_vec(), bytes);
    }
}
