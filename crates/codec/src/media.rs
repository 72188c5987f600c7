//! MediaType as it travels in request headers (from 2.8) and PING responses (from 2.9), §2.1.

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::primitives::{put_string, put_vint, Reader, Result};

/// Predefined media-type ids (`MediaTypeIds`); id 16 is unused.
pub const PREDEFINED: &[(u32, &str)] = &[
    (1, "application/x-java-object"),
    (2, "application/json"),
    (3, "application/octet-stream"),
    (4, "application/pdf"),
    (5, "application/rtf"),
    (6, "application/zip"),
    (7, "image/gif"),
    (8, "image/jpeg"),
    (9, "image/png"),
    (10, "text/css"),
    (11, "text/csv"),
    (12, "application/x-protostream"),
    (13, "text/plain"),
    (14, "text/html"),
    (15, "application/x-jboss-marshalling"),
    (17, "application/unknown"),
];

pub const APPLICATION_UNKNOWN: &str = "application/unknown";
pub const APPLICATION_PROTOSTREAM: &str = "application/x-protostream";
pub const APPLICATION_OBJECT: &str = "application/x-java-object";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    /// Definition byte 0: the client did not say; the cache's storage type applies.
    Unspecified,
    Predefined {
        id: u32,
        params: Vec<(String, String)>,
    },
    Custom {
        name: String,
        params: Vec<(String, String)>,
    },
}

impl MediaType {
    /// The media type by name, as a predefined id when it has one: the Java client compares the
    /// types it receives by identity, which only works for ids (reference §2.1).
    pub fn from_name(name: &str) -> MediaType {
        let lower = name.trim().to_ascii_lowercase();
        match PREDEFINED.iter().find(|(_, n)| *n == lower) {
            Some((id, _)) => MediaType::Predefined {
                id: *id,
                params: Vec::new(),
            },
            None => MediaType::Custom {
                name: name.trim().to_string(),
                params: Vec::new(),
            },
        }
    }

    /// `type/subtype`, or `None` when unspecified or an unknown predefined id.
    pub fn name(&self) -> Option<&str> {
        match self {
            MediaType::Unspecified => None,
            MediaType::Predefined { id, .. } => {
                PREDEFINED.iter().find(|(i, _)| i == id).map(|(_, n)| *n)
            }
            MediaType::Custom { name, .. } => Some(name),
        }
    }

    pub fn read(r: &mut Reader<'_>) -> Result<MediaType> {
        match r.u8()? {
            0 => Ok(MediaType::Unspecified),
            1 => {
                let id = r.vint()?;
                let params = read_params(r)?;
                Ok(MediaType::Predefined { id, params })
            }
            2 => {
                let name = r.string()?;
                let params = read_params(r)?;
                Ok(MediaType::Custom { name, params })
            }
            other => Err(DecodeError::malformed(format!(
                "unknown MediaType definition {other}"
            ))),
        }
    }

    pub fn write(&self, buf: &mut BytesMut) {
        match self {
            MediaType::Unspecified => buf.put_u8(0),
            MediaType::Predefined { id, params } => {
                buf.put_u8(1);
                put_vint(buf, *id);
                write_params(buf, params);
            }
            MediaType::Custom { name, params } => {
                buf.put_u8(2);
                put_string(buf, name);
                write_params(buf, params);
            }
        }
    }
}

fn read_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>> {
    let n = r.count(2)?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        params.push((r.string()?, r.string()?));
    }
    Ok(params)
}

fn write_params(buf: &mut BytesMut, params: &[(String, String)]) {
    put_vint(buf, params.len() as u32);
    for (k, v) in params {
        put_string(buf, k);
        put_string(buf, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protostream_is_sent_as_predefined_id_12() {
        let mut b = BytesMut::new();
        MediaType::from_name("application/x-protostream").write(&mut b);
        assert_eq!(b.to_vec(), [0x01, 0x0C, 0x00]);
        assert_eq!(
            MediaType::from_name("application/unknown"),
            MediaType::Predefined {
                id: 17,
                params: vec![]
            }
        );
    }

    #[test]
    fn custom_type_round_trips() {
        let mt = MediaType::Custom {
            name: "application/vnd.x".into(),
            params: vec![("charset".into(), "UTF-8".into())],
        };
        let mut b = BytesMut::new();
        mt.write(&mut b);
        assert_eq!(MediaType::read(&mut Reader::new(&b, 1024)).unwrap(), mt);
    }
}
