//! Exact decimals as (i128 unscaled, scale): PostgreSQL binary numeric and decimal text.
//! No floating point and no rust_decimal (which stops at 28 digits).

use bytes::BufMut;

/// Powers of ten that fit u128 (10^0 ..= 10^38).
const POW10: [u128; 39] = {
    let mut table = [1u128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

pub fn pow10(exponent: u32) -> Option<u128> {
    POW10.get(exponent as usize).copied()
}

/// Brings `unscaled × 10^-from` to scale `to` exactly. `None` if digits would be lost or the
/// result overflows.
pub fn rescale(unscaled: i128, from: u32, to: u32) -> Option<i128> {
    use std::cmp::Ordering;
    match from.cmp(&to) {
        Ordering::Equal => Some(unscaled),
        Ordering::Less => {
            let factor = i128::try_from(pow10(to - from)?).ok()?;
            unscaled.checked_mul(factor)
        }
        Ordering::Greater => {
            let Some(factor) = pow10(from - to).and_then(|f| i128::try_from(f).ok()) else {
                // More than 38 digits to drop: only zero survives.
                return (unscaled == 0).then_some(0);
            };
            (unscaled % factor == 0).then_some(unscaled / factor)
        }
    }
}

/// Number of decimal digits of `n` (0 has 1).
pub fn digit_count(n: u128) -> u32 {
    POW10
        .iter()
        .position(|&p| n < p)
        .map_or(39, |i| i.max(1) as u32)
}

/// Writes the PostgreSQL binary numeric body (without the length prefix) of
/// `unscaled × 10^-scale`: i16 ndigits, i16 weight, u16 sign, u16 dscale, then base-10000
/// digits. Returns the number of bytes written.
#[inline]
pub fn write_pg_numeric(buf: &mut impl BufMut, unscaled: i128, scale: u32) -> usize {
    let negative = unscaled < 0;
    let magnitude = unscaled.unsigned_abs();
    // Base-10000 groups aligned on the decimal point, least significant first. u128 holds at
    // most 39 digits: 10 groups plus one partial fractional group.
    let mut groups = [0u16; 12];
    let mut count = 0;
    let partial = scale % 4;
    let mut rest = magnitude;
    // 128-bit division is a library call: use 64 bits whenever the rest fits.
    if partial != 0 {
        let p = POW10[partial as usize];
        let (quotient, remainder) = match u64::try_from(rest) {
            Ok(small) => (u128::from(small / p as u64), u128::from(small % p as u64)),
            Err(_) => (rest / p, rest % p),
        };
        groups[0] = (remainder * POW10[4 - partial as usize]) as u16;
        rest = quotient;
        count = 1;
    }
    while rest > u128::from(u64::MAX) {
        groups[count] = (rest % 10_000) as u16;
        rest /= 10_000;
        count += 1;
    }
    let mut rest = rest as u64;
    while rest != 0 {
        groups[count] = (rest % 10_000) as u16;
        rest /= 10_000;
        count += 1;
    }
    let fractional_groups = scale.div_ceil(4) as i32;
    // Drop trailing (least significant) zero groups; leading ones do not exist by construction
    // except for the partial group of a zero value.
    let mut low = 0;
    while low < count && groups[low] == 0 {
        low += 1;
    }
    let dscale = scale.min(0x3FFF) as u16;
    if low == count {
        buf.put_i16(0);
        buf.put_i16(0);
        buf.put_u16(0);
        buf.put_u16(dscale);
        return 8;
    }
    let ndigits = count - low;
    let weight = count as i32 - fractional_groups - 1;
    buf.put_i16(ndigits as i16);
    buf.put_i16(weight as i16);
    buf.put_u16(if negative { 0x4000 } else { 0 });
    buf.put_u16(dscale);
    for i in (low..count).rev() {
        buf.put_u16(groups[i]);
    }
    8 + 2 * ndigits
}

/// Writes `unscaled × 10^-scale` as plain decimal text with exactly `scale` fractional digits
/// (PostgreSQL's numeric output for a column of that scale), e.g. `-0.0050`.
pub fn write_decimal_text(
    out: &mut impl std::fmt::Write,
    unscaled: i128,
    scale: u32,
) -> std::fmt::Result {
    let magnitude = unscaled.unsigned_abs();
    if unscaled < 0 {
        out.write_char('-')?;
    }
    if scale == 0 {
        return write!(out, "{magnitude}");
    }
    match pow10(scale) {
        Some(p) => write!(
            out,
            "{}.{:0width$}",
            magnitude / p,
            magnitude % p,
            width = scale as usize
        ),
        // Scale beyond 38: every digit is fractional, with leading zeros.
        None => write!(out, "0.{:0width$}", magnitude, width = scale as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(unscaled: i128, scale: u32) -> Vec<u8> {
        let mut v = Vec::new();
        write_pg_numeric(&mut v, unscaled, scale);
        v
    }

    #[test]
    fn numeric_layout() {
        // 123.45: groups 123 | 4500, weight 0, dscale 2.
        assert_eq!(
            encode(12345, 2),
            vec![0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
        );
        // -0.0001: one group 1 at weight -1.
        assert_eq!(encode(-1, 4), vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 1]);
        // 10000: group 1 at weight 1, trailing zero group dropped.
        assert_eq!(encode(10000, 0), vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(encode(0, 3), vec![0, 0, 0, 0, 0, 0, 0, 3]);
    }

    /// Reads a binary numeric body back as decimal text (the test's independent decoder).
    fn numeric_text(b: &[u8]) -> String {
        let word = |i: usize| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
        let (ndigits, weight, sign, dscale) = (
            word(0) as usize,
            word(1) as i16 as i32,
            word(2),
            word(3) as usize,
        );
        let digits: Vec<u16> = (0..ndigits).map(|i| word(4 + i)).collect();
        let group = |w: i32| -> u16 {
            usize::try_from(weight - w)
                .ok()
                .and_then(|i| digits.get(i).copied())
                .unwrap_or(0)
        };
        let mut int = String::new();
        for w in (0..=weight.max(0)).rev() {
            int.push_str(&format!("{:04}", group(w)));
        }
        let int = int.trim_start_matches('0');
        let mut frac = String::new();
        for w in 1..=(dscale as i32 + 3) / 4 {
            frac.push_str(&format!("{:04}", group(-w)));
        }
        frac.truncate(dscale);
        let sign = if sign == 0x4000 { "-" } else { "" };
        let int = if int.is_empty() { "0" } else { int };
        if dscale == 0 {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    #[test]
    fn numeric_body_matches_decimal_text_across_the_64_bit_boundary() {
        let edge = i128::from(u64::MAX);
        for unscaled in [
            1,
            9_999,
            10_000,
            123_456_789_012,
            edge - 1,
            edge,
            edge + 1,
            -edge - 1,
            i128::MAX,
            -(10_i128.pow(38) - 1),
        ] {
            for scale in [0, 1, 2, 3, 4, 5, 7, 18, 38] {
                let mut text = String::new();
                write_decimal_text(&mut text, unscaled, scale).unwrap();
                assert_eq!(
                    numeric_text(&encode(unscaled, scale)),
                    text,
                    "{unscaled} scale {scale}"
                );
            }
        }
    }

    #[test]
    fn decimal_text() {
        let text = |u, s| {
            let mut t = String::new();
            write_decimal_text(&mut t, u, s).unwrap();
            t
        };
        assert_eq!(text(-50, 4), "-0.0050");
        assert_eq!(text(12345, 0), "12345");
        assert_eq!(text(1, 38), format!("0.{}1", "0".repeat(37)));
        assert_eq!(text(1, 40), format!("0.{}1", "0".repeat(39)));
    }

    #[test]
    fn rescaling_is_exact_or_refused() {
        assert_eq!(rescale(125, 1, 3), Some(12500));
        assert_eq!(rescale(12500, 3, 1), Some(125));
        assert_eq!(rescale(12501, 3, 1), None);
        assert_eq!(rescale(i128::MAX, 0, 1), None);
        assert_eq!(digit_count(0), 1);
        assert_eq!(digit_count(9), 1);
        assert_eq!(digit_count(10), 2);
        assert_eq!(digit_count(u128::MAX), 39);
    }
}
