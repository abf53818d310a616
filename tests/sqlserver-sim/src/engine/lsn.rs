//! Log sequence numbers: 10 bytes, big-endian `VLF seq (u32) : block (u32) : slot (u16)`,
//! compared as unsigned byte strings (which equals numeric order of the 80-bit value).

use std::sync::atomic::{AtomicU64, Ordering};

/// An LSN as an 80-bit unsigned number. `to_bytes` gives SQL Server's binary(10) form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u128);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn to_bytes(self) -> [u8; 10] {
        let b = self.0.to_be_bytes();
        let mut out = [0u8; 10];
        out.copy_from_slice(&b[6..16]);
        out
    }

    /// Parses a binary(10) value; other lengths are right-aligned (SQL Server pads binary
    /// comparisons on the right, but LSN functions take exactly 10 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Lsn> {
        if bytes.len() != 10 {
            return None;
        }
        let mut b = [0u8; 16];
        b[6..16].copy_from_slice(bytes);
        Some(Lsn(u128::from_be_bytes(b)))
    }

    /// The next representable LSN (what `sys.fn_cdc_increment_lsn` returns).
    pub fn increment(self) -> Lsn {
        Lsn((self.0 + 1) & ((1u128 << 80) - 1))
    }

    pub fn decrement(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.to_bytes();
        write!(f, "0x")?;
        for x in b {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

/// Allocates strictly increasing LSNs for one database. Lock-free: an LSN is a counter.
#[derive(Debug)]
pub struct LsnGenerator {
    /// Low 64 bits of the next LSN; the high 16 bits are fixed at creation.
    next: AtomicU64,
    high: u128,
}

impl LsnGenerator {
    pub fn new(start: Lsn) -> Self {
        LsnGenerator {
            next: AtomicU64::new(start.0 as u64),
            high: start.0 & !(u64::MAX as u128),
        }
    }

    pub fn allocate(&self) -> Lsn {
        Lsn(self.high | self.next.fetch_add(1, Ordering::SeqCst) as u128)
    }

    /// The last LSN handed out (the database's "current" LSN).
    pub fn current(&self) -> Lsn {
        Lsn(self.high | (self.next.load(Ordering::SeqCst).wrapping_sub(1)) as u128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_order() {
        let a = Lsn(0x0000_0025_0000_0123_fffe);
        let b = a.increment();
        assert_eq!(Lsn::from_bytes(&a.to_bytes()), Some(a));
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(b.to_bytes(), [0, 0, 0, 0x25, 0, 0, 0x01, 0x23, 0xff, 0xff]);
    }
}
