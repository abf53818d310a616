//! tiberius `ColumnData` → proto [`Value`] and back (for typed query parameters).
//!
//! The value model is exact: temporal values become integer ticks (100 ns) counted from
//! 0001-01-01, decimals stay `(i128, scale)`, uniqueidentifiers are RFC 4122 bytes. Every
//! conversion rule is `dbsync_typemap`'s (`datetime_from_sql`, `datetime2_from_sql`, …), so
//! snapshot, CDC and apply share one rule per type (type-mapping.md §2 and §3.1).
//! - `money`/`smallmoney` never reach this module as floats: the select list casts them to
//!   `decimal(19,4)`/`decimal(10,4)` (see [`crate::sql::select_expression`]).
//! - `datetimeoffset` keeps its UTC instant plus the offset in minutes.

use std::borrow::Cow;

use dbsync_proto::v1::{value::Kind, Value};
use dbsync_typemap as typemap;
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime2, DateTimeOffset, Time};
use tiberius::ColumnData;

use crate::error::{CaptureError, Result};

pub use dbsync_typemap::temporal::{DAYS_0001_TO_1970, TICKS_PER_DAY};

/// Microseconds since the Unix epoch of a tick count since 0001-01-01.
pub fn ticks_to_unix_micros(ticks: i64) -> i64 {
    (ticks - DAYS_0001_TO_1970 * TICKS_PER_DAY) / 10
}

/// Ticks since 0001-01-01 of microseconds since the Unix epoch.
pub fn unix_micros_to_ticks(micros: i64) -> i64 {
    micros * 10 + DAYS_0001_TO_1970 * TICKS_PER_DAY
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
        ColumnData::Numeric(v) => {
            v.map(|n| Kind::Decimal(typemap::decimal_from_parts(n.value(), u32::from(n.scale()))))
        }
        ColumnData::Xml(v) => v.map(|x| Kind::Text(x.into_owned().into_string())),
        ColumnData::DateTime(v) => {
            v.map(|d| Kind::Datetime(typemap::datetime_from_sql(d.days(), d.seconds_fragments())))
        }
        ColumnData::SmallDateTime(v) => v.map(|d| {
            Kind::Datetime(typemap::smalldatetime_from_sql(
                d.days(),
                d.seconds_fragments(),
            ))
        }),
        ColumnData::Time(v) => {
            v.map(|t| Kind::Time(typemap::time_from_sql(t.increments(), t.scale())))
        }
        ColumnData::Date(v) => v.map(|d| Kind::Date(typemap::date_from_sql(d.days()))),
        ColumnData::DateTime2(v) => v.map(|d| Kind::Datetime(datetime2_ticks(d))),
        ColumnData::DateTimeOffset(v) => v.map(|d| {
            let dt = d.datetime2();
            Kind::Datetimeoffset(typemap::datetimeoffset_from_sql(
                dt.date().days(),
                dt.time().increments(),
                dt.time().scale(),
                d.offset(),
            ))
        }),
    };
    Value { kind: k }
}

/// Appends one cell in the packed row format (`dbsync_typemap::packed`), exactly as
/// [`to_value`] would convert it but without building a [`Value`]: the cheap path of snapshot
/// reads. Rare types go through [`to_value`] so each rule stays in one place.
#[inline]
pub fn pack_cell(data: ColumnData<'static>, w: &mut typemap::PackedWriter<'_>) {
    match data {
        ColumnData::U8(Some(v)) => w.int(i64::from(v)),
        ColumnData::I16(Some(v)) => w.int(i64::from(v)),
        ColumnData::I32(Some(v)) => w.int(i64::from(v)),
        ColumnData::I64(Some(v)) => w.int(v),
        ColumnData::F32(Some(v)) => w.float32(v),
        ColumnData::F64(Some(v)) => w.float64(v),
        ColumnData::Bit(Some(v)) => w.bool(v),
        ColumnData::String(Some(s)) => w.text(&s),
        ColumnData::Binary(Some(b)) => w.binary(&b),
        ColumnData::Guid(Some(g)) => w.uuid(g.as_bytes()),
        ColumnData::Numeric(Some(n)) => w.decimal(n.value(), u32::from(n.scale())),
        ColumnData::DateTime2(Some(d)) => w.datetime(datetime2_ticks(d)),
        other => w.value(&to_value(other)),
    }
}

fn datetime2_ticks(d: DateTime2) -> i64 {
    typemap::datetime2_from_sql(d.date().days(), d.time().increments(), d.time().scale())
}

fn split_ticks(ticks: i64, what: &str) -> Result<(Date, Time)> {
    if ticks < 0 {
        return Err(CaptureError::InvalidRequest(format!(
            "{what} before 0001-01-01"
        )));
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
                .ok_or_else(|| {
                    CaptureError::InvalidRequest(format!("Decimal scale {} is above 38", d.scale))
                })?;
            let (unscaled, _) = typemap::decimal_parts(d)
                .map_err(|e| CaptureError::InvalidRequest(e.to_string()))?;
            ColumnData::Numeric(Some(Numeric::new_with_scale(unscaled, scale)))
        }
        Some(Kind::Text(s)) => ColumnData::String(Some(Cow::Owned(s.clone()))),
        Some(Kind::Binary(b)) => ColumnData::Binary(Some(Cow::Owned(b.clone()))),
        Some(Kind::Uuid(u)) => {
            let bytes: [u8; 16] = u.as_slice().try_into().map_err(|_| {
                CaptureError::InvalidRequest(format!("A uuid value has {} bytes, not 16", u.len()))
            })?;
            ColumnData::Guid(Some(uuid_from_bytes(bytes)))
        }
        Some(Kind::Date(d)) => {
            ColumnData::Date(Some(Date::new(u32::try_from(*d).map_err(|_| {
                CaptureError::InvalidRequest("Date before 0001-01-01".into())
            })?)))
        }
        Some(Kind::Time(t)) => ColumnData::Time(Some(Time::new(
            u64::try_from(*t)
                .map_err(|_| CaptureError::InvalidRequest("Negative time of day".into()))?,
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
            ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                DateTime2::new(date, time),
                offset,
            )))
        }
        Some(Kind::Unchanged(_)) => {
            return Err(CaptureError::InvalidRequest(
                "An 'unchanged' marker cannot be a key value".into(),
            ))
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
    use dbsync_typemap::temporal::DAYS_0001_TO_1900;
    use tiberius::time::{DateTime, SmallDateTime};

    #[test]
    fn temporal_cells_become_ticks_through_the_shared_rules() {
        let dt = ColumnData::DateTime(Some(DateTime::new(0, 1)));
        assert_eq!(
            to_value(dt).kind,
            Some(Kind::Datetime(DAYS_0001_TO_1900 * TICKS_PER_DAY + 33_333))
        );
        let sdt = ColumnData::SmallDateTime(Some(SmallDateTime::new(1, 61)));
        assert_eq!(
            to_value(sdt).kind,
            Some(Kind::Datetime(
                (DAYS_0001_TO_1900 + 1) * TICKS_PER_DAY + 61 * 600_000_000
            ))
        );
        let d2 = ColumnData::DateTime2(Some(DateTime2::new(Date::new(3), Time::new(5, 7))));
        assert_eq!(
            to_value(d2).kind,
            Some(Kind::Datetime(3 * TICKS_PER_DAY + 5))
        );
        let t = ColumnData::Time(Some(Time::new(1234, 3)));
        assert_eq!(to_value(t).kind, Some(Kind::Time(12_340_000)));
        assert_eq!(
            ticks_to_unix_micros(DAYS_0001_TO_1970 * TICKS_PER_DAY + 15),
            1
        );
        assert_eq!(
            unix_micros_to_ticks(1),
            DAYS_0001_TO_1970 * TICKS_PER_DAY + 10
        );
    }

    #[test]
    fn datetimeoffset_keeps_the_utc_instant_and_the_offset() {
        let v = ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
            DateTime2::new(Date::new(10), Time::new(7, 7)),
            -300,
        )));
        match to_value(v).kind {
            Some(Kind::Datetimeoffset(d)) => {
                assert_eq!(d.utc_ticks, 10 * TICKS_PER_DAY + 7);
                assert_eq!(d.offset_minutes, -300);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn packed_cells_unpack_to_the_values_of_to_value() {
        use tiberius::time::DateTime;
        let cells = || {
            vec![
                ColumnData::U8(Some(255)),
                ColumnData::I16(Some(-3)),
                ColumnData::I32(None),
                ColumnData::I64(Some(i64::MIN)),
                ColumnData::F32(Some(1.5)),
                ColumnData::F64(Some(-2.25)),
                ColumnData::Bit(Some(true)),
                ColumnData::String(Some(Cow::Owned("ü 𝄞".to_string()))),
                ColumnData::String(None),
                ColumnData::Binary(Some(Cow::Owned(vec![0, 1, 255]))),
                ColumnData::Guid(Some(uuid_from_bytes([7; 16]))),
                ColumnData::Numeric(Some(Numeric::new_with_scale(-1_234_567, 2))),
                ColumnData::Numeric(Some(Numeric::new_with_scale(10_i128.pow(38) - 1, 38))),
                ColumnData::DateTime2(Some(DateTime2::new(
                    Date::new(738_885),
                    Time::new(123_456_789, 7),
                ))),
                ColumnData::DateTime(Some(DateTime::new(5, 7))),
                ColumnData::Date(Some(Date::new(9))),
                ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                    DateTime2::new(Date::new(10), Time::new(7, 3)),
                    60,
                ))),
            ]
        };
        let mut buf = Vec::new();
        let mut w = typemap::PackedWriter(&mut buf);
        w.begin_row(cells().len());
        for c in cells() {
            pack_cell(c, &mut w);
        }
        let mut row = Vec::new();
        typemap::PackedReader::new(&buf).next_row(&mut row).unwrap();
        let expected: Vec<Value> = cells().into_iter().map(to_value).collect();
        assert_eq!(row, expected);
    }

    #[test]
    fn parameters_carry_values_exactly() {
        let v = Value {
            kind: Some(Kind::Datetime(3 * TICKS_PER_DAY + 7)),
        };
        let p = to_param(&v).unwrap();
        assert_eq!(to_value(p), v);
        let d = Value {
            kind: Some(Kind::Decimal(typemap::decimal_from_parts(-12345, 2))),
        };
        assert_eq!(to_value(to_param(&d).unwrap()), d);
        let big = Value {
            kind: Some(Kind::Decimal(typemap::decimal_from_parts(
                10_i128.pow(38) - 1,
                38,
            ))),
        };
        assert_eq!(to_value(to_param(&big).unwrap()), big);
        let u = Value {
            kind: Some(Kind::Uuid((0u8..16).collect())),
        };
        assert_eq!(to_value(to_param(&u).unwrap()), u);
        assert!(to_param(&Value {
            kind: Some(Kind::Unchanged(true))
        })
        .is_err());
    }
}
