//! Exact PostgreSQL binary encodings of dbsync values, written straight into a buffer.
//!
//! Binary COPY rows and the array parameters of the change statements share these: each
//! field is `i32 length` (−1 for NULL) followed by the type's binary form
//! (`reference/type-mapping.md` §3.2). Rules:
//! - temporal values arrive as 100 ns ticks; they become µs by one rounding rule, half up on
//!   the non-negative tick count (§2.5), and PostgreSQL applies the column's typmod after that;
//! - decimals are encoded from the exact i128 + scale (§3.3), never through floating point;
//! - text with NUL characters is refused with the column named (PostgreSQL cannot store it).
//!
//! The encoder is chosen by the target column's real type (read from the catalog), so a
//! pre-existing table with other types (conflict mode `ignore`) is written correctly too.

use bytes::{BufMut, BytesMut};
use dbsync_proto::v1::value::Kind;
use dbsync_proto::v1::Value;

/// Days from 0001-01-01 to 2000-01-01 (PostgreSQL's epoch).
const DAYS_0001_TO_2000: i64 = 730_119;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// How a target column is written, decided by its type OID (domains resolved to their base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Jsonb,
    Bytea,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
}

impl PgKind {
    /// The kind for a base type OID; `type_name` decides for extension types such as citext.
    pub fn from_type(oid: u32, type_name: &str) -> Option<PgKind> {
        Some(match oid {
            16 => PgKind::Bool,
            17 => PgKind::Bytea,
            20 => PgKind::Int8,
            21 => PgKind::Int2,
            23 => PgKind::Int4,
            // text, name, json, xml, bpchar, varchar: UTF-8 text on the wire
            25 | 19 | 114 | 142 | 1042 | 1043 => PgKind::Text,
            700 => PgKind::Float4,
            701 => PgKind::Float8,
            1082 => PgKind::Date,
            1083 => PgKind::Time,
            1114 => PgKind::Timestamp,
            1184 => PgKind::Timestamptz,
            1700 => PgKind::Numeric,
            2950 => PgKind::Uuid,
            3802 => PgKind::Jsonb,
            _ if type_name == "citext" => PgKind::Text,
            _ => return None,
        })
    }
}

/// Appends one field (length + value, or −1 for NULL). `Err` carries the reason only; the
/// caller adds the table and column.
#[inline]
pub fn put_field(out: &mut BytesMut, value: &Value, kind: PgKind) -> Result<(), String> {
    let Some(v) = &value.kind else {
        out.put_i32(-1);
        return Ok(());
    };
    let len_at = out.len();
    out.put_i32(0);
    put_value(out, v, kind)?;
    let len = i32::try_from(out.len() - len_at - 4).map_err(|_| "value larger than 2 GB".to_string())?;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_value(out: &mut BytesMut, v: &Kind, kind: PgKind) -> Result<(), String> {
    match (kind, v) {
        (PgKind::Bool, Kind::Bool(b)) => out.put_u8(u8::from(*b)),
        (PgKind::Bool, Kind::Int(i)) => out.put_u8(u8::from(*i != 0)),
        (PgKind::Int2, _) | (PgKind::Int4, _) | (PgKind::Int8, _) => {
            let i = integer_of(v)?;
            match kind {
                PgKind::Int2 => out.put_i16(i16::try_from(i).map_err(|_| format!("{i} is out of range for smallint"))?),
                PgKind::Int4 => out.put_i32(i32::try_from(i).map_err(|_| format!("{i} is out of range for integer"))?),
                _ => out.put_i64(i),
            }
        }
        (PgKind::Float4, Kind::Float32(f)) => out.put_f32(*f),
        (PgKind::Float4, Kind::Float64(f)) => out.put_f32(*f as f32),
        (PgKind::Float8, Kind::Float64(f)) => out.put_f64(*f),
        (PgKind::Float8, Kind::Float32(f)) => out.put_f64(f64::from(*f)),
        (PgKind::Numeric, Kind::Decimal(d)) => put_numeric(out, decimal_i128(&d.unscaled)?, d.scale)?,
        (PgKind::Numeric, Kind::Int(i)) => put_numeric(out, i128::from(*i), 0)?,
        (PgKind::Text, Kind::Text(s)) => put_text(out, s)?,
        (PgKind::Jsonb, Kind::Text(s)) => {
            out.put_u8(1);
            put_text(out, s)?
        }
        (PgKind::Bytea, Kind::Binary(b)) => out.put_slice(b),
        (PgKind::Uuid, Kind::Uuid(b)) => {
            if b.len() != 16 {
                return Err(format!("uuid of {} bytes", b.len()));
            }
            out.put_slice(b)
        }
        (PgKind::Date, Kind::Date(days)) => {
            let d = i64::from(*days) - DAYS_0001_TO_2000;
            out.put_i32(i32::try_from(d).map_err(|_| "date out of range".to_string())?)
        }
        (PgKind::Time, Kind::Time(ticks)) => out.put_i64(ticks_to_micros(*ticks)),
        (PgKind::Timestamp | PgKind::Timestamptz, Kind::Datetime(ticks)) => out.put_i64(timestamp_micros(*ticks)),
        (PgKind::Timestamp | PgKind::Timestamptz, Kind::Date(days)) => {
            out.put_i64((i64::from(*days) - DAYS_0001_TO_2000) * MICROS_PER_DAY)
        }
        (PgKind::Timestamptz, Kind::Datetimeoffset(o)) => out.put_i64(timestamp_micros(o.utc_ticks)),
        // A zone-less column keeps the source's wall-clock time.
        (PgKind::Timestamp, Kind::Datetimeoffset(o)) => {
            out.put_i64(timestamp_micros(o.utc_ticks + i64::from(o.offset_minutes) * 600_000_000))
        }
        (_, Kind::Unchanged(_)) => return Err("an unchanged LOB marker cannot be written".into()),
        (kind, v) => return Err(format!("a {} value does not fit a {kind:?} column", value_kind_name(v))),
    }
    Ok(())
}

fn integer_of(v: &Kind) -> Result<i64, String> {
    match v {
        Kind::Int(i) => Ok(*i),
        Kind::Bool(b) => Ok(i64::from(*b)),
        Kind::Decimal(d) if d.scale == 0 => {
            let i = decimal_i128(&d.unscaled)?;
            i64::try_from(i).map_err(|_| format!("{i} is out of range for bigint"))
        }
        other => Err(format!("a {} value does not fit an integer column", value_kind_name(other))),
    }
}

fn value_kind_name(v: &Kind) -> &'static str {
    match v {
        Kind::Bool(_) => "bool",
        Kind::Int(_) => "integer",
        Kind::Float32(_) => "real",
        Kind::Float64(_) => "float",
        Kind::Decimal(_) => "decimal",
        Kind::Text(_) => "text",
        Kind::Binary(_) => "binary",
        Kind::Uuid(_) => "uuid",
        Kind::Date(_) => "date",
        Kind::Time(_) => "time",
        Kind::Datetime(_) => "datetime",
        Kind::Datetimeoffset(_) => "datetimeoffset",
        Kind::Unchanged(_) => "unchanged",
    }
}

#[inline]
fn put_text(out: &mut BytesMut, s: &str) -> Result<(), String> {
    if s.as_bytes().contains(&0) {
        return Err("text contains a NUL character, which PostgreSQL cannot store".into());
    }
    out.put_slice(s.as_bytes());
    Ok(())
}

/// 100 ns ticks → µs, half up (ticks are never negative: they count from 0001-01-01 or
/// from midnight).
#[inline]
pub fn ticks_to_micros(ticks: i64) -> i64 {
    (ticks + 5).div_euclid(10)
}

/// Ticks since 0001-01-01 → µs since 2000-01-01.
#[inline]
pub fn timestamp_micros(ticks: i64) -> i64 {
    ticks_to_micros(ticks) - DAYS_0001_TO_2000 * MICROS_PER_DAY
}

/// Two's-complement little-endian bytes (≤ 16, sign-extended) → i128.
pub fn decimal_i128(le: &[u8]) -> Result<i128, String> {
    if le.len() > 16 {
        return Err(format!("decimal of {} bytes", le.len()));
    }
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    let mut bytes = if negative { [0xFFu8; 16] } else { [0u8; 16] };
    bytes[..le.len()].copy_from_slice(le);
    Ok(i128::from_le_bytes(bytes))
}

/// PostgreSQL binary numeric from an exact unscaled value and scale (§3.3): base-10000 digit
/// groups aligned on the decimal point, leading and trailing zero groups dropped.
pub fn put_numeric(out: &mut BytesMut, unscaled: i128, scale: u32) -> Result<(), String> {
    let dscale = i16::try_from(scale).map_err(|_| format!("scale {scale} too large"))?;
    if unscaled == 0 {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(0);
        out.put_i16(dscale);
        return Ok(());
    }
    let negative = unscaled < 0;
    let mut u = unscaled.unsigned_abs();
    // Decimal digits, most significant first (u128 has at most 39).
    let mut rev = [0u8; 40];
    let mut n = 0;
    while u > 0 {
        rev[n] = (u % 10) as u8;
        u /= 10;
        n += 1;
    }
    let s = scale as i64;
    let int_len = n as i64 - s;
    let lpad = (4 - int_len.rem_euclid(4)) % 4;
    let rpad = (4 - s.rem_euclid(4)) % 4;
    let total = lpad + n as i64 + rpad;
    let first_weight = (int_len + lpad) / 4 - 1;
    // Digit at position p of the padded sequence.
    let digit = |p: i64| -> u16 {
        let q = p - lpad;
        if q < 0 || q >= n as i64 {
            0
        } else {
            u16::from(rev[n - 1 - q as usize])
        }
    };
    let mut groups = [0i16; 14];
    let count = (total / 4) as usize;
    for (g, slot) in groups.iter_mut().enumerate().take(count) {
        let p = g as i64 * 4;
        *slot = (digit(p) * 1000 + digit(p + 1) * 100 + digit(p + 2) * 10 + digit(p + 3)) as i16;
    }
    let first = groups[..count].iter().position(|g| *g != 0).unwrap_or(0);
    let last = groups[..count].iter().rposition(|g| *g != 0).unwrap_or(0);
    let ndigits = last + 1 - first;
    out.put_i16(ndigits as i16);
    out.put_i16((first_weight - first as i64) as i16);
    out.put_u16(if negative { 0x4000 } else { 0 });
    out.put_i16(dscale);
    for g in &groups[first..=last] {
        out.put_i16(*g);
    }
    Ok(())
}

/// Writes binary COPY data: header, rows of fields, trailer.
pub struct CopyEncoder;

impl CopyEncoder {
    pub fn header(out: &mut BytesMut) {
        out.put_slice(b"PGCOPY\n\xff\r\n\0");
        out.put_i32(0); // flags
        out.put_i32(0); // header extension length
    }

    #[inline]
    pub fn row_start(out: &mut BytesMut, fields: i16) {
        out.put_i16(fields);
    }

    pub fn trailer(out: &mut BytesMut) {
        out.put_i16(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(v: i128, scale: u32) -> Vec<i16> {
        let mut b = BytesMut::new();
        put_numeric(&mut b, v, scale).unwrap();
        b.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numeric_groups_align_on_the_decimal_point() {
        // 123.45 → ndigits 2, weight 0, +, dscale 2, [123, 4500]
        assert_eq!(numeric_bytes(12345, 2), vec![2, 0, 0, 2, 123, 4500]);
        // 0.000001 → [100] at weight -2
        assert_eq!(numeric_bytes(1, 6), vec![1, -2, 0, 6, 100]);
        // -10000 → [1] at weight 1
        assert_eq!(numeric_bytes(-10000, 0), vec![1, 1, 0x4000, 0, 1]);
        assert_eq!(numeric_bytes(0, 3), vec![0, 0, 0, 3]);
        // the largest decimal(38,0) fits the group buffer
        let max = 10i128.pow(38) - 1;
        assert_eq!(numeric_bytes(max, 38)[0], 10);
    }

    #[test]
    fn ticks_round_half_up_to_micros() {
        assert_eq!(ticks_to_micros(14), 1);
        assert_eq!(ticks_to_micros(15), 2);
        assert_eq!(timestamp_micros(DAYS_0001_TO_2000 * 864_000_000_000), 0);
    }

    #[test]
    fn decimals_sign_extend_from_short_little_endian_bytes() {
        assert_eq!(decimal_i128(&[0xFF]).unwrap(), -1);
        assert_eq!(decimal_i128(&[0x39, 0x30]).unwrap(), 12345);
        assert_eq!(decimal_i128(&[]).unwrap(), 0);
    }
}
