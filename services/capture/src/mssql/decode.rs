//! tiberius `ColumnData` → proto [`Value`] and back (for typed query parameters).
//!
//! The value model is exact: temporal values become integer ticks (100 ns) counted from
//! 0001-01-01, decimals stay `(i128, scale)`, uniqueidentifiers are RFC 4122 bytes. Rules
//! (type-mapping.md §2 and §3.1):
//! - `datetime` ticks are 1/300 s; one tick is 100 000 / 3 units of 100 ns, rounded half up
//!   (what `CAST(x AS datetime2(7))` gives on SQL Server).
//! - `money`/`smallmoney` never reach this module as floats: the select list casts them to
//!   `decimal(19,4)`/`decimal(10,4)` (see [`crate::sql::select_expression`]).
//! - `datetimeoffset` keeps its UTC instant plus the offset in minutes.

use std::borrow::Cow;

use dbsync_proto::v1::{value::Kind, DateTimeOffset as PbDateTimeOffset, Decimal as PbDecimal, Value};
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime2, DateTimeOffset, Time};
use tiberius::ColumnData;

use crate::error::{CaptureError, Result};

/// 100 ns ticks per day.
pub const TICKS_PER_DAY: i64 = 864_000_000_000;
/// Days from 0001-01-01 to 1900-01-01 (the `datetime`/`smalldatetime` epoch).
pub const DAYS_0001_TO_1900: i64 = 693_595;
/// Days from 0001-01-01 to 1970-01-01.
pub const DAYS_0001_TO_1970: i64 = 719_162;

/// Ticks since 0001-01-01 of a `datetime` (days since 1900, 1/300 s fragments).
pub fn datetime_ticks(days_since_1900: i64, fragments: i64) -> i64 {
    (days_since_1900 + DAYS_0001_TO_1900) * TICKS_PER_DAY + (fragments * 100_000 + 1) / 3
}

/// Ticks since midnight of a `time(scale)` value with `increments` units of 10^-scale s.
pub fn time_ticks(increments: u64, scale: u8) -> i64 {
    let increments = i64::try_from(increments).unwrap_or(i64::MAX);
    if scale <= 7 {
        increments * 10_i64.pow(u32::from(7 - scale))
    } else {
        increments / 10_i64.pow(u32::from(scale - 7))
    }
}

/// Microseconds since the Unix epoch of a tick count since 0001-01-01.
pub fn ticks_to_unix_micros(ticks: i64) -> i64 {
    (ticks - DAYS_0001_TO_1970 * TICKS_PER_DAY) / 10
}

/// Ticks since 0001-01-01 of microseconds since the Unix epoch.
pub fn unix_micros_to_ticks(micros: i64) -> i64 {
    micros * 10 + DAYS_0001_TO_1970 * TICKS_PER_DAY
}

/// Unscaled i128 as the proto's little-endian two's complement, shortest sign-extended form.
pub fn decimal_value(unscaled: i128, scale: u8) -> PbDecimal {
    let bytes = unscaled.to_le_bytes();
    let mut len = 16;
    while len > 1 {
        let last = bytes[len - 1];
        let prev_sign = bytes[len - 2] & 0x80;
        if (last == 0x00 && prev_sign == 0) || (last == 0xFF && prev_sign != 0) {
            len -= 1;
        } else {
            break;
        }
    }
    PbDecimal { unscaled: bytes[..len].to_vec(), scale: u32::from(scale) }
}

/// The i128 of a proto decimal.
pub fn decimal_unscaled(d: &PbDecimal) -> Result<i128> {
    if d.unscaled.is_empty() || d.unscaled.len() > 16 {
        return Err(CaptureError::InvalidRequest(format!("Decimal with {} bytes (1-16 expected)", d.unscaled.len())));
    }
    let fill = if d.unscaled[d.unscaled.len() - 1] & 0x80 != 0 { 0xFF } else { 0x00 };
    let mut bytes = [fill; 16];
    bytes[..d.unscaled.len()].copy_from_slice(&d.unscaled);
    Ok(i128::from_le_bytes(bytes))
}

fn kind(k: Kind) -> Value {
    Value { kind: Some(k) }
}

/// Converts one cell. NULL of any type → `Value { kind: None }`.
pub fn to_value(data: ColumnData<'static>) -> Value {
    let k = match data {
        ColumnData::U8(v) => v.map(|v| Kind::Int(i64::from(v))),
        ColumnData::I16(v) => v.map(|v| Kind::Int(i64::from(v))),
        ColumnData::I32(v) => v.map(|v| Kind::Int(i64::from(v))),
        ColumnData::I64(v) => v.map(Kind::Int),
        ColumnData::F32(v) => v.map(Kind::Float32),
        ColumnData::F64(v) => v.map(Kind::Float64),
        ColumnData::Bit(v) => v.map(Kind::Bool),
        ColumnData::String(v) => v.map(|s| Kind::Text(s.into_owned())),
        ColumnData::Guid(v) => v.map(|g| Kind::Uuid(g.as_bytes().to_vec())),
        ColumnData::Binary(v) => v.map(|b| Kind::Binary(b.into_owned())),
        ColumnData::Numeric(v) => v.map(|n| Kind::Decimal(decimal_value(n.value(), n.scale()))),
        ColumnData::Xml(v) => v.map(|x| Kind::Text(x.into_owned().into_string())),
        ColumnData::DateTime(v) => {
            v.map(|d| Kind::Datetime(datetime_ticks(i64::from(d.days()), i64::from(d.seconds_fragments()))))
        }
        ColumnData::SmallDateTime(v) => v.map(|d| {
            Kind::Datetime(
                (i64::from(d.days()) + DAYS_0001_TO_1900) * TICKS_PER_DAY
                    + i64::from(d.seconds_fragments()) * 600_000_000,
            )
        }),
        ColumnData::Time(v) => v.map(|t| Kind::Time(time_ticks(t.increments(), t.scale()))),
        ColumnData::Date(v) => v.map(|d| Kind::Date(i32::try_from(d.days()).unwrap_or(i32::MAX))),
        ColumnData::DateTime2(v) => v.map(|d| Kind::Datetime(datetime2_ticks(d))),
        ColumnData::DateTimeOffset(v) => v.map(|d| {
            Kind::Datetimeoffset(PbDateTimeOffset {
                utc_ticks: datetime2_ticks(d.datetime2()),
                offset_minutes: i32::from(d.offset()),
            })
        }),
    };
    Value { kind: k }
}

fn datetime2_ticks(d: DateTime2) -> i64 {
    i64::from(d.date().days()) * TICKS_PER_DAY + time_ticks(d.time().increments(), d.time().scale())
}

fn split_ticks(ticks: i64, what: &str) -> Result<(Date, Time)> {
    if ticks < 0 {
        return Err(CaptureError::InvalidRequest(format!("{what} before 0001-01-01")));
    }
    let days = u32::try_from(ticks / TICKS_PER_DAY)
        .map_err(|_| CaptureError::InvalidRequest(format!("{what} out of range")))?;
    let time = u64::try_from(ticks % TICKS_PER_DAY).unwrap_or(0);
    Ok((Date::new(days), Time::new(time, 7)))
}

/// A proto value as a query parameter. Parameters are always cast to the column's exact type
/// in the SQL text (see [`crate::sql::param`]), so the wire type only has to carry the value
/// exactly. `None` kind → a NULL nvarchar.
pub fn to_param(value: &Value) -> Result<ColumnData<'static>> {
    Ok(match &value.kind {
        None => ColumnData::String(None),
        Some(Kind::Bool(b)) => ColumnData::Bit(Some(*b)),
        Some(Kind::Int(i)) => ColumnData::I64(Some(*i)),
        Some(Kind::Float32(f)) => ColumnData::F32(Some(*f)),
        Some(Kind::Float64(f)) => ColumnData::F64(Some(*f)),
        Some(Kind::Decimal(d)) => {
            let scale = u8::try_from(d.scale)
                .ok()
                .filter(|s| *s <= 38)
                .ok_or_else(|| CaptureError::InvalidRequest(format!("Decimal scale {} is above 38", d.scale)))?;
            ColumnData::Numeric(Some(Numeric::new_with_scale(decimal_unscaled(d)?, scale)))
        }
        Some(Kind::Text(s)) => ColumnData::String(Some(Cow::Owned(s.clone()))),
        Some(Kind::Binary(b)) => ColumnData::Binary(Some(Cow::Owned(b.clone()))),
        Some(Kind::Uuid(u)) => {
            let bytes: [u8; 16] = u
                .as_slice()
                .try_into()
                .map_err(|_| CaptureError::InvalidRequest(format!("A uuid value has {} bytes, not 16", u.len())))?;
            ColumnData::Guid(Some(uuid_from_bytes(bytes)))
        }
        Some(Kind::Date(d)) => ColumnData::Date(Some(Date::new(
            u32::try_from(*d).map_err(|_| CaptureError::InvalidRequest("Date before 0001-01-01".into()))?,
        ))),
        Some(Kind::Time(t)) => ColumnData::Time(Some(Time::new(
            u64::try_from(*t).map_err(|_| CaptureError::InvalidRequest("Negative time of day".into()))?,
            7,
        ))),
        Some(Kind::Datetime(t)) => {
            let (date, time) = split_ticks(*t, "Datetime")?;
            ColumnData::DateTime2(Some(DateTime2::new(date, time)))
        }
        Some(Kind::Datetimeoffset(d)) => {
            let (date, time) = split_ticks(d.utc_ticks, "Datetimeoffset")?;
            let offset = i16::try_from(d.offset_minutes)
                .map_err(|_| CaptureError::InvalidRequest("Offset out of range".into()))?;
            ColumnData::DateTimeOffset(Some(DateTimeOffset::new(DateTime2::new(date, time), offset)))
        }
        Some(Kind::Unchanged(_)) => {
            return Err(CaptureError::InvalidRequest("An 'unchanged' marker cannot be a key value".into()))
        }
    })
}

fn uuid_from_bytes(bytes: [u8; 16]) -> tiberius::Uuid {
    tiberius::Uuid::from_bytes(bytes)
}

/// Approximate encoded size of a value (for batch byte caps and throttles).
pub fn value_size(value: &Value) -> usize {
    match &value.kind {
        None => 1,
        Some(Kind::Text(s)) => s.len() + 3,
        Some(Kind::Binary(b)) | Some(Kind::Uuid(b)) => b.len() + 3,
        Some(Kind::Decimal(d)) => d.unscaled.len() + 6,
        Some(Kind::Datetimeoffset(_)) => 16,
        Some(_) => 9,
    }
}

/// Converts a `datetime` value read from the server (e.g. `tran_end_time`) to ticks.
pub fn datetime_column_ticks(data: &ColumnData<'static>) -> Option<i64> {
    match to_value(data.clone()).kind {
        Some(Kind::Datetime(t)) => Some(t),
        Some(Kind::Datetimeoffset(d)) => Some(d.utc_ticks),
        _ => None,
    }
}

/// Convenience: an integer value.
pub fn int(v: i64) -> Value {
    kind(Kind::Int(v))
}

/// Convenience: a text value.
pub fn text(v: impl Into<String>) -> Value {
    kind(Kind::Text(v.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiberius::time::SmallDateTime;

    fn smalldatetime_parts(days_since_1900: u16, minutes: u16) -> ColumnData<'static> {
        ColumnData::SmallDateTime(Some(SmallDateTime::new(days_since_1900, minutes)))
    }

    #[test]
    fn datetime_fragments_round_like_sql_server() {
        // 1900-01-01 00:00:00.003 is 1 fragment = 33 333.33 ticks → 33 333
        assert_eq!(datetime_ticks(0, 1) - DAYS_0001_TO_1900 * TICKS_PER_DAY, 33_333);
        // .007 = 2 fragments = 66 666.67 → 66 667
        assert_eq!(datetime_ticks(0, 2) - DAYS_0001_TO_1900 * TICKS_PER_DAY, 66_667);
        // 300 fragments = 1 s exactly
        assert_eq!(datetime_ticks(0, 300) - DAYS_0001_TO_1900 * TICKS_PER_DAY, 10_000_000);
        // negative days (1753-01-01 is -53690)
        assert_eq!(datetime_ticks(-53_690, 0), (DAYS_0001_TO_1900 - 53_690) * TICKS_PER_DAY);
    }

    #[test]
    fn temporal_cells_become_ticks() {
        let v = to_value(smalldatetime_parts(1, 61));
        assert_eq!(v.kind, Some(Kind::Datetime((DAYS_0001_TO_1900 + 1) * TICKS_PER_DAY + 61 * 600_000_000)));
        assert_eq!(time_ticks(1234, 3), 12_340_000);
        assert_eq!(time_ticks(9_999_999, 7), 9_999_999);
        let d2 = ColumnData::DateTime2(Some(DateTime2::new(Date::new(3), Time::new(5, 7))));
        assert_eq!(to_value(d2).kind, Some(Kind::Datetime(3 * TICKS_PER_DAY + 5)));
        assert_eq!(ticks_to_unix_micros(DAYS_0001_TO_1970 * TICKS_PER_DAY + 15), 1);
    }

    #[test]
    fn decimals_round_trip_through_the_shortest_encoding() {
        for v in [0i128, 1, -1, 127, 128, -128, -129, 255, i128::MAX, i128::MIN, 10_i128.pow(38) - 1] {
            let d = decimal_value(v, 4);
            assert_eq!(decimal_unscaled(&d).unwrap(), v, "{v}");
        }
        assert_eq!(decimal_value(1, 0).unscaled, vec![1]);
        assert_eq!(decimal_value(-1, 0).unscaled, vec![0xFF]);
        assert_eq!(decimal_value(128, 0).unscaled, vec![0x80, 0x00]);
    }

    #[test]
    fn parameters_carry_values_exactly() {
        let v = Value { kind: Some(Kind::Datetime(3 * TICKS_PER_DAY + 7)) };
        let p = to_param(&v).unwrap();
        assert_eq!(to_value(p), v);
        let d = Value { kind: Some(Kind::Decimal(decimal_value(-12345, 2))) };
        assert_eq!(to_value(to_param(&d).unwrap()), d);
        let u = Value { kind: Some(Kind::Uuid((0u8..16).collect())) };
        assert_eq!(to_value(to_param(&u).unwrap()), u);
        assert!(to_param(&Value { kind: Some(Kind::Unchanged(true)) }).is_err());
    }
}
