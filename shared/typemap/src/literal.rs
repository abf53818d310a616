//! PostgreSQL literals for places that build SQL text.

use std::fmt::Write;

use bytes::BytesMut;
use dbsync_proto::v1::{value::Kind, Value};

use crate::mapping::{PgColumnType, PgKind};
use crate::numeric::{rescale, write_decimal_text};
use crate::temporal::{self, TICKS_PER_DAY, TICKS_PER_MICROSECOND};
use crate::text::for_each_clean_piece;
use crate::TypemapError;

/// A correctly quoted PostgreSQL literal of `value` for a column of type `ty`, with an explicit
/// cast (e.g. `'12.50'::numeric`, `'2020-01-01 00:00:00.123457'::timestamp`), or `NULL`.
/// The value is checked exactly as the COPY encoder checks it (same ranges, same rounding,
/// same invalid-text policy). Casts carry no typmod, so PostgreSQL never silently truncates:
/// an over-long value fails on assignment instead. The quoting is valid whatever
/// `standard_conforming_strings` is (backslashes switch to an E'' literal).
pub fn render_literal(value: &Value, ty: &PgColumnType) -> Result<String, TypemapError> {
    let Some(kind) = &value.kind else {
        return Ok("NULL".to_string());
    };
    // One rule for what is acceptable: the binary encoder's.
    crate::copy::encode_value(value, ty, &mut BytesMut::new())?;
    if let (PgKind::Bool, Kind::Bool(b)) = (ty.kind, kind) {
        return Ok(if *b { "true" } else { "false" }.to_string());
    }
    let mut text = String::new();
    match kind {
        Kind::Text(s) if ty.kind.is_text() => {
            let (before, after) = if ty.kind == PgKind::Xml {
                crate::text::split_xml_encoding_declaration(s)
            } else {
                (s.as_str(), "")
            };
            for part in [before, after] {
                for_each_clean_piece(part, ty.text_policy, &ty.column, |piece| {
                    text.push_str(piece)
                })?;
            }
        }
        _ => write_value_text(kind, ty, &mut text).map_err(|_| TypemapError::TypeMismatch {
            column: ty.column.clone(),
            value_kind: crate::copy::kind_name(value),
            pg_type: ty.kind.ddl(),
        })?,
    }
    Ok(format!(
        "{}::{}",
        quote_literal(&text),
        literal_cast(ty.kind)
    ))
}

/// Quotes a string literal: `'it''s'`, or `E'a\\b'` when it contains backslashes.
pub fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    if text.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn literal_cast(kind: PgKind) -> &'static str {
    match kind {
        PgKind::Bool => "boolean",
        PgKind::SmallInt => "smallint",
        PgKind::Integer => "integer",
        PgKind::BigInt => "bigint",
        PgKind::Real => "real",
        PgKind::Double => "double precision",
        PgKind::Numeric { .. } => "numeric",
        PgKind::Date => "date",
        PgKind::Time { .. } => "time",
        PgKind::Timestamp { .. } => "timestamp",
        PgKind::Timestamptz { .. } => "timestamptz",
        PgKind::Uuid => "uuid",
        PgKind::Bytea => "bytea",
        PgKind::Char { .. } => "bpchar",
        PgKind::Varchar { .. } => "varchar",
        PgKind::Text => "text",
        PgKind::Xml => "xml",
        PgKind::Jsonb => "jsonb",
        PgKind::Geometry => "geometry",
        PgKind::Geography => "geography",
    }
}

/// Fractional-second digits the column keeps (6 for non-temporal targets such as sql_variant
/// text).
fn column_fraction_digits(kind: PgKind) -> u8 {
    match kind {
        PgKind::Time { precision }
        | PgKind::Timestamp { precision }
        | PgKind::Timestamptz { precision } => precision,
        _ => 6,
    }
}

/// PostgreSQL input text of a non-NULL, non-text value as stored in a column of type `ty`.
/// Errors (fmt::Error) only for kind combinations the encoder rejects too.
pub(crate) fn write_value_text(
    kind: &Kind,
    ty: &PgColumnType,
    out: &mut impl Write,
) -> std::fmt::Result {
    let digits = column_fraction_digits(ty.kind);
    match (ty.kind, kind) {
        (_, Kind::Bool(b))
            if matches!(ty.kind, PgKind::SmallInt | PgKind::Integer | PgKind::BigInt) =>
        {
            write!(out, "{}", u8::from(*b))
        }
        (_, Kind::Bool(b)) => out.write_str(if *b { "true" } else { "false" }),
        (
            PgKind::Numeric {
                precision: Some(_),
                scale,
            },
            Kind::Int(i),
        ) => write_decimal_text(
            out,
            i128::from(*i) * 10i128.pow(u32::from(scale)),
            u32::from(scale),
        ),
        (_, Kind::Int(i)) => write!(out, "{i}"),
        (_, Kind::Float32(f)) => write_float(out, f64::from(*f), |o| write!(o, "{f}")),
        (_, Kind::Float64(f)) => write_float(out, *f, |o| write!(o, "{f}")),
        (PgKind::SmallInt | PgKind::Integer | PgKind::BigInt, Kind::Decimal(d)) => {
            let (unscaled, scale) =
                crate::sqlvalue::decimal_parts(d).map_err(|_| std::fmt::Error)?;
            write!(
                out,
                "{}",
                rescale(unscaled, scale, 0).ok_or(std::fmt::Error)?
            )
        }
        (target, Kind::Decimal(d)) => {
            let (unscaled, scale) =
                crate::sqlvalue::decimal_parts(d).map_err(|_| std::fmt::Error)?;
            match target {
                PgKind::Numeric {
                    precision: Some(_),
                    scale: column_scale,
                } => {
                    let value =
                        rescale(unscaled, scale, u32::from(column_scale)).ok_or(std::fmt::Error)?;
                    write_decimal_text(out, value, u32::from(column_scale))
                }
                _ => write_decimal_text(out, unscaled, scale),
            }
        }
        (_, Kind::Text(s)) => out.write_str(s),
        (PgKind::BigInt, Kind::Binary(bytes)) => {
            let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| std::fmt::Error)?;
            write!(out, "{}", u64::from_be_bytes(raw))
        }
        (PgKind::Geometry | PgKind::Geography, Kind::Binary(bytes)) => write_hex(out, bytes),
        (_, Kind::Binary(bytes)) => {
            out.write_str("\\x")?;
            write_hex(out, bytes)
        }
        (_, Kind::Uuid(bytes)) => write_uuid(out, bytes),
        (_, Kind::Date(days)) => temporal::write_date(out, i64::from(*days)),
        (_, Kind::Time(ticks)) => {
            temporal::write_time_micros(out, temporal::pg_time_micros(*ticks, digits))
        }
        (_, Kind::Datetime(ticks)) => temporal::write_timestamp(out, *ticks, digits, ' '),
        (PgKind::Timestamptz { .. }, Kind::Datetimeoffset(dto)) => {
            temporal::write_timestamp(out, dto.utc_ticks, digits, ' ')?;
            out.write_str("+00")
        }
        (_, Kind::Datetimeoffset(dto)) => {
            // As SQL Server shows it: local wall time and the offset.
            let local = dto.utc_ticks + i64::from(dto.offset_minutes) * 60 * 10_000_000;
            temporal::write_timestamp(out, local, digits, ' ')?;
            let sign = if dto.offset_minutes < 0 { '-' } else { '+' };
            let minutes = dto.offset_minutes.unsigned_abs();
            write!(out, "{sign}{:02}:{:02}", minutes / 60, minutes % 60)
        }
        (_, Kind::Unchanged(_)) => Err(std::fmt::Error),
    }
}

fn write_float<W: Write>(
    out: &mut W,
    f: f64,
    finite: impl FnOnce(&mut W) -> std::fmt::Result,
) -> std::fmt::Result {
    if f.is_nan() {
        out.write_str("NaN")
    } else if f.is_infinite() {
        out.write_str(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        finite(out)
    }
}

pub(crate) fn write_hex(out: &mut impl Write, bytes: &[u8]) -> std::fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.write_char(HEX[usize::from(b >> 4)] as char)?;
        out.write_char(HEX[usize::from(b & 0xf)] as char)?;
    }
    Ok(())
}

pub(crate) fn write_uuid(out: &mut impl Write, bytes: &[u8]) -> std::fmt::Result {
    if bytes.len() != 16 {
        return Err(std::fmt::Error);
    }
    for (i, chunk) in [
        &bytes[0..4],
        &bytes[4..6],
        &bytes[6..8],
        &bytes[8..10],
        &bytes[10..16],
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            out.write_char('-')?;
        }
        write_hex(out, chunk)?;
    }
    Ok(())
}

/// Microseconds → ticks (for tests and callers that hold PostgreSQL values).
pub fn ticks_from_pg_timestamp_micros(micros: i64) -> i64 {
    micros * TICKS_PER_MICROSECOND + temporal::DAYS_0001_TO_2000 * TICKS_PER_DAY
}
