//! SQL Server raw forms → the wire [`Value`]. Capture (snapshot and CDC) builds every value
//! through these functions, and apply reads decimals back through [`decimal_parts`], so each
//! conversion rule lives in exactly one place.

use dbsync_proto::v1::{value::Kind, DateTimeOffset, Decimal, Value};

use crate::temporal::{DAYS_0001_TO_1900, TICKS_PER_DAY};
use crate::text::{apply_text_policy_to_utf16, InvalidTextPolicy};
use crate::TypemapError;

/// SQL NULL.
pub fn null() -> Value {
    Value { kind: None }
}

/// Wraps a kind.
pub fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// `datetime` (days since 1900-01-01, 1/300-second ticks) → 100-ns ticks since 0001-01-01.
/// A 1/300 s tick is 33 333⅓ ticks of 100 ns; the result is the nearest 100 ns (fractions are
/// only ⅓ or ⅔, so there are no ties): 1 tick → .0033333, 2 ticks → .0066667. Rounded to
/// milliseconds (timestamp(3)) that gives .003 and .007, as SQL Server displays them.
pub fn datetime_from_sql(days_since_1900: i32, ticks_300: u32) -> i64 {
    let day_ticks = (i64::from(ticks_300) * 100_000 + 1) / 3;
    (i64::from(days_since_1900) + DAYS_0001_TO_1900) * TICKS_PER_DAY + day_ticks
}

/// `smalldatetime` (days since 1900-01-01, minutes since midnight) → ticks since 0001-01-01.
pub fn smalldatetime_from_sql(days_since_1900: u16, minutes: u16) -> i64 {
    (i64::from(days_since_1900) + DAYS_0001_TO_1900) * TICKS_PER_DAY
        + i64::from(minutes) * 60 * crate::temporal::TICKS_PER_SECOND
}

/// `date` (days since 0001-01-01) → the wire's days since 0001-01-01 (identity, for symmetry).
pub fn date_from_sql(days_since_0001: u32) -> i32 {
    days_since_0001 as i32
}

/// `time(scale)` increments of 10^-scale s → ticks since midnight (exact; scale ≤ 7).
pub fn time_from_sql(increments: u64, scale: u8) -> i64 {
    increments as i64 * 10i64.pow(7 - u32::from(scale.min(7)))
}

/// `datetime2(scale)` → ticks since 0001-01-01 (exact).
pub fn datetime2_from_sql(days_since_0001: u32, increments: u64, scale: u8) -> i64 {
    i64::from(days_since_0001) * TICKS_PER_DAY + time_from_sql(increments, scale)
}

/// `datetimeoffset(scale)`: the date and time on the wire are already UTC; the offset only
/// rides along. No offset arithmetic happens here (tiberius's `DateTime<Utc>` conversion gets
/// this wrong by subtracting it again).
pub fn datetimeoffset_from_sql(
    days_since_0001: u32,
    increments: u64,
    scale: u8,
    offset_minutes: i16,
) -> DateTimeOffset {
    DateTimeOffset {
        utc_ticks: datetime2_from_sql(days_since_0001, increments, scale),
        offset_minutes: i32::from(offset_minutes),
    }
}

/// `money` as its scaled 64-bit integer (value × 10⁴) → Decimal with scale 4. Never go through
/// f64: it corrupts the low digits above about 9×10¹¹.
pub fn money_from_sql(scaled: i64) -> Decimal {
    decimal_from_parts(i128::from(scaled), 4)
}

/// `smallmoney` as its scaled 32-bit integer → Decimal with scale 4.
pub fn smallmoney_from_sql(scaled: i32) -> Decimal {
    decimal_from_parts(i128::from(scaled), 4)
}

/// decimal/numeric as (unscaled i128, scale), e.g. tiberius `Numeric::value()`/`scale()`.
/// The unscaled value is stored as the shortest sign-extended little-endian two's complement.
pub fn decimal_from_parts(unscaled: i128, scale: u32) -> Decimal {
    let (bytes, len) = crate::packed::shortest_le_bytes(unscaled);
    Decimal {
        unscaled: bytes[..len].to_vec(),
        scale,
    }
}

/// The (unscaled, scale) pair of a wire Decimal.
pub fn decimal_parts(decimal: &Decimal) -> Result<(i128, u32), TypemapError> {
    let bytes = &decimal.unscaled;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(TypemapError::Malformed {
            column: String::new(),
            detail: format!(
                "decimal with {} unscaled bytes (1..=16 expected)",
                bytes.len()
            ),
        });
    }
    let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0x00
    };
    let mut full = [fill; 16];
    full[..bytes.len()].copy_from_slice(bytes);
    Ok((i128::from_le_bytes(full), decimal.scale))
}

/// A uniqueidentifier read as raw `binary(16)` (SQL Server's mixed-endian layout: Data1 u32 LE,
/// Data2 u16 LE, Data3 u16 LE, Data4 as is) → RFC 4122 byte order. tiberius's `Guid` values
/// are already in RFC order; use this only for raw bytes.
pub fn uuid_from_sql_bytes(raw: [u8; 16]) -> [u8; 16] {
    let mut rfc = raw;
    rfc[0..4].reverse();
    rfc[4..6].reverse();
    rfc[6..8].reverse();
    rfc
}

/// nvarchar UTF-16 code units → a String, applying the invalid-text policy to unpaired
/// surrogates (error, strip, or replace with U+FFFD). NULs are kept: the COPY encoder applies
/// the same policy to them where the column is known.
pub fn text_from_utf16(
    units: &[u16],
    policy: InvalidTextPolicy,
    column: &str,
) -> Result<String, TypemapError> {
    apply_text_policy_to_utf16(units, policy, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temporal::{days_from_civil, TICKS_PER_SECOND};

    #[test]
    fn decimals_round_trip_through_the_shortest_bytes() {
        for v in [
            0i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            256,
            i64::MAX as i128,
            i128::MAX,
            i128::MIN,
            -(10i128.pow(38)) + 1,
        ] {
            let d = decimal_from_parts(v, 7);
            assert_eq!(decimal_parts(&d).unwrap(), (v, 7), "{v}");
        }
        assert_eq!(decimal_from_parts(0, 0).unscaled, vec![0]);
        assert_eq!(decimal_from_parts(-1, 0).unscaled, vec![0xff]);
        assert_eq!(decimal_from_parts(128, 0).unscaled, vec![0x80, 0x00]);
    }

    #[test]
    fn datetime_ticks_land_on_sql_server_milliseconds() {
        let base = days_from_civil(1900, 1, 1) * TICKS_PER_DAY;
        assert_eq!(datetime_from_sql(0, 0), base);
        assert_eq!(datetime_from_sql(0, 1), base + 33_333);
        assert_eq!(datetime_from_sql(0, 2), base + 66_667);
        assert_eq!(datetime_from_sql(0, 300), base + TICKS_PER_SECOND);
        assert_eq!(
            datetime_from_sql(-53_690, 0),
            days_from_civil(1753, 1, 1) * TICKS_PER_DAY
        );
    }

    #[test]
    fn raw_guid_bytes_are_reordered() {
        let raw = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 8, 9, 10, 11, 12, 13, 14, 15,
        ];
        assert_eq!(
            uuid_from_sql_bytes(raw),
            [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 8, 9, 10, 11, 12, 13, 14, 15]
        );
    }
}
