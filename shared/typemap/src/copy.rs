//! PostgreSQL binary COPY: header, rows, trailer and the field encoder for every mapped type
//! (type-mapping reference §3.2, §3.3). Values are written straight from the wire [`Value`]
//! into the output buffer; nothing is allocated per value.

use bytes::{BufMut, BytesMut};
use dbsync_proto::v1::{value::Kind, Value};

use crate::mapping::{ColumnCheck, PgColumnType, PgKind};
use crate::numeric::{digit_count, rescale, write_pg_numeric};
use crate::temporal::{pg_date_days, pg_time_micros, pg_timestamp_micros, TICKS_PER_DAY};
use crate::text::{for_each_clean_piece, split_xml_encoding_declaration};
use crate::TypemapError;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// PostgreSQL's limit on one field.
const MAX_FIELD_BYTES: usize = (1 << 30) - 1;

/// Writes the binary COPY header (signature, flags, no extension area).
pub fn copy_header(buf: &mut BytesMut) {
    buf.put_slice(SIGNATURE);
    buf.put_i32(0);
    buf.put_i32(0);
}

/// Starts a row of `field_count` fields; follow with one [`encode_value`] per field.
#[inline]
pub fn begin_row(buf: &mut BytesMut, field_count: u16) {
    buf.put_i16(field_count as i16);
}

/// Writes the end-of-data marker.
pub fn copy_trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// Name of a value's kind, for messages.
pub fn kind_name(value: &Value) -> &'static str {
    match &value.kind {
        None => "NULL",
        Some(Kind::Bool(_)) => "bool",
        Some(Kind::Int(_)) => "int",
        Some(Kind::Float32(_)) => "float32",
        Some(Kind::Float64(_)) => "float64",
        Some(Kind::Decimal(_)) => "decimal",
        Some(Kind::Text(_)) => "text",
        Some(Kind::Binary(_)) => "binary",
        Some(Kind::Uuid(_)) => "uuid",
        Some(Kind::Date(_)) => "date",
        Some(Kind::Time(_)) => "time",
        Some(Kind::Datetime(_)) => "datetime",
        Some(Kind::Datetimeoffset(_)) => "datetimeoffset",
        Some(Kind::Unchanged(_)) => "unchanged",
    }
}

/// Writes one field: the i32 length (−1 for NULL) and the binary value for `ty`. On error the
/// buffer is left as it was before the call.
#[inline]
pub fn encode_value(
    value: &Value,
    ty: &PgColumnType,
    buf: &mut BytesMut,
) -> Result<(), TypemapError> {
    let Some(kind) = &value.kind else {
        buf.put_i32(-1);
        return Ok(());
    };
    let start = buf.len();
    buf.put_i32(0);
    match encode_body(kind, value, ty, buf) {
        Ok(()) => {
            let length = buf.len() - start - 4;
            if length > MAX_FIELD_BYTES {
                buf.truncate(start);
                return Err(TypemapError::TooLarge {
                    column: ty.column.clone(),
                    bytes: length,
                });
            }
            buf[start..start + 4].copy_from_slice(&(length as i32).to_be_bytes());
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

fn encode_body(
    kind: &Kind,
    value: &Value,
    ty: &PgColumnType,
    buf: &mut BytesMut,
) -> Result<(), TypemapError> {
    let mismatch = || TypemapError::TypeMismatch {
        column: ty.column.clone(),
        value_kind: kind_name(value),
        pg_type: ty.kind.ddl(),
    };
    if let Kind::Unchanged(_) = kind {
        return Err(TypemapError::UnchangedMarker {
            column: ty.column.clone(),
        });
    }
    if ty.any_value_as_text && ty.kind.is_text() && !matches!(kind, Kind::Text(_)) {
        return crate::literal::write_value_text(kind, ty, &mut BufWriter(buf))
            .map_err(|_| mismatch());
    }
    match (ty.kind, kind) {
        (PgKind::Bool, Kind::Bool(b)) => buf.put_u8(u8::from(*b)),
        (PgKind::SmallInt | PgKind::Integer | PgKind::BigInt, Kind::Bool(b)) => {
            put_int(ty, i64::from(*b), buf)?;
        }
        (PgKind::SmallInt | PgKind::Integer | PgKind::BigInt, Kind::Int(i)) => {
            put_int(ty, *i, buf)?
        }
        // decimal(p,0) IDENTITY columns are mapped to bigint.
        (PgKind::SmallInt | PgKind::Integer | PgKind::BigInt, Kind::Decimal(d)) => {
            let (unscaled, scale) =
                crate::sqlvalue::decimal_parts(d).map_err(|e| with_column(e, ty))?;
            let integral = rescale(unscaled, scale, 0)
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| decimal_out_of_range(ty, unscaled, scale))?;
            put_int(ty, integral, buf)?;
        }
        // rowversion as bigint: an 8-byte big-endian counter.
        (PgKind::BigInt, Kind::Binary(bytes)) => {
            let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| mismatch())?;
            put_int(
                ty,
                i64::try_from(u64::from_be_bytes(raw))
                    .map_err(|_| out_of_range(ty, u64::from_be_bytes(raw)))?,
                buf,
            )?;
        }
        (PgKind::Real, Kind::Float32(f)) => buf.put_f32(*f),
        // Only when no precision is lost (float(n ≤ 24) is a real in SQL Server too).
        (PgKind::Real, Kind::Float64(f)) => {
            let narrow = *f as f32;
            if f64::from(narrow) != *f && !f.is_nan() {
                return Err(out_of_range(ty, f));
            }
            buf.put_f32(narrow);
        }
        (PgKind::Double, Kind::Float64(f)) => buf.put_f64(*f),
        (PgKind::Double, Kind::Float32(f)) => buf.put_f64(f64::from(*f)),
        (PgKind::Numeric { precision, scale }, Kind::Decimal(d)) => {
            let (unscaled, from_scale) =
                crate::sqlvalue::decimal_parts(d).map_err(|e| with_column(e, ty))?;
            put_numeric(ty, precision, scale, unscaled, from_scale, buf)?;
        }
        (PgKind::Numeric { precision, scale }, Kind::Int(i)) => {
            put_numeric(ty, precision, scale, i128::from(*i), 0, buf)?;
        }
        (PgKind::Date, Kind::Date(days)) => buf.put_i32(pg_date_days(*days)),
        (PgKind::Time { precision }, Kind::Time(ticks)) => {
            if !(0..TICKS_PER_DAY).contains(ticks) {
                return Err(out_of_range(ty, ticks));
            }
            buf.put_i64(pg_time_micros(*ticks, precision));
        }
        (PgKind::Timestamp { precision }, Kind::Datetime(ticks)) => {
            check_ticks(ty, *ticks)?;
            buf.put_i64(pg_timestamp_micros(*ticks, precision));
        }
        (PgKind::Timestamptz { precision }, Kind::Datetimeoffset(dto)) => {
            check_ticks(ty, dto.utc_ticks)?;
            buf.put_i64(pg_timestamp_micros(dto.utc_ticks, precision));
        }
        (PgKind::Uuid, Kind::Uuid(bytes)) => {
            if bytes.len() != 16 {
                return Err(TypemapError::Malformed {
                    column: ty.column.clone(),
                    detail: format!("uuid of {} bytes", bytes.len()),
                });
            }
            buf.put_slice(bytes);
        }
        (PgKind::Bytea | PgKind::Geometry | PgKind::Geography, Kind::Binary(bytes)) => {
            buf.put_slice(bytes)
        }
        (PgKind::Char { .. } | PgKind::Varchar { .. } | PgKind::Text, Kind::Text(text)) => {
            for_each_clean_piece(text, ty.text_policy, &ty.column, |piece| {
                buf.put_slice(piece.as_bytes())
            })?;
        }
        (PgKind::Xml, Kind::Text(text)) => {
            let (before, after) = split_xml_encoding_declaration(text);
            for_each_clean_piece(before, ty.text_policy, &ty.column, |piece| {
                buf.put_slice(piece.as_bytes())
            })?;
            for_each_clean_piece(after, ty.text_policy, &ty.column, |piece| {
                buf.put_slice(piece.as_bytes())
            })?;
        }
        (PgKind::Jsonb, Kind::Text(text)) => {
            buf.put_u8(1); // jsonb binary format version
            for_each_clean_piece(text, ty.text_policy, &ty.column, |piece| {
                buf.put_slice(piece.as_bytes())
            })?;
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

#[inline]
fn put_int(ty: &PgColumnType, v: i64, buf: &mut BytesMut) -> Result<(), TypemapError> {
    if let Some(ColumnCheck::Range { min, max }) = ty.check {
        if v < min || v > max {
            return Err(out_of_range(ty, v));
        }
    }
    match ty.kind {
        PgKind::SmallInt => buf.put_i16(i16::try_from(v).map_err(|_| out_of_range(ty, v))?),
        PgKind::Integer => buf.put_i32(i32::try_from(v).map_err(|_| out_of_range(ty, v))?),
        _ => buf.put_i64(v),
    }
    Ok(())
}

#[inline]
fn put_numeric(
    ty: &PgColumnType,
    precision: Option<u8>,
    scale: u8,
    unscaled: i128,
    from_scale: u32,
    buf: &mut BytesMut,
) -> Result<(), TypemapError> {
    let (value, value_scale) = match precision {
        // Unconstrained numeric keeps the value's own scale.
        None => (unscaled, from_scale),
        Some(p) => {
            let value = rescale(unscaled, from_scale, u32::from(scale))
                .ok_or_else(|| decimal_out_of_range(ty, unscaled, from_scale))?;
            // p digits in total, `scale` of them fractional.
            if value != 0 && digit_count(value.unsigned_abs()) > u32::from(p) {
                return Err(decimal_out_of_range(ty, unscaled, from_scale));
            }
            (value, u32::from(scale))
        }
    };
    write_pg_numeric(buf, value, value_scale);
    Ok(())
}

/// Ticks must lie in 0001-01-01 ..= 9999-12-31 23:59:59.9999999.
#[inline]
fn check_ticks(ty: &PgColumnType, ticks: i64) -> Result<(), TypemapError> {
    const MAX_TICKS: i64 = 3_652_059 * TICKS_PER_DAY;
    if (0..MAX_TICKS).contains(&ticks) {
        Ok(())
    } else {
        Err(out_of_range(ty, ticks))
    }
}

fn out_of_range(ty: &PgColumnType, value: impl std::fmt::Display) -> TypemapError {
    TypemapError::OutOfRange {
        column: ty.column.clone(),
        value: value.to_string(),
        pg_type: ty.kind.ddl(),
    }
}

fn decimal_out_of_range(ty: &PgColumnType, unscaled: i128, scale: u32) -> TypemapError {
    let mut text = String::new();
    let _ = crate::numeric::write_decimal_text(&mut text, unscaled, scale);
    out_of_range(ty, text)
}

fn with_column(error: TypemapError, ty: &PgColumnType) -> TypemapError {
    match error {
        TypemapError::Malformed { detail, .. } => TypemapError::Malformed {
            column: ty.column.clone(),
            detail,
        },
        other => other,
    }
}

/// `fmt::Write` into a BytesMut.
pub(crate) struct BufWriter<'a>(pub &'a mut BytesMut);

impl std::fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}
