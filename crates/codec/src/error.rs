use thiserror::Error;

/// Why a frame could not be decoded.
///
/// `Incomplete` is not an error of the peer: the decoder is restartable and simply waits for
/// more bytes. Every other variant means the bytes on the wire are wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("incomplete frame")]
    Incomplete,
    #[error("invalid magic byte 0x{0:02X}")]
    InvalidMagic(u8),
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    #[error("unknown operation 0x{0:02X}")]
    UnknownOperation(u8),
    #[error("variable-length integer longer than {0} bytes")]
    VarIntTooLong(usize),
    #[error("length {len} exceeds the limit of {limit} bytes")]
    TooLarge { len: u64, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    pub fn malformed(msg: impl Into<String>) -> Self {
        DecodeError::Malformed(msg.into())
    }

    /// HotRod status byte the server answers this error with (reference §4).
    pub fn status(&self) -> u8 {
        match self {
            DecodeError::InvalidMagic(_) => crate::status::INVALID_MAGIC_OR_MESSAGE_ID,
            DecodeError::UnknownVersion(_) => crate::status::UNKNOWN_VERSION,
            DecodeError::UnknownOperation(_) => crate::status::UNKNOWN_OPERATION,
            _ => crate::status::PARSE_ERROR,
        }
    }
}

/// A decoding failure together with what was known of the frame when it happened, so that the
/// server can answer with the right message id and version, and knows whether framing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{error}")]
pub struct FrameError {
    pub error: DecodeError,
    /// Message id of the failing request, when its header got that far (0 otherwise, as Infinispan does).
    pub message_id: u64,
    /// Protocol version of the failing request, when known.
    pub version: Option<u8>,
    /// Number of bytes the bad frame occupied, when its end is known. `None` means framing is lost
    /// and the connection must be closed after the error response.
    pub consumed: Option<usize>,
}
