//! Canonical value forms for verification (issue 7).
//!
//! [`canonical_bytes`] turns a *source* value into the canonical text of the value dbsync's
//! mapping stores in the target column; [`pg_canonical_sql`] computes the same text on the
//! PostgreSQL side from the stored value. So a source row and its target row have equal
//! canonical forms exactly when the target holds what the mapping says it should: money equals
//! its numeric(19,4), datetime2(7) equals its microsecond rounding (the one rule in
//! [`crate::temporal`]), datetimeoffset equals its timestamptz by UTC instant, a GUID equals its
//! uuid, and char(n) compares without its padding. The canonical texts do not depend on any
//! session setting (TimeZone, DateStyle, extra_float_digits, bytea_output).
//!
//! | target | canonical text | PostgreSQL expression |
//! |---|---|---|
//! | boolean | `true` / `false` | `c::text` |
//! | smallint, integer, bigint | decimal digits | `c::text` |
//! | numeric(p,s) | decimal with exactly s fractional digits | `c::text` |
//! | real, double precision | hex of the IEEE bits (big-endian), −0 → 0, one NaN | `encode(float8send(…), 'hex')` |
//! | date | `YYYY-MM-DD` | `to_char(c, 'YYYY-MM-DD')` |
//! | time(n) | `HH:MM:SS.ffffff` (rounded to n, may be 24:00:00) | `to_char(c, 'HH24:MI:SS.US')` |
//! | timestamp(n) | `YYYY-MM-DDTHH:MM:SS.ffffff` (rounded to n) | `to_char(c, …)` |
//! | timestamptz(n) | `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC) | `to_char(c AT TIME ZONE 'UTC', …)` |
//! | uuid | lower-case hyphenated | `c::text` |
//! | bytea, geometry, geography | lower-case hex | `encode(c, 'hex')` |
//! | char(n) | the text without trailing blanks | `c::text` (bpchar → text drops them) |
//! | varchar, text | the text after the invalid-text policy | `c::text` |
//! | xml | the text without the encoding declaration | `c::text` |
//! | jsonb | PostgreSQL's normalized jsonb text; the source side must be normalized by PostgreSQL too (not done here) | `c::text` |
//!
//! Framing: each field is `<octet length>:<canonical text>;`, or `N;` for NULL, so a row's
//! fields can be concatenated (and hashed) without ambiguity.

use std::fmt::Write as _;

use dbsync_proto::v1::{value::Kind, Value};

use crate::literal::{write_hex, write_uuid, write_value_text};
use crate::mapping::{PgColumnType, PgKind};
use crate::numeric::{rescale, write_decimal_text};
use crate::temporal;
use crate::text::{for_each_clean_piece, split_xml_encoding_declaration};

/// Appends the framed canonical form of `value` as stored in a column of type `ty` (see the
/// module docs). A value the encoder would reject (say, a NUL under the `error` policy) gets
/// its raw form, which then differs from whatever the target holds: a mismatch is reported.
pub fn canonical_bytes(value: &Value, ty: &PgColumnType, out: &mut Vec<u8>) {
    let start = out.len();
    if !canonical_text(value, ty, out) {
        out.extend_from_slice(b"N;");
        return;
    }
    // Prefix the length: move the text right by the prefix's size.
    let mut length = out.len() - start;
    let mut digits = [0u8; 21];
    let mut first = digits.len() - 1;
    digits[first] = b':';
    loop {
        first -= 1;
        digits[first] = b'0' + (length % 10) as u8;
        length /= 10;
        if length == 0 {
            break;
        }
    }
    out.splice(start..start, digits[first..].iter().copied());
    out.push(b';');
}

/// Appends the unframed canonical text of a non-NULL value; returns false (and appends
/// nothing) for NULL.
pub fn canonical_text(value: &Value, ty: &PgColumnType, out: &mut Vec<u8>) -> bool {
    let Some(kind) = &value.kind else {
        return false;
    };
    let mut w = VecWriter(out);
    let _ = write_canonical(kind, ty, &mut w);
    true
}

fn write_canonical(kind: &Kind, ty: &PgColumnType, w: &mut VecWriter) -> std::fmt::Result {
    match (ty.kind, kind) {
        (PgKind::Real, Kind::Float32(f)) => write_float32_bits(w, *f),
        (PgKind::Real, Kind::Float64(f)) => write_float32_bits(w, *f as f32),
        (PgKind::Double, Kind::Float64(f)) => write_float64_bits(w, *f),
        (PgKind::Double, Kind::Float32(f)) => write_float64_bits(w, f64::from(*f)),
        (
            PgKind::Numeric {
                precision: Some(_),
                scale,
            },
            Kind::Decimal(d),
        ) => {
            let Ok((unscaled, from)) = crate::sqlvalue::decimal_parts(d) else {
                return w.write_str("<malformed decimal>");
            };
            match rescale(unscaled, from, u32::from(scale)) {
                Some(value) => write_decimal_text(w, value, u32::from(scale)),
                None => write_decimal_text(w, unscaled, from),
            }
        }
        (PgKind::Date, Kind::Date(days)) => temporal::write_date(w, i64::from(*days)),
        (PgKind::Time { precision }, Kind::Time(ticks)) => {
            temporal::write_time_micros(w, temporal::pg_time_micros(*ticks, precision))
        }
        (PgKind::Timestamp { precision }, Kind::Datetime(ticks)) => {
            temporal::write_timestamp(w, *ticks, precision, 'T')
        }
        (PgKind::Timestamptz { precision }, Kind::Datetimeoffset(dto)) => {
            temporal::write_timestamp(w, dto.utc_ticks, precision, 'T')?;
            w.write_char('Z')
        }
        (_, Kind::Uuid(bytes)) => write_uuid(w, bytes),
        (_, Kind::Binary(bytes))
            if matches!(
                ty.kind,
                PgKind::Bytea | PgKind::Geometry | PgKind::Geography
            ) =>
        {
            write_hex(w, bytes)
        }
        (PgKind::Char { .. }, Kind::Text(s)) => write_clean(w, s.trim_end_matches(' '), ty),
        (PgKind::Xml, Kind::Text(s)) => {
            let (before, after) = split_xml_encoding_declaration(s);
            write_clean(w, before, ty)?;
            write_clean(w, after, ty)
        }
        (_, Kind::Text(s)) => write_clean(w, s, ty),
        // Everything else (integers, booleans, sql_variant values as text, rowversion as
        // bigint) uses the value's PostgreSQL text, which is already canonical.
        (_, other) => write_value_text(other, ty, w),
    }
}

fn write_clean(w: &mut VecWriter, text: &str, ty: &PgColumnType) -> std::fmt::Result {
    if for_each_clean_piece(text, ty.text_policy, &ty.column, |piece| {
        w.0.extend_from_slice(piece.as_bytes())
    })
    .is_err()
    {
        w.0.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

fn write_float32_bits(w: &mut VecWriter, f: f32) -> std::fmt::Result {
    let normalized = if f == 0.0 {
        0.0f32
    } else if f.is_nan() {
        f32::NAN
    } else {
        f
    };
    write_hex(w, &normalized.to_bits().to_be_bytes())
}

fn write_float64_bits(w: &mut VecWriter, f: f64) -> std::fmt::Result {
    let normalized = if f == 0.0 {
        0.0f64
    } else if f.is_nan() {
        f64::NAN
    } else {
        f
    };
    write_hex(w, &normalized.to_bits().to_be_bytes())
}

/// The PostgreSQL expression computing the framed canonical form of `column_ident` (a quoted
/// identifier or any expression of type `ty`), equal to [`canonical_bytes`] of the source
/// value, so verification can checksum on the server, e.g.
/// `SELECT md5(string_agg(<expr1> || <expr2>, '' ORDER BY key)) FROM t WHERE key BETWEEN …`.
pub fn pg_canonical_sql(column_ident: &str, ty: &PgColumnType) -> String {
    let text = pg_canonical_text_sql(column_ident, ty);
    format!("(COALESCE(octet_length({text})::text || ':' || {text}, 'N') || ';')")
}

/// The PostgreSQL expression computing the unframed canonical text (NULL for NULL).
pub fn pg_canonical_text_sql(c: &str, ty: &PgColumnType) -> String {
    match ty.kind {
        PgKind::Real => format!("encode(float4send(CASE WHEN {c} = 0 THEN 0::real WHEN {c} = 'NaN'::real THEN 'NaN'::real ELSE {c} END), 'hex')"),
        PgKind::Double => format!("encode(float8send(CASE WHEN {c} = 0 THEN 0::float8 WHEN {c} = 'NaN'::float8 THEN 'NaN'::float8 ELSE {c} END), 'hex')"),
        PgKind::Date => format!("to_char({c}, 'YYYY-MM-DD')"),
        PgKind::Time { .. } => format!("to_char({c}, 'HH24:MI:SS.US')"),
        PgKind::Timestamp { .. } => format!("to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"),
        PgKind::Timestamptz { .. } => format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
        PgKind::Bytea => format!("encode({c}, 'hex')"),
        PgKind::Geometry | PgKind::Geography => format!("encode(ST_AsEWKB({c}), 'hex')"),
        _ => format!("{c}::text"),
    }
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
