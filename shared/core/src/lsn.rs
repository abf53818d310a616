//! SQL Server log sequence numbers and stream positions.

use std::fmt;

/// A SQL Server LSN: 10 bytes, big-endian `VLF sequence (u32) : log block (u32) : slot (u16)`.
/// SQL Server compares LSNs as unsigned byte strings, which is what the derived `Ord` does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub [u8; 10]);

impl Lsn {
    pub const ZERO: Lsn = Lsn([0; 10]);
    pub const MAX: Lsn = Lsn([0xFF; 10]);

    pub fn from_slice(bytes: &[u8]) -> Option<Lsn> {
        <[u8; 10]>::try_from(bytes).ok().map(Lsn)
    }

    pub fn as_bytes(&self) -> &[u8; 10] {
        &self.0
    }

    pub fn to_u128(self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    }

    pub fn from_u128(v: u128) -> Lsn {
        let mut out = [0u8; 10];
        for (i, b) in out.iter_mut().enumerate() {
            *b = (v >> (8 * (9 - i))) as u8;
        }
        Lsn(out)
    }

    /// The next representable LSN (as `sys.fn_cdc_increment_lsn`).
    pub fn increment(self) -> Lsn {
        Lsn::from_u128(self.to_u128().saturating_add(1))
    }

    pub fn decrement(self) -> Lsn {
        Lsn::from_u128(self.to_u128().saturating_sub(1))
    }

    /// Hex without prefix, as SQL Server shows it after `0x`.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// Parses `0x0000002A000001F80003` or the same without `0x`.
    pub fn parse_hex(s: &str) -> Option<Lsn> {
        let s = s.trim();
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if s.len() != 20 {
            return None;
        }
        let mut out = [0u8; 10];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Lsn(out))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", self.to_hex())
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({})", self.to_hex())
    }
}

/// A position in the change stream: the order key of one change,
/// `(commit_lsn, seqval, operation)`. Everything at or before it has been applied.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Position {
    pub commit_lsn: Lsn,
    pub seqval: Lsn,
    pub operation: i32,
}

impl Position {
    /// The position after a whole transaction with this commit LSN.
    pub fn end_of(commit_lsn: Lsn) -> Position {
        Position {
            commit_lsn,
            seqval: Lsn::MAX,
            operation: i32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_bytewise_and_hex_round_trips() {
        let a = Lsn::parse_hex("0x0000002A000001F8FFFE").unwrap();
        let b = a.increment();
        assert_eq!(b.to_hex(), "0000002A000001F8FFFF");
        assert_eq!(b.increment().to_hex(), "0000002A000001F90000");
        assert!(a < b && b < b.increment());
        assert_eq!(Lsn::parse_hex(&a.to_string()), Some(a));
        assert_eq!(b.decrement(), a);
        assert!(Lsn::parse_hex("0x12").is_none());
    }

    #[test]
    fn position_orders_by_lsn_then_seqval_then_operation() {
        let l1 = Lsn::from_u128(5);
        let l2 = Lsn::from_u128(6);
        let p = |c, s, o| Position {
            commit_lsn: c,
            seqval: s,
            operation: o,
        };
        assert!(p(l1, l2, 4) < p(l2, l1, 1));
        assert!(p(l1, l1, 1) < p(l1, l1, 2));
        assert!(p(l2, l2, 4) < Position::end_of(l2));
    }
}
