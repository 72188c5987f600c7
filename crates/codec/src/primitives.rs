//! HotRod primitive encodings (reference §1): big-endian fixed ints, unsigned LEB128 vInt/vLong,
//! ZigZag signed vInt, length-prefixed byte arrays and strings.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

/// A cursor over a possibly incomplete frame. Every read either succeeds, reports
/// [`DecodeError::Incomplete`] (more bytes may fix it) or reports a malformed input.
/// It never panics, whatever the input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Upper bound for any single length-prefixed field; guards memory against absurd lengths.
    max_len: usize,
}

pub type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            max_len,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).ok_or(DecodeError::Incomplete)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.fixed()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    /// Unsigned LEB128 over 32 bits, at most 5 bytes (the server rejects longer ones).
    pub fn vint(&mut self) -> Result<u32> {
        let v = self.varint(5)?;
        Ok(v as u32)
    }

    /// Unsigned LEB128 over 64 bits, at most 10 bytes.
    pub fn vlong(&mut self) -> Result<u64> {
        self.varint(10)
    }

    fn varint(&mut self, max_bytes: usize) -> Result<u64> {
        let mut result: u64 = 0;
        for i in 0..max_bytes {
            let b = self.u8()?;
            let shift = 7 * i as u32;
            if shift < 64 {
                result |= u64::from(b & 0x7F) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(result);
            }
        }
        Err(DecodeError::VarIntTooLong(max_bytes))
    }

    /// ZigZag-encoded signed vInt.
    pub fn signed_vint(&mut self) -> Result<i32> {
        let raw = self.vint()?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn checked_len(&self, len: u64) -> Result<usize> {
        if len > self.max_len as u64 {
            return Err(DecodeError::TooLarge {
                len,
                limit: self.max_len,
            });
        }
        Ok(len as usize)
    }

    pub fn raw(&mut self, len: usize) -> Result<&'a [u8]> {
        let len = self.checked_len(len as u64)?;
        let end = self.pos.checked_add(len).ok_or(DecodeError::Incomplete)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        Ok(slice)
    }

    /// `vInt length` + bytes.
    pub fn bytes(&mut self) -> Result<Bytes> {
        let len = self.vint()?;
        let slice = self.raw(len as usize)?;
        Ok(Bytes::copy_from_slice(slice))
    }

    /// `vInt length` + UTF-8.
    pub fn string(&mut self) -> Result<String> {
        let len = self.vint()?;
        let slice = self.raw(len as usize)?;
        String::from_utf8(slice.to_vec())
            .map_err(|_| DecodeError::malformed("string is not valid UTF-8"))
    }

    /// `signed vInt length` (-1 = absent) + bytes; only ITERATION_START uses it.
    pub fn optional_bytes(&mut self) -> Result<Option<Bytes>> {
        let len = self.signed_vint()?;
        if len < 0 {
            return Ok(None);
        }
        let slice = self.raw(len as usize)?;
        Ok(Some(Bytes::copy_from_slice(slice)))
    }

    pub fn optional_string(&mut self) -> Result<Option<String>> {
        match self.optional_bytes()? {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| DecodeError::malformed("string is not valid UTF-8")),
        }
    }

    /// Reads a count and checks it against the bytes left, so that an absurd count cannot make the
    /// decoder reserve memory for elements that are not there. `min_size` must be a true lower
    /// bound of one element's encoded size (at least 1): a count whose elements cannot fit in the
    /// frame limit is `TooLarge`, one whose elements cannot fit in the bytes buffered so far is
    /// `Incomplete` (the frame cannot be complete yet), so the returned count is always at most
    /// `remaining() / min_size` and `Vec::with_capacity(count)` is bounded by the input size.
    pub fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.vint()? as usize;
        self.check_count(n, min_size)
    }

    /// Like [`Reader::count`] for the one-byte counts of the server grammar (`numParams: byte`).
    /// Java reads that byte signed and fails on a negative count, so 0x80..=0xFF are rejected.
    pub fn byte_count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u8()?;
        if n > 0x7F {
            return Err(DecodeError::malformed(format!(
                "parameter count {n} does not fit a signed byte"
            )));
        }
        self.check_count(usize::from(n), min_size)
    }

    fn check_count(&self, n: usize, min_size: usize) -> Result<usize> {
        let needed = (n as u64).saturating_mul(min_size.max(1) as u64);
        if needed > self.max_len as u64 {
            return Err(DecodeError::TooLarge {
                len: needed,
                limit: self.max_len,
            });
        }
        if needed > self.remaining() as u64 {
            return Err(DecodeError::Incomplete);
        }
        Ok(n)
    }
}

pub fn put_vint(buf: &mut BytesMut, v: u32) {
    put_vlong(buf, u64::from(v));
}

pub fn put_vlong(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn put_signed_vint(buf: &mut BytesMut, v: i32) {
    put_vint(buf, ((v << 1) ^ (v >> 31)) as u32);
}

pub fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_vint(buf, b.len() as u32);
    buf.put_slice(b);
}

pub fn put_string(buf: &mut BytesMut, s: &str) {
    put_bytes(buf, s.as_bytes());
}

pub fn put_optional_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_signed_vint(buf, -1),
        Some(b) => {
            put_signed_vint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

pub fn put_bool(buf: &mut BytesMut, b: bool) {
    buf.put_u8(u8::from(b));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_vint(v: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_vint(&mut b, v);
        b.to_vec()
    }

    #[test]
    fn vint_examples_from_reference() {
        assert_eq!(enc_vint(0), [0x00]);
        assert_eq!(enc_vint(127), [0x7F]);
        assert_eq!(enc_vint(128), [0x80, 0x01]);
        assert_eq!(enc_vint(300), [0xAC, 0x02]);
        assert_eq!(enc_vint(-1i32 as u32), [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        let mut b = BytesMut::new();
        put_vlong(&mut b, -1i64 as u64);
        assert_eq!(
            b.to_vec(),
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        );
    }

    #[test]
    fn signed_vint_examples() {
        let mut b = BytesMut::new();
        put_signed_vint(&mut b, -1);
        put_signed_vint(&mut b, 3);
        assert_eq!(b.to_vec(), [0x01, 0x06]);
        let mut r = Reader::new(&b, 100);
        assert_eq!(r.signed_vint().unwrap(), -1);
        assert_eq!(r.signed_vint().unwrap(), 3);
    }

    #[test]
    fn vint_longer_than_five_bytes_is_rejected() {
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert_eq!(
            Reader::new(&bytes, 100).vint(),
            Err(DecodeError::VarIntTooLong(5))
        );
        let bytes = [0x80, 0x80];
        assert_eq!(
            Reader::new(&bytes, 100).vint(),
            Err(DecodeError::Incomplete)
        );
    }

    #[test]
    fn absurd_length_is_rejected_before_waiting_for_bytes() {
        let mut b = BytesMut::new();
        put_vint(&mut b, 2_000_000_000);
        assert!(matches!(
            Reader::new(&b, 1024).bytes(),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn vlong_round_trip(v: u64) {
            let mut b = BytesMut::new();
            put_vlong(&mut b, v);
            proptest::prop_assert_eq!(Reader::new(&b, 16).vlong().unwrap(), v);
        }

        #[test]
        fn vint_round_trip(v: u32) {
            let mut b = BytesMut::new();
            put_vint(&mut b, v);
            proptest::prop_assert_eq!(Reader::new(&b, 16).vint().unwrap(), v);
        }

        #[test]
        fn signed_vint_round_trip(v: i32) {
            let mut b = BytesMut::new();
            put_signed_vint(&mut b, v);
            proptest::prop_assert_eq!(Reader::new(&b, 16).signed_vint().unwrap(), v);
        }
    }
}
