//! A bounds-checked little-endian cursor over a reassembled request payload.

use super::WireError;

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being parsed, for error messages.
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                what: self.what,
                offset: self.pos,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn peek(&self) -> Result<u8, WireError> {
        self.buf.get(self.pos).copied().ok_or(WireError::Truncated {
            what: self.what,
            offset: self.pos,
        })
    }

    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.bytes(n).map(|_| ())
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.bytes(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// Little-endian unsigned integer of 1..=8 bytes (u24, u40 of the date/time types).
    pub fn uint(&mut self, n: usize) -> Result<u64, WireError> {
        let mut out = [0u8; 8];
        out[..n].copy_from_slice(self.bytes(n)?);
        Ok(u64::from_le_bytes(out))
    }

    /// UTF-16LE text of `chars` code units.
    pub fn utf16(&mut self, chars: usize) -> Result<String, WireError> {
        let raw = self.bytes(chars * 2)?;
        utf16_to_string(raw).map_err(|e| WireError::invalid(self.what, e))
    }

    /// B_VARCHAR: u8 length in characters, then UTF-16LE.
    pub fn b_varchar(&mut self) -> Result<String, WireError> {
        let n = self.u8()? as usize;
        self.utf16(n)
    }

    /// US_VARCHAR: u16 length in characters, then UTF-16LE.
    pub fn us_varchar(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        self.utf16(n)
    }
}

/// Decode UTF-16LE bytes (an odd byte count or a lone surrogate is an error).
pub fn utf16_to_string(raw: &[u8]) -> Result<String, String> {
    if !raw.len().is_multiple_of(2) {
        return Err(format!("UTF-16 data of odd length {}", raw.len()));
    }
    let units = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|e| format!("invalid UTF-16: {e}"))
}
