//! Value operations with SQL Server semantics: type names, comparison (CI_AS collation,
//! trailing spaces ignored), conversion (CAST/CONVERT with styles), arithmetic and the
//! result-type rules of expressions.

use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::api::SqlError;
use crate::types::{Collation, SqlType, Value};

pub const DEFAULT_COLLATION: Collation = Collation::SQL_LATIN1_GENERAL_CP1_CI_AS;
/// Days from 0001-01-01 to 1900-01-01.
pub const DAYS_0001_TO_1900: i32 = 693_595;
pub const TICKS_PER_DAY: u64 = 864_000_000_000;

pub fn varchar(len: Option<u16>) -> SqlType {
    SqlType::VarChar {
        len,
        collation: DEFAULT_COLLATION,
    }
}
pub fn nvarchar(len: Option<u16>) -> SqlType {
    SqlType::NVarChar {
        len,
        collation: DEFAULT_COLLATION,
    }
}
pub fn sysname() -> SqlType {
    nvarchar(Some(128))
}
pub fn decimal(p: u8, s: u8) -> SqlType {
    SqlType::Decimal {
        precision: p,
        scale: s,
        numeric: false,
    }
}

// ---------------------------------------------------------------------------------------
// Errors used across the engine
// ---------------------------------------------------------------------------------------

pub fn err(number: i32, message: impl Into<String>) -> SqlError {
    SqlError::new(number, documented_severity(number), 1, message)
}

/// The severity SQL Server documents for an error number ("Database engine events and
/// errors"), for the numbers the stand-in raises whose severity is not 16.
fn documented_severity(number: i32) -> u8 {
    match number {
        // Syntax and compile errors 101–199 are severity 15, except these.
        106 | 130 | 165 | 184 | 187 | 192 => 16,
        101..=199 => 15,
        8154..=8159 => 15,
        2601 | 2627 => 14,
        3701 => 11,
        _ => 16,
    }
}

pub fn unsupported(what: impl std::fmt::Display) -> SqlError {
    err(
        50999,
        format!("The SQL Server stand-in does not support {what}."),
    )
}

fn conversion_failed(v: &Value, to: &SqlType) -> SqlError {
    let text = to_display_string(v);
    match to {
        SqlType::Int | SqlType::BigInt | SqlType::SmallInt | SqlType::TinyInt | SqlType::Bit => {
            err(
                245,
                format!(
                    "Conversion failed when converting the {} value '{}' to data type {}.",
                    value_kind_name(v),
                    text,
                    type_name(to)
                ),
            )
        }
        SqlType::Date
        | SqlType::DateTime
        | SqlType::DateTime2 { .. }
        | SqlType::SmallDateTime
        | SqlType::Time { .. }
        | SqlType::DateTimeOffset { .. } => err(
            241,
            "Conversion failed when converting date and/or time from character string.",
        ),
        SqlType::UniqueIdentifier => err(
            8169,
            "Conversion failed when converting from a character string to uniqueidentifier.",
        ),
        SqlType::Decimal { .. }
        | SqlType::Money
        | SqlType::SmallMoney
        | SqlType::Float
        | SqlType::Real => err(
            8114,
            format!(
                "Error converting data type {} to {}.",
                value_kind_name(v),
                type_name(to)
            ),
        ),
        _ => err(
            529,
            format!(
                "Explicit conversion from data type {} to {} is not allowed.",
                value_kind_name(v),
                type_name(to)
            ),
        ),
    }
}

fn overflow(to: &SqlType) -> SqlError {
    match to {
        SqlType::Decimal { .. } => err(
            8115,
            "Arithmetic overflow error converting expression to data type numeric.",
        ),
        _ => err(
            8115,
            format!(
                "Arithmetic overflow error converting expression to data type {}.",
                type_name(to)
            ),
        ),
    }
}

fn value_kind_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "varchar",
        Value::Int(_) => "int",
        Value::BigInt(_) => "bigint",
        Value::SmallInt(_) => "smallint",
        Value::TinyInt(_) => "tinyint",
        Value::Decimal(..) => "numeric",
        Value::Float(_) => "float",
        Value::Real(_) => "real",
        Value::Binary(_) => "varbinary",
        Value::Guid(_) => "uniqueidentifier",
        Value::Bit(_) => "bit",
        Value::Money(_) => "money",
        Value::SmallMoney(_) => "smallmoney",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::DateTime { .. } => "datetime",
        Value::SmallDateTime { .. } => "smalldatetime",
        Value::DateTime2 { .. } => "datetime2",
        Value::DateTimeOffset { .. } => "datetimeoffset",
        Value::Null => "NULL",
    }
}

// ---------------------------------------------------------------------------------------
// Type names
// ---------------------------------------------------------------------------------------

/// The type as SQL Server spells it in error messages and INFORMATION_SCHEMA (lower case).
pub fn type_name(t: &SqlType) -> String {
    fn len(l: Option<u16>) -> String {
        l.map(|n| n.to_string()).unwrap_or_else(|| "max".into())
    }
    match t {
        SqlType::Decimal {
            precision,
            scale,
            numeric,
        } => {
            format!(
                "{}({},{})",
                if *numeric { "numeric" } else { "decimal" },
                precision,
                scale
            )
        }
        SqlType::Char { len: l, .. } => format!("char({l})"),
        SqlType::VarChar { len: l, .. } => format!("varchar({})", len(*l)),
        SqlType::NChar { len: l, .. } => format!("nchar({l})"),
        SqlType::NVarChar { len: l, .. } => format!("nvarchar({})", len(*l)),
        SqlType::Binary { len: l } => format!("binary({l})"),
        SqlType::VarBinary { len: l } => format!("varbinary({})", len(*l)),
        SqlType::Time { scale } => format!("time({scale})"),
        SqlType::DateTime2 { scale } => format!("datetime2({scale})"),
        SqlType::DateTimeOffset { scale } => format!("datetimeoffset({scale})"),
        other => base_type_name(other).to_string(),
    }
}

/// The bare type name (sys.types.name).
pub fn base_type_name(t: &SqlType) -> &'static str {
    match t {
        SqlType::Bit => "bit",
        SqlType::TinyInt => "tinyint",
        SqlType::SmallInt => "smallint",
        SqlType::Int => "int",
        SqlType::BigInt => "bigint",
        SqlType::Real => "real",
        SqlType::Float => "float",
        SqlType::Decimal { numeric: false, .. } => "decimal",
        SqlType::Decimal { numeric: true, .. } => "numeric",
        SqlType::Money => "money",
        SqlType::SmallMoney => "smallmoney",
        SqlType::Date => "date",
        SqlType::Time { .. } => "time",
        SqlType::DateTime => "datetime",
        SqlType::SmallDateTime => "smalldatetime",
        SqlType::DateTime2 { .. } => "datetime2",
        SqlType::DateTimeOffset { .. } => "datetimeoffset",
        SqlType::Char { .. } => "char",
        SqlType::VarChar { .. } => "varchar",
        SqlType::NChar { .. } => "nchar",
        SqlType::NVarChar { .. } => "nvarchar",
        SqlType::Binary { .. } => "binary",
        SqlType::VarBinary { .. } => "varbinary",
        SqlType::Text { .. } => "text",
        SqlType::NText { .. } => "ntext",
        SqlType::Image => "image",
        SqlType::UniqueIdentifier => "uniqueidentifier",
        SqlType::Xml => "xml",
        SqlType::RowVersion => "timestamp",
        SqlType::SqlVariant => "sql_variant",
        SqlType::HierarchyId => "hierarchyid",
        SqlType::Geometry => "geometry",
        SqlType::Geography => "geography",
        SqlType::Null => "int",
    }
}

/// sys.types.system_type_id / user_type_id of the base type.
pub fn system_type_id(t: &SqlType) -> (u8, i32) {
    let id: u8 = match t {
        SqlType::Image => 34,
        SqlType::Text { .. } => 35,
        SqlType::UniqueIdentifier => 36,
        SqlType::Date => 40,
        SqlType::Time { .. } => 41,
        SqlType::DateTime2 { .. } => 42,
        SqlType::DateTimeOffset { .. } => 43,
        SqlType::TinyInt => 48,
        SqlType::SmallInt => 52,
        SqlType::Int | SqlType::Null => 56,
        SqlType::SmallDateTime => 58,
        SqlType::Real => 59,
        SqlType::Money => 60,
        SqlType::DateTime => 61,
        SqlType::Float => 62,
        SqlType::SqlVariant => 98,
        SqlType::NText { .. } => 99,
        SqlType::Bit => 104,
        SqlType::Decimal { numeric: false, .. } => 106,
        SqlType::Decimal { numeric: true, .. } => 108,
        SqlType::SmallMoney => 122,
        SqlType::BigInt => 127,
        SqlType::HierarchyId | SqlType::Geometry | SqlType::Geography => 240,
        SqlType::VarBinary { .. } => 165,
        SqlType::VarChar { .. } => 167,
        SqlType::Binary { .. } => 173,
        SqlType::Char { .. } => 175,
        SqlType::RowVersion => 189,
        SqlType::NVarChar { .. } => 231,
        SqlType::NChar { .. } => 239,
        SqlType::Xml => 241,
    };
    let user = match t {
        SqlType::HierarchyId => 128,
        SqlType::Geometry => 129,
        SqlType::Geography => 130,
        _ => id as i32,
    };
    (id, user)
}

/// sys.columns max_length, precision, scale.
pub fn storage_shape(t: &SqlType) -> (i16, u8, u8) {
    match t {
        SqlType::Bit => (1, 1, 0),
        SqlType::TinyInt => (1, 3, 0),
        SqlType::SmallInt => (2, 5, 0),
        SqlType::Int | SqlType::Null => (4, 10, 0),
        SqlType::BigInt => (8, 19, 0),
        SqlType::Real => (4, 24, 0),
        SqlType::Float => (8, 53, 0),
        SqlType::Decimal {
            precision, scale, ..
        } => (decimal_bytes(*precision) as i16, *precision, *scale),
        SqlType::Money => (8, 19, 4),
        SqlType::SmallMoney => (4, 10, 4),
        SqlType::Date => (3, 10, 0),
        SqlType::Time { scale } => (
            time_bytes(*scale) as i16,
            if *scale == 0 { 8 } else { 9 + scale },
            *scale,
        ),
        SqlType::DateTime => (8, 23, 3),
        SqlType::SmallDateTime => (4, 16, 0),
        SqlType::DateTime2 { scale } => (
            time_bytes(*scale) as i16 + 3,
            if *scale == 0 { 19 } else { 20 + scale },
            *scale,
        ),
        SqlType::DateTimeOffset { scale } => (
            time_bytes(*scale) as i16 + 5,
            if *scale == 0 { 26 } else { 27 + scale },
            *scale,
        ),
        SqlType::Char { len, .. } => (*len as i16, 0, 0),
        SqlType::VarChar { len, .. } => (len.map(|l| l as i16).unwrap_or(-1), 0, 0),
        SqlType::NChar { len, .. } => (*len as i16 * 2, 0, 0),
        SqlType::NVarChar { len, .. } => (len.map(|l| l as i16 * 2).unwrap_or(-1), 0, 0),
        SqlType::Binary { len } => (*len as i16, 0, 0),
        SqlType::VarBinary { len } => (len.map(|l| l as i16).unwrap_or(-1), 0, 0),
        SqlType::Text { .. } | SqlType::NText { .. } | SqlType::Image => (16, 0, 0),
        SqlType::UniqueIdentifier => (16, 0, 0),
        SqlType::Xml => (-1, 0, 0),
        SqlType::RowVersion => (8, 0, 0),
        SqlType::SqlVariant => (8016, 0, 0),
        SqlType::HierarchyId => (892, 0, 0),
        SqlType::Geometry | SqlType::Geography => (-1, 0, 0),
    }
}

fn decimal_bytes(p: u8) -> u8 {
    match p {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

fn time_bytes(scale: u8) -> u8 {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

pub fn is_string_type(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::Char { .. }
            | SqlType::VarChar { .. }
            | SqlType::NChar { .. }
            | SqlType::NVarChar { .. }
            | SqlType::Text { .. }
            | SqlType::NText { .. }
            | SqlType::Xml
    )
}
pub fn is_unicode_type(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::NChar { .. } | SqlType::NVarChar { .. } | SqlType::NText { .. } | SqlType::Xml
    )
}
pub fn is_binary_type(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::Binary { .. } | SqlType::VarBinary { .. } | SqlType::Image | SqlType::RowVersion
    )
}
pub fn is_lob_type(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::VarChar { len: None, .. }
            | SqlType::NVarChar { len: None, .. }
            | SqlType::VarBinary { len: None }
            | SqlType::Text { .. }
            | SqlType::NText { .. }
            | SqlType::Image
            | SqlType::Xml
    )
}
pub fn is_integer_type(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt | SqlType::Bit
    )
}
pub fn is_numeric_type(t: &SqlType) -> bool {
    is_integer_type(t)
        || matches!(
            t,
            SqlType::Decimal { .. }
                | SqlType::Money
                | SqlType::SmallMoney
                | SqlType::Float
                | SqlType::Real
        )
}
pub fn is_datetime_type(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::Date
            | SqlType::Time { .. }
            | SqlType::DateTime
            | SqlType::SmallDateTime
            | SqlType::DateTime2 { .. }
            | SqlType::DateTimeOffset { .. }
    )
}

/// Parses a type name as written in DDL, CAST or a parameter declaration.
/// `default_char_len` is 1 in declarations and 30 in CAST/CONVERT.
pub fn parse_type_name(text: &str, default_char_len: u16) -> Result<SqlType, SqlError> {
    let cleaned: String = text.replace(['[', ']'], "");
    let t = cleaned.trim().to_lowercase();
    let (base, args) = match t.find('(') {
        Some(i) => {
            let close = t
                .rfind(')')
                .ok_or_else(|| err(102, format!("Incorrect syntax near '{text}'.")))?;
            (
                t[..i].trim().to_string(),
                t[i + 1..close]
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>(),
            )
        }
        None => (t.trim().to_string(), vec![]),
    };
    let base = base.strip_prefix("sys.").unwrap_or(&base).to_string();
    let num = |i: usize, default: u32| -> Result<u32, SqlError> {
        match args.get(i) {
            None => Ok(default),
            Some(s) => s
                .parse::<u32>()
                .map_err(|_| err(102, format!("Incorrect syntax near '{s}'."))),
        }
    };
    let len_or_max = |default: u16, limit: u32| -> Result<Option<u16>, SqlError> {
        match args.first().map(|s| s.as_str()) {
            Some("max") => Ok(None),
            Some(_) => {
                let n = num(0, 0)?;
                if n == 0 || n > limit {
                    return Err(err(
                        131,
                        format!("The size ({n}) given to the type '{base}' exceeds the maximum allowed for any data type ({limit})."),
                    ));
                }
                Ok(Some(n as u16))
            }
            None => Ok(Some(default)),
        }
    };
    let scale7 = |i| -> Result<u8, SqlError> {
        let s = num(i, 7)?;
        if s > 7 {
            return Err(err(1002, format!("Specified scale {s} is invalid.")));
        }
        Ok(s as u8)
    };
    let c = DEFAULT_COLLATION;
    Ok(match base.as_str() {
        "bit" => SqlType::Bit,
        "tinyint" => SqlType::TinyInt,
        "smallint" => SqlType::SmallInt,
        "int" | "integer" => SqlType::Int,
        "bigint" => SqlType::BigInt,
        "real" => SqlType::Real,
        "float" => {
            if num(0, 53)? <= 24 {
                SqlType::Real
            } else {
                SqlType::Float
            }
        }
        "decimal" | "dec" | "numeric" => {
            let p = num(0, 18)?;
            let s = num(1, 0)?;
            if !(1..=38).contains(&p) {
                return Err(err(1002, format!("Specified column precision {p} is greater than the maximum precision of 38.")));
            }
            if s > p {
                return Err(err(
                    192,
                    "The scale must be less than or equal to the precision.",
                ));
            }
            SqlType::Decimal {
                precision: p as u8,
                scale: s as u8,
                numeric: base == "numeric",
            }
        }
        "money" => SqlType::Money,
        "smallmoney" => SqlType::SmallMoney,
        "date" => SqlType::Date,
        "time" => SqlType::Time { scale: scale7(0)? },
        "datetime" => SqlType::DateTime,
        "smalldatetime" => SqlType::SmallDateTime,
        "datetime2" => SqlType::DateTime2 { scale: scale7(0)? },
        "datetimeoffset" => SqlType::DateTimeOffset { scale: scale7(0)? },
        "char" | "character" => SqlType::Char {
            len: len_or_max(default_char_len, 8000)?.unwrap_or(8000),
            collation: c,
        },
        "varchar" | "character varying" => SqlType::VarChar {
            len: len_or_max(default_char_len, 8000)?,
            collation: c,
        },
        "nchar" | "national character" => SqlType::NChar {
            len: len_or_max(default_char_len, 4000)?.unwrap_or(4000),
            collation: c,
        },
        "nvarchar" | "national character varying" => SqlType::NVarChar {
            len: len_or_max(default_char_len, 4000)?,
            collation: c,
        },
        "sysname" => sysname(),
        "binary" => SqlType::Binary {
            len: len_or_max(default_char_len, 8000)?.unwrap_or(8000),
        },
        "varbinary" => SqlType::VarBinary {
            len: len_or_max(default_char_len, 8000)?,
        },
        "text" => SqlType::Text { collation: c },
        "ntext" => SqlType::NText { collation: c },
        "image" => SqlType::Image,
        "uniqueidentifier" => SqlType::UniqueIdentifier,
        "xml" => SqlType::Xml,
        "rowversion" | "timestamp" => SqlType::RowVersion,
        "sql_variant" => SqlType::SqlVariant,
        "hierarchyid" => SqlType::HierarchyId,
        "geometry" => SqlType::Geometry,
        "geography" => SqlType::Geography,
        _ => {
            return Err(err(
                2715,
                format!(
                    "Column, parameter, or variable #1: Cannot find data type {}.",
                    text.trim()
                ),
            ))
        }
    })
}

// ---------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------

/// Text form used by implicit string conversion, PRINT and messages.
pub fn to_display_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.to_string(),
        Value::Bit(b) => (if *b { "1" } else { "0" }).into(),
        Value::TinyInt(x) => x.to_string(),
        Value::SmallInt(x) => x.to_string(),
        Value::Int(x) => x.to_string(),
        Value::BigInt(x) => x.to_string(),
        Value::Real(x) => format_float(*x as f64),
        Value::Float(x) => format_float(*x),
        Value::Decimal(m, s) => format_decimal(*m, *s),
        Value::Money(m) => format_decimal(*m as i128, 4).pipe_money(),
        Value::SmallMoney(m) => format_decimal(*m as i128, 4).pipe_money(),
        Value::Binary(b) => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("0x");
            for x in b.iter() {
                s.push_str(&format!("{x:02X}"));
            }
            s
        }
        Value::Guid(g) => uuid::Uuid::from_bytes(*g).to_string().to_uppercase(),
        other => format_datetime_value(other, 121, None).unwrap_or_default(),
    }
}

trait PipeMoney {
    fn pipe_money(self) -> String;
}
impl PipeMoney for String {
    /// Money converts to string with 2 decimals (style 0).
    fn pipe_money(self) -> String {
        match self.find('.') {
            Some(i) => self[..(i + 3).min(self.len())].to_string(),
            None => self,
        }
    }
}

fn format_float(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x}");
        if s.len() > 16 {
            format!("{x:e}")
        } else {
            s
        }
    }
}

pub fn format_decimal(m: i128, scale: u8) -> String {
    let neg = m < 0;
    let digits = m.unsigned_abs().to_string();
    let s = scale as usize;
    let body = if s == 0 {
        digits
    } else if digits.len() > s {
        format!(
            "{}.{}",
            &digits[..digits.len() - s],
            &digits[digits.len() - s..]
        )
    } else {
        format!("0.{}{}", "0".repeat(s - digits.len()), digits)
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// Case-insensitive, accent-sensitive, trailing-space-insensitive comparison (CI_AS).
pub fn compare_strings_ci(a: &str, b: &str) -> Ordering {
    let a = a.trim_end_matches(' ');
    let b = b.trim_end_matches(' ');
    if a.is_ascii() && b.is_ascii() {
        let (x, y) = (a.as_bytes(), b.as_bytes());
        for (p, q) in x.iter().zip(y.iter()) {
            let (p, q) = (p.to_ascii_lowercase(), q.to_ascii_lowercase());
            if p != q {
                return p.cmp(&q);
            }
        }
        return x.len().cmp(&y.len());
    }
    let mut ai = a.chars().flat_map(|c| c.to_lowercase());
    let mut bi = b.chars().flat_map(|c| c.to_lowercase());
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x != y => return x.cmp(&y),
            _ => {}
        }
    }
}

/// Bytes of a varchar value in its code page (cp1252 for the Latin1 collations).
pub fn varchar_bytes(s: &str) -> Vec<u8> {
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(s);
    bytes.into_owned()
}

pub fn utf16le_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 2);
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------
// Date and time
// ---------------------------------------------------------------------------------------

fn epoch0001() -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date")
}

/// (days since 0001-01-01, 100 ns ticks since midnight, offset minutes) of any date/time value.
pub fn datetime_parts(v: &Value) -> Option<(i32, u64, i16)> {
    Some(match v {
        Value::Date(d) => (*d, 0, 0),
        Value::Time(t) => (DAYS_0001_TO_1900, *t, 0),
        Value::DateTime { days, ticks } => (
            days + DAYS_0001_TO_1900,
            (*ticks as u64 * 100_000 + 1) / 3,
            0,
        ),
        Value::SmallDateTime { days, minutes } => (
            *days as i32 + DAYS_0001_TO_1900,
            *minutes as u64 * 600_000_000,
            0,
        ),
        Value::DateTime2 { days, ticks } => (*days, *ticks, 0),
        Value::DateTimeOffset {
            days,
            ticks,
            offset_minutes,
        } => {
            // Stored as UTC; local = UTC + offset.
            let total = *days as i64 * TICKS_PER_DAY as i64
                + *ticks as i64
                + *offset_minutes as i64 * 600_000_000;
            (
                total.div_euclid(TICKS_PER_DAY as i64) as i32,
                total.rem_euclid(TICKS_PER_DAY as i64) as u64,
                *offset_minutes,
            )
        }
        _ => return None,
    })
}

/// UTC instant in ticks since 0001-01-01 (for comparing datetimeoffset values).
fn utc_ticks(v: &Value) -> Option<i128> {
    match v {
        Value::DateTimeOffset { days, ticks, .. } => {
            Some(*days as i128 * TICKS_PER_DAY as i128 + *ticks as i128)
        }
        other => {
            datetime_parts(other).map(|(d, t, _)| d as i128 * TICKS_PER_DAY as i128 + t as i128)
        }
    }
}

pub fn naive_from_parts(days: i32, ticks: u64) -> NaiveDateTime {
    let date = epoch0001()
        .checked_add_signed(chrono::Duration::days(days.clamp(0, 3_652_058) as i64))
        .unwrap_or_else(epoch0001);
    let secs = (ticks / 10_000_000) as u32;
    let nanos = ((ticks % 10_000_000) * 100) as u32;
    date.and_time(NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos).unwrap_or_default())
}

pub fn parts_from_naive(dt: &NaiveDateTime) -> (i32, u64) {
    let days = (dt.date() - epoch0001()).num_days() as i32;
    let t = dt.time();
    let ticks = t.num_seconds_from_midnight() as u64 * 10_000_000
        + (t.nanosecond() as u64 % 1_000_000_000) / 100;
    (days, ticks)
}

fn round_ticks(ticks: u64, scale: u8) -> u64 {
    let unit = 10u64.pow(7 - scale as u32);
    (ticks + unit / 2) / unit * unit
}

/// Builds a value of a date/time type from local parts (rounding to the type's precision).
pub fn datetime_from_parts(
    days: i32,
    ticks: u64,
    offset: i16,
    to: &SqlType,
) -> Result<Value, SqlError> {
    let normalize = |days: i32, ticks: u64| -> (i32, u64) {
        if ticks >= TICKS_PER_DAY {
            (days + 1, ticks - TICKS_PER_DAY)
        } else {
            (days, ticks)
        }
    };
    Ok(match to {
        SqlType::Date => Value::Date(days),
        SqlType::Time { scale } => Value::Time(round_ticks(ticks, *scale) % TICKS_PER_DAY),
        SqlType::DateTime2 { scale } => {
            let (d, t) = normalize(days, round_ticks(ticks, *scale));
            Value::DateTime2 { days: d, ticks: t }
        }
        SqlType::DateTimeOffset { scale } => {
            let (d, t) = normalize(days, round_ticks(ticks, *scale));
            let total = d as i64 * TICKS_PER_DAY as i64 + t as i64 - offset as i64 * 600_000_000;
            Value::DateTimeOffset {
                days: total.div_euclid(TICKS_PER_DAY as i64) as i32,
                ticks: total.rem_euclid(TICKS_PER_DAY as i64) as u64,
                offset_minutes: offset,
            }
        }
        SqlType::DateTime => {
            // 1/300 s ticks, rounded to .000/.003/.007.
            let d1900 = days - DAYS_0001_TO_1900;
            if d1900 < -53690 || days > 3_652_058 {
                return Err(err(242, "The conversion of a varchar data type to a datetime data type resulted in an out-of-range value."));
            }
            let t300 = ((ticks as u128 * 3 + 50_000) / 100_000) as u64;
            let (d, t) = if t300 >= 25_920_000 {
                (d1900 + 1, t300 - 25_920_000)
            } else {
                (d1900, t300)
            };
            Value::DateTime {
                days: d,
                ticks: t as u32,
            }
        }
        SqlType::SmallDateTime => {
            let d1900 = days - DAYS_0001_TO_1900;
            let minutes = (ticks + 300_000_000) / 600_000_000;
            let (d, m) = if minutes >= 1440 {
                (d1900 + 1, minutes - 1440)
            } else {
                (d1900, minutes)
            };
            if !(0..=65535).contains(&d) {
                return Err(err(242, "The conversion of a varchar data type to a smalldatetime data type resulted in an out-of-range value."));
            }
            Value::SmallDateTime {
                days: d as u16,
                minutes: m as u16,
            }
        }
        other => {
            return Err(err(
                529,
                format!(
                    "Explicit conversion to {} is not allowed.",
                    type_name(other)
                ),
            ))
        }
    })
}

/// Parses the date/time string forms SQL Server accepts most commonly (ISO 8601, ODBC
/// canonical, with optional fraction and offset).
pub fn parse_datetime_string(s: &str) -> Option<(i32, u64, i16, bool)> {
    let s = s.trim();
    // (days, ticks, offset, has_offset)
    let (main, offset) = split_offset(s);
    let main = main.trim();
    let (date_part, time_part) = if let Some(i) = main.find(['T', ' ']) {
        (main[..i].trim(), Some(main[i + 1..].trim()))
    } else if main.contains(':') {
        ("", Some(main))
    } else {
        (main, None)
    };
    let days = if date_part.is_empty() {
        DAYS_0001_TO_1900
    } else {
        let d = if date_part.len() == 8 && date_part.chars().all(|c| c.is_ascii_digit()) {
            NaiveDate::parse_from_str(date_part, "%Y%m%d").ok()?
        } else {
            NaiveDate::parse_from_str(date_part, "%Y-%m-%d")
                .or_else(|_| NaiveDate::parse_from_str(date_part, "%Y/%m/%d"))
                .or_else(|_| NaiveDate::parse_from_str(date_part, "%m/%d/%Y"))
                .or_else(|_| NaiveDate::parse_from_str(date_part, "%Y.%m.%d"))
                .ok()?
        };
        (d - epoch0001()).num_days() as i32
    };
    let ticks = match time_part {
        None | Some("") => 0,
        Some(t) => {
            let mut it = t.splitn(2, '.');
            let hms = it.next()?;
            let frac = it.next().unwrap_or("");
            let mut parts = hms.split(':');
            let h: u64 = parts.next()?.trim().parse().ok()?;
            let m: u64 = parts.next().unwrap_or("0").trim().parse().ok()?;
            let sec: u64 = parts.next().unwrap_or("0").trim().parse().ok()?;
            if h > 23 || m > 59 || sec > 59 {
                return None;
            }
            let frac_digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
            let mut f = frac_digits.clone();
            f.truncate(7);
            while f.len() < 7 {
                f.push('0');
            }
            let f: u64 = f.parse().ok()?;
            (h * 3600 + m * 60 + sec) * 10_000_000 + f
        }
    };
    Some((days, ticks, offset.unwrap_or(0), offset.is_some()))
}

fn split_offset(s: &str) -> (&str, Option<i16>) {
    if let Some(stripped) = s.strip_suffix('Z') {
        return (stripped, Some(0));
    }
    // +hh:mm / -hh:mm at the end, after a time part.
    if s.len() > 6 {
        let tail = &s[s.len() - 6..];
        let b = tail.as_bytes();
        if (b[0] == b'+' || b[0] == b'-') && b[3] == b':' && s.contains(':') {
            let h: i16 = tail[1..3].parse().ok().unwrap_or(0);
            let m: i16 = tail[4..6].parse().ok().unwrap_or(0);
            let sign = if b[0] == b'-' { -1 } else { 1 };
            return (s[..s.len() - 6].trim_end(), Some(sign * (h * 60 + m)));
        }
    }
    (s, None)
}

/// The fractional-seconds scale of a date/time type.
pub fn time_scale(t: &SqlType) -> Option<u8> {
    match t {
        SqlType::Time { scale }
        | SqlType::DateTime2 { scale }
        | SqlType::DateTimeOffset { scale } => Some(*scale),
        _ => None,
    }
}

/// Formats a date/time value with a CONVERT style (0/100 default, 1, 2, 101, 102, 112, 120,
/// 121, 126, 127). `scale` is the fractional precision of the value's type.
pub fn format_datetime_value(v: &Value, style: i32, scale: Option<u8>) -> Option<String> {
    let (days, ticks, offset) = datetime_parts(v)?;
    let dt = naive_from_parts(days, ticks);
    let scale = scale.unwrap_or(match v {
        Value::DateTime { .. } => 3,
        Value::SmallDateTime { .. } => 0,
        Value::Date(_) => 0,
        _ => 7,
    });
    let frac = |digits: u8| -> String {
        if digits == 0 {
            return String::new();
        }
        let f = ticks % 10_000_000;
        let s = format!("{f:07}");
        format!(".{}", &s[..digits as usize])
    };
    let date_only = matches!(v, Value::Date(_));
    let time_only = matches!(v, Value::Time(_));
    let off = || {
        let sign = if offset < 0 { '-' } else { '+' };
        format!("{}{:02}:{:02}", sign, offset.abs() / 60, offset.abs() % 60)
    };
    let with_offset = matches!(v, Value::DateTimeOffset { .. });
    let text = match style {
        1 => dt.format("%m/%d/%y").to_string(),
        101 => dt.format("%m/%d/%Y").to_string(),
        2 => dt.format("%y.%m.%d").to_string(),
        102 => dt.format("%Y.%m.%d").to_string(),
        112 => dt.format("%Y%m%d").to_string(),
        12 => dt.format("%y%m%d").to_string(),
        108 | 8 => dt.format("%H:%M:%S").to_string(),
        23 => dt.format("%Y-%m-%d").to_string(),
        120 | 20 => {
            if date_only {
                dt.format("%Y-%m-%d").to_string()
            } else if time_only {
                dt.format("%H:%M:%S").to_string()
            } else {
                dt.format("%Y-%m-%d %H:%M:%S").to_string()
            }
        }
        126 | 127 => {
            let f = match v {
                Value::DateTime { .. } => {
                    let ms = ticks / 10_000 % 1000;
                    if ms == 0 {
                        String::new()
                    } else {
                        format!(".{ms:03}")
                    }
                }
                _ => frac(scale),
            };
            if date_only {
                dt.format("%Y-%m-%d").to_string()
            } else if time_only {
                format!("{}{}", dt.format("%H:%M:%S"), f)
            } else {
                format!(
                    "{}{}{}",
                    dt.format("%Y-%m-%dT%H:%M:%S"),
                    f,
                    if with_offset { off() } else { String::new() }
                )
            }
        }
        // 121 (ODBC canonical with fraction) is also the default for date/time2/datetime2/
        // datetimeoffset; datetime's default style 0 is "mon dd yyyy hh:miAM".
        0 | 100 if matches!(v, Value::DateTime { .. } | Value::SmallDateTime { .. }) => {
            let h = dt.hour();
            let (h12, ampm) = if h == 0 {
                (12, "AM")
            } else if h < 12 {
                (h, "AM")
            } else if h == 12 {
                (12, "PM")
            } else {
                (h - 12, "PM")
            };
            format!(
                "{} {:>2} {} {:>2}:{:02}{}",
                dt.format("%b"),
                dt.day(),
                dt.year(),
                h12,
                dt.minute(),
                ampm
            )
        }
        _ => {
            if date_only {
                dt.format("%Y-%m-%d").to_string()
            } else if time_only {
                format!("{}{}", dt.format("%H:%M:%S"), frac(scale))
            } else {
                let base = format!("{}{}", dt.format("%Y-%m-%d %H:%M:%S"), frac(scale));
                if with_offset {
                    format!("{} {}", base, off())
                } else {
                    base
                }
            }
        }
    };
    Some(text)
}

// ---------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------

/// A numeric value in a common form for arithmetic and comparison.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    Int(i128),
    /// Unscaled, scale.
    Dec(i128, u8),
    Float(f64),
}

pub fn to_num(v: &Value) -> Option<Num> {
    Some(match v {
        Value::Bit(b) => Num::Int(*b as i128),
        Value::TinyInt(x) => Num::Int(*x as i128),
        Value::SmallInt(x) => Num::Int(*x as i128),
        Value::Int(x) => Num::Int(*x as i128),
        Value::BigInt(x) => Num::Int(*x as i128),
        Value::Decimal(m, s) => Num::Dec(*m, *s),
        Value::Money(m) => Num::Dec(*m as i128, 4),
        Value::SmallMoney(m) => Num::Dec(*m as i128, 4),
        Value::Real(f) => Num::Float(*f as f64),
        Value::Float(f) => Num::Float(*f),
        _ => return None,
    })
}

pub fn num_to_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Dec(m, s) => m as f64 / 10f64.powi(s as i32),
        Num::Float(f) => f,
    }
}

fn pow10(n: u32) -> i128 {
    10i128.pow(n)
}

/// Rescales an unscaled decimal, rounding half away from zero when reducing the scale.
pub fn rescale(m: i128, from: u8, to: u8) -> Option<i128> {
    if to >= from {
        m.checked_mul(pow10((to - from) as u32))
    } else {
        let d = pow10((from - to) as u32);
        let q = m / d;
        let r = m % d;
        Some(if r.abs() * 2 >= d { q + m.signum() } else { q })
    }
}

fn num_to_dec(n: Num, scale: u8) -> Option<i128> {
    match n {
        Num::Int(i) => i.checked_mul(pow10(scale as u32)),
        Num::Dec(m, s) => rescale(m, s, scale),
        Num::Float(f) => {
            let x = (f * 10f64.powi(scale as i32)).round();
            if x.abs() >= 1e38 || x.is_nan() {
                None
            } else {
                Some(x as i128)
            }
        }
    }
}

pub fn compare_nums(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(_), _) | (_, Num::Float(_)) => num_to_f64(a)
            .partial_cmp(&num_to_f64(b))
            .unwrap_or(Ordering::Equal),
        _ => {
            let (ma, sa) = match a {
                Num::Int(i) => (i, 0),
                Num::Dec(m, s) => (m, s),
                Num::Float(_) => unreachable!("handled above"),
            };
            let (mb, sb) = match b {
                Num::Int(i) => (i, 0),
                Num::Dec(m, s) => (m, s),
                Num::Float(_) => unreachable!("handled above"),
            };
            let s = sa.max(sb);
            match (rescale(ma, sa, s), rescale(mb, sb, s)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => num_to_f64(a)
                    .partial_cmp(&num_to_f64(b))
                    .unwrap_or(Ordering::Equal),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------

/// SQL comparison of two non-NULL values; `None` when either is NULL. Values of different
/// families are converted as SQL Server would (string vs number: the string converts).
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if a.is_null_value() || b.is_null_value() {
        return None;
    }
    Some(compare_non_null(a, b))
}

/// Total order used for keys, sorting and grouping: NULL first, then SQL order.
pub fn compare_total(a: &Value, b: &Value) -> Ordering {
    match (a.is_null_value(), b.is_null_value()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => compare_non_null(a, b),
    }
}

fn compare_non_null(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => compare_strings_ci(x, y),
        (Value::Binary(x), Value::Binary(y)) => x.as_ref().cmp(y.as_ref()),
        (Value::Guid(x), Value::Guid(y)) => guid_order_key(x).cmp(&guid_order_key(y)),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::BigInt(x), Value::BigInt(y)) => x.cmp(y),
        _ => {
            if let (Some(x), Some(y)) = (to_num(a), to_num(b)) {
                return compare_nums(x, y);
            }
            if let (Some(x), Some(y)) = (utc_ticks(a), utc_ticks(b)) {
                return x.cmp(&y);
            }
            // Mixed families: string against number / date converts the string.
            match (a, b) {
                (Value::String(s), other) | (other, Value::String(s)) => {
                    let flipped = matches!(b, Value::String(_));
                    let target = natural_type(other);
                    let conv =
                        convert(&Value::String(s.clone()), &target, 0).unwrap_or(Value::Null);
                    let o = if conv.is_null_value() {
                        Ordering::Less
                    } else {
                        compare_non_null(&conv, other)
                    };
                    if flipped {
                        o.reverse()
                    } else {
                        o
                    }
                }
                (Value::Binary(x), Value::Guid(g)) => x.as_ref().cmp(&guid_wire_bytes(g)[..]),
                (Value::Guid(g), Value::Binary(x)) => guid_wire_bytes(g)[..].cmp(x.as_ref()),
                (Value::Binary(x), other) | (other, Value::Binary(x)) => {
                    let flipped = matches!(b, Value::Binary(_));
                    let n = to_num(other).map(|n| num_to_f64(n) as i128).unwrap_or(0);
                    let mut v: i128 = 0;
                    for byte in x.iter().take(16) {
                        v = (v << 8) | *byte as i128;
                    }
                    let o = v.cmp(&n);
                    if flipped {
                        o.reverse()
                    } else {
                        o
                    }
                }
                _ => Ordering::Equal,
            }
        }
    }
}

/// uniqueidentifier sort order: SQL Server compares bytes 10..16 first, then 8..10, 6..8,
/// 4..6, 0..4 (of the display order).
fn guid_order_key(g: &[u8; 16]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0..6].copy_from_slice(&g[10..16]);
    k[6..8].copy_from_slice(&g[8..10]);
    k[8..10].copy_from_slice(&g[6..8]);
    k[10..12].copy_from_slice(&g[4..6]);
    k[12..16].copy_from_slice(&g[0..4]);
    k
}

/// The bytes SQL Server stores for a uniqueidentifier (Data1..3 little-endian).
pub fn guid_wire_bytes(g: &[u8; 16]) -> [u8; 16] {
    let mut b = *g;
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// The type a value would have on its own (used when a value's declared type is unknown).
pub fn natural_type(v: &Value) -> SqlType {
    match v {
        Value::Null => SqlType::Null,
        Value::Bit(_) => SqlType::Bit,
        Value::TinyInt(_) => SqlType::TinyInt,
        Value::SmallInt(_) => SqlType::SmallInt,
        Value::Int(_) => SqlType::Int,
        Value::BigInt(_) => SqlType::BigInt,
        Value::Real(_) => SqlType::Real,
        Value::Float(_) => SqlType::Float,
        Value::Decimal(m, s) => {
            let digits = m.unsigned_abs().to_string().len() as u8;
            decimal(digits.max(*s + 1).clamp(1, 38), *s)
        }
        Value::Money(_) => SqlType::Money,
        Value::SmallMoney(_) => SqlType::SmallMoney,
        Value::Date(_) => SqlType::Date,
        Value::Time(_) => SqlType::Time { scale: 7 },
        Value::DateTime { .. } => SqlType::DateTime,
        Value::SmallDateTime { .. } => SqlType::SmallDateTime,
        Value::DateTime2 { .. } => SqlType::DateTime2 { scale: 7 },
        Value::DateTimeOffset { .. } => SqlType::DateTimeOffset { scale: 7 },
        Value::String(s) => {
            let n = s.encode_utf16().count().max(1);
            if n <= 4000 {
                nvarchar(Some(n as u16))
            } else {
                nvarchar(None)
            }
        }
        Value::Binary(b) => {
            if b.len() <= 8000 {
                SqlType::VarBinary {
                    len: Some(b.len().max(1) as u16),
                }
            } else {
                SqlType::VarBinary { len: None }
            }
        }
        Value::Guid(_) => SqlType::UniqueIdentifier,
    }
}

pub trait ValueExt {
    fn is_null_value(&self) -> bool;
}
impl ValueExt for Value {
    fn is_null_value(&self) -> bool {
        matches!(self, Value::Null)
    }
}

// ---------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------

/// Converts `v` to `to` as CAST/CONVERT (and implicit conversion on assignment) do. String
/// truncation is *not* an error here (CAST truncates silently); assignment to a column checks
/// lengths separately (`check_fits`).
pub fn convert(v: &Value, to: &SqlType, style: i32) -> Result<Value, SqlError> {
    convert_ex(v, to, style, None)
}

/// `convert` knowing the source type's fractional-seconds scale (date/time → string output
/// shows exactly that many digits).
pub fn convert_ex(
    v: &Value,
    to: &SqlType,
    style: i32,
    src_scale: Option<u8>,
) -> Result<Value, SqlError> {
    if v.is_null_value() {
        return Ok(Value::Null);
    }
    match to {
        SqlType::Null => Ok(v.clone()),
        SqlType::Bit => match v {
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bit(true)),
                "false" => Ok(Value::Bit(false)),
                t => t
                    .parse::<f64>()
                    .map(|x| Value::Bit(x != 0.0))
                    .map_err(|_| conversion_failed(v, to)),
            },
            _ => to_num(v)
                .map(|n| Value::Bit(compare_nums(n, Num::Int(0)) != Ordering::Equal))
                .ok_or_else(|| conversion_failed(v, to)),
        },
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            let i: i128 = match v {
                Value::String(s) => {
                    let t = s.trim();
                    if t.is_empty() {
                        0
                    } else {
                        t.parse::<i128>().map_err(|_| conversion_failed(v, to))?
                    }
                }
                Value::Binary(b) => {
                    // Binary → int takes the rightmost bytes, big-endian.
                    let width = match to {
                        SqlType::TinyInt => 1,
                        SqlType::SmallInt => 2,
                        SqlType::Int => 4,
                        _ => 8,
                    };
                    let mut x: i128 = 0;
                    let start = b.len().saturating_sub(width);
                    for byte in &b[start..] {
                        x = (x << 8) | *byte as i128;
                    }
                    let bits = width * 8;
                    if bits < 128 && x >= 1i128 << (bits - 1) && !matches!(to, SqlType::TinyInt) {
                        x -= 1i128 << bits;
                    }
                    x
                }
                Value::DateTime { days, .. } => *days as i128,
                _ => match to_num(v).ok_or_else(|| conversion_failed(v, to))? {
                    Num::Int(i) => i,
                    // Conversion to int truncates toward zero.
                    Num::Dec(m, s) => m / pow10(s as u32),
                    Num::Float(f) => f.trunc() as i128,
                },
            };
            int_value(i, to)
        }
        SqlType::Decimal {
            precision, scale, ..
        } => {
            let m = match v {
                Value::String(s) => {
                    parse_decimal_str(s.trim(), *scale).ok_or_else(|| conversion_failed(v, to))?
                }
                _ => num_to_dec(to_num(v).ok_or_else(|| conversion_failed(v, to))?, *scale)
                    .ok_or_else(|| overflow(to))?,
            };
            if m.unsigned_abs() >= pow10(*precision as u32) as u128 {
                return Err(overflow(to));
            }
            Ok(Value::Decimal(m, *scale))
        }
        SqlType::Money | SqlType::SmallMoney => {
            let m = match v {
                Value::String(s) => parse_decimal_str(s.trim().trim_start_matches('$'), 4)
                    .ok_or_else(|| conversion_failed(v, to))?,
                _ => num_to_dec(to_num(v).ok_or_else(|| conversion_failed(v, to))?, 4)
                    .ok_or_else(|| overflow(to))?,
            };
            if matches!(to, SqlType::SmallMoney) {
                i32::try_from(m)
                    .map(Value::SmallMoney)
                    .map_err(|_| overflow(to))
            } else {
                i64::try_from(m).map(Value::Money).map_err(|_| overflow(to))
            }
        }
        SqlType::Float | SqlType::Real => {
            let f = match v {
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| conversion_failed(v, to))?,
                Value::DateTime { days, ticks } => *days as f64 + *ticks as f64 / 25_920_000.0,
                _ => num_to_f64(to_num(v).ok_or_else(|| conversion_failed(v, to))?),
            };
            Ok(if matches!(to, SqlType::Real) {
                Value::Real(f as f32)
            } else {
                Value::Float(f)
            })
        }
        SqlType::Date
        | SqlType::Time { .. }
        | SqlType::DateTime
        | SqlType::SmallDateTime
        | SqlType::DateTime2 { .. }
        | SqlType::DateTimeOffset { .. } => convert_to_datetime(v, to),
        SqlType::Char { .. }
        | SqlType::VarChar { .. }
        | SqlType::NChar { .. }
        | SqlType::NVarChar { .. }
        | SqlType::Text { .. }
        | SqlType::NText { .. }
        | SqlType::Xml => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Binary(b) if style == 1 || style == 2 => {
                    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
                    Arc::from(if style == 1 { format!("0x{hex}") } else { hex })
                }
                Value::Binary(b) => {
                    // Binary → varchar reinterprets the bytes in the code page (style 0).
                    if is_unicode_type(to) {
                        let units: Vec<u16> = b
                            .chunks(2)
                            .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                            .collect();
                        Arc::from(String::from_utf16_lossy(&units))
                    } else {
                        let (text, _, _) = encoding_rs::WINDOWS_1252.decode(b);
                        Arc::from(text.into_owned())
                    }
                }
                Value::Float(f) if style == 0 => Arc::from(format_float_style0(*f)),
                Value::Real(f) if style == 0 => Arc::from(format_float_style0(*f as f64)),
                other if datetime_parts(other).is_some() => {
                    Arc::from(format_datetime_value(other, style, src_scale).unwrap_or_default())
                }
                other => Arc::from(to_display_string(other)),
            };
            let s = if !is_unicode_type(to) && !s.is_ascii() {
                // Characters outside the code page become '?'.
                let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&s);
                let (back, _, _) = encoding_rs::WINDOWS_1252.decode(&bytes);
                Arc::from(back.into_owned())
            } else {
                s
            };
            Ok(Value::String(truncate_string(s, to)))
        }
        SqlType::Binary { .. }
        | SqlType::VarBinary { .. }
        | SqlType::Image
        | SqlType::RowVersion => {
            let bytes: Vec<u8> = match v {
                Value::Binary(b) => b.to_vec(),
                Value::String(s) if style == 1 || style == 2 => {
                    let t = s.trim();
                    let hex = if style == 1 {
                        t.strip_prefix("0x")
                            .or_else(|| t.strip_prefix("0X"))
                            .ok_or_else(|| conversion_failed(v, to))?
                    } else {
                        t
                    };
                    parse_hex(hex).ok_or_else(|| conversion_failed(v, to))?
                }
                Value::String(s) => {
                    if matches!(to, SqlType::Binary { .. } | SqlType::VarBinary { .. })
                        && s.is_ascii()
                    {
                        s.as_bytes().to_vec()
                    } else {
                        varchar_bytes(s)
                    }
                }
                Value::Guid(g) => guid_wire_bytes(g).to_vec(),
                Value::Int(i) => i.to_be_bytes().to_vec(),
                Value::BigInt(i) => i.to_be_bytes().to_vec(),
                Value::SmallInt(i) => i.to_be_bytes().to_vec(),
                Value::TinyInt(i) => vec![*i],
                Value::Bit(b) => vec![*b as u8],
                Value::Decimal(m, s) => {
                    // SQL Server's internal decimal bytes: precision, scale, sign, LE magnitude.
                    let mut out = vec![38u8, *s, if *m < 0 { 0 } else { 1 }];
                    out.extend_from_slice(&m.unsigned_abs().to_le_bytes());
                    out
                }
                Value::Money(m) => m.to_be_bytes().to_vec(),
                other => return Err(conversion_failed(other, to)),
            };
            Ok(Value::Binary(fit_binary(bytes, to)))
        }
        SqlType::UniqueIdentifier => match v {
            Value::Guid(_) => Ok(v.clone()),
            Value::String(s) => {
                let t = s.trim().trim_start_matches('{').trim_end_matches('}');
                uuid::Uuid::parse_str(t)
                    .map(|u| Value::Guid(*u.as_bytes()))
                    .map_err(|_| conversion_failed(v, to))
            }
            Value::Binary(b) if b.len() >= 16 => {
                let mut g = [0u8; 16];
                g.copy_from_slice(&b[..16]);
                Ok(Value::Guid(guid_wire_bytes(&g)))
            }
            _ => Err(conversion_failed(v, to)),
        },
        SqlType::SqlVariant => Ok(v.clone()),
        SqlType::HierarchyId | SqlType::Geometry | SqlType::Geography => match v {
            Value::Binary(_) => Ok(v.clone()),
            _ => Err(conversion_failed(v, to)),
        },
    }
}

fn format_float_style0(f: f64) -> String {
    // Style 0: at most 6 significant digits, scientific when needed.
    if f == 0.0 {
        return "0".into();
    }
    let abs = f.abs();
    if (1e-4..1e6).contains(&abs) {
        let s = format!("{:.*}", (5 - abs.log10().floor() as i32).max(0) as usize, f);
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        s
    } else {
        let s = format!("{f:.5e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        let e: i32 = exp.parse().unwrap_or(0);
        format!("{}e{}{:03}", mant, if e < 0 { '-' } else { '+' }, e.abs())
    }
}

pub fn parse_hex(h: &str) -> Option<Vec<u8>> {
    let h = if h.len() % 2 == 1 {
        format!("0{h}")
    } else {
        h.to_string()
    };
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

fn parse_decimal_str(s: &str, scale: u8) -> Option<i128> {
    if s.is_empty() {
        return None;
    }
    if s.contains(['e', 'E']) {
        let f: f64 = s.parse().ok()?;
        return num_to_dec(Num::Float(f), scale);
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (ip, fp) = body.split_once('.').unwrap_or((body, ""));
    if !ip.chars().all(|c| c.is_ascii_digit())
        || !fp.chars().all(|c| c.is_ascii_digit())
        || (ip.is_empty() && fp.is_empty())
    {
        return None;
    }
    let digits = format!("{ip}{fp}");
    let m: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let m = rescale(m, fp.len() as u8, scale)?;
    Some(if neg { -m } else { m })
}

/// Parses a numeric literal's text into a value and type as SQL Server types literals:
/// integers in int range → int, larger integers and decimal points → numeric(p,s),
/// exponent → float.
pub fn numeric_literal(text: &str) -> Result<(Value, SqlType), SqlError> {
    if text.contains(['e', 'E']) {
        let f: f64 = text
            .parse()
            .map_err(|_| err(102, format!("Incorrect syntax near '{text}'.")))?;
        return Ok((Value::Float(f), SqlType::Float));
    }
    if !text.contains('.') {
        if let Ok(i) = text.parse::<i64>() {
            if i >= i32::MIN as i64 && i <= i32::MAX as i64 {
                return Ok((Value::Int(i as i32), SqlType::Int));
            }
        }
    }
    let (ip, fp) = text.split_once('.').unwrap_or((text, ""));
    let ip_digits = ip.trim_start_matches('0').len();
    let s = fp.len() as u8;
    let p = (ip_digits as u8 + s).max(1).max(s);
    if p > 38 {
        return Err(err(1007, format!("The number '{text}' is out of the range for numeric representation (maximum precision 38).")));
    }
    let m = parse_decimal_str(text, s)
        .ok_or_else(|| err(102, format!("Incorrect syntax near '{text}'.")))?;
    Ok((Value::Decimal(m, s), decimal(p, s)))
}

fn int_value(i: i128, to: &SqlType) -> Result<Value, SqlError> {
    Ok(match to {
        SqlType::TinyInt => Value::TinyInt(u8::try_from(i).map_err(|_| overflow(to))?),
        SqlType::SmallInt => Value::SmallInt(i16::try_from(i).map_err(|_| overflow(to))?),
        SqlType::Int => Value::Int(i32::try_from(i).map_err(|_| overflow(to))?),
        _ => Value::BigInt(i64::try_from(i).map_err(|_| overflow(to))?),
    })
}

fn truncate_string(s: Arc<str>, to: &SqlType) -> Arc<str> {
    let limit = match to {
        SqlType::Char { len, .. } => Some((*len as usize, true, false)),
        SqlType::VarChar { len: Some(l), .. } => Some((*l as usize, false, false)),
        SqlType::NChar { len, .. } => Some((*len as usize, true, true)),
        SqlType::NVarChar { len: Some(l), .. } => Some((*l as usize, false, true)),
        _ => None,
    };
    let Some((n, pad, unicode)) = limit else {
        return s;
    };
    let count = if unicode {
        s.encode_utf16().count()
    } else {
        varchar_len_bytes(&s)
    };
    if count > n {
        let mut out = String::new();
        let mut used = 0;
        for c in s.chars() {
            let w = if unicode { c.len_utf16() } else { 1 };
            if used + w > n {
                break;
            }
            used += w;
            out.push(c);
        }
        Arc::from(out)
    } else if pad && count < n {
        let mut out = s.to_string();
        out.extend(std::iter::repeat_n(' ', n - count));
        Arc::from(out)
    } else {
        s
    }
}

fn varchar_len_bytes(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

fn fit_binary(mut bytes: Vec<u8>, to: &SqlType) -> Arc<[u8]> {
    match to {
        SqlType::Binary { len } => {
            bytes.resize(*len as usize, 0);
        }
        SqlType::VarBinary { len: Some(l) } => bytes.truncate(*l as usize),
        SqlType::RowVersion => bytes.resize(8, 0),
        _ => {}
    }
    Arc::from(bytes)
}

fn convert_to_datetime(v: &Value, to: &SqlType) -> Result<Value, SqlError> {
    let (days, ticks, offset) = match v {
        Value::String(s) => {
            let (d, t, o, has_offset) =
                parse_datetime_string(s).ok_or_else(|| conversion_failed(v, to))?;
            if matches!(to, SqlType::DateTimeOffset { .. }) || !has_offset {
                (d, t, o)
            } else {
                // Converting a string with an offset to a type without one drops the offset.
                (d, t, 0)
            }
        }
        Value::Int(_)
        | Value::BigInt(_)
        | Value::SmallInt(_)
        | Value::TinyInt(_)
        | Value::Decimal(..)
        | Value::Float(_)
        | Value::Real(_)
            if matches!(to, SqlType::DateTime | SqlType::SmallDateTime) =>
        {
            let f = num_to_f64(to_num(v).expect("numeric"));
            let days = f.floor();
            let ticks = ((f - days) * TICKS_PER_DAY as f64).round() as u64;
            (days as i32 + DAYS_0001_TO_1900, ticks, 0)
        }
        Value::DateTimeOffset { .. } if !matches!(to, SqlType::DateTimeOffset { .. }) => {
            let (d, t, _) = datetime_parts(v).expect("datetime");
            (d, t, 0)
        }
        Value::Date(_) if matches!(to, SqlType::Time { .. }) => {
            return Err(err(
                529,
                "Explicit conversion from data type date to time is not allowed.",
            ))
        }
        Value::Time(t) if !matches!(to, SqlType::Time { .. }) => (DAYS_0001_TO_1900, *t, 0),
        other => datetime_parts(other).ok_or_else(|| conversion_failed(v, to))?,
    };
    datetime_from_parts(days, ticks, offset, to)
}

/// Checks that a value fits a column on INSERT/UPDATE (string truncation error 2628/8152).
pub fn check_fits(v: &Value, to: &SqlType, table: &str, column: &str) -> Result<(), SqlError> {
    let (len, unicode) = match (v, to) {
        (
            Value::String(s),
            SqlType::VarChar { len: Some(l), .. } | SqlType::Char { len: l, .. },
        ) => (
            if s.is_ascii() {
                s.len()
            } else {
                varchar_bytes(s).len()
            },
            (*l as usize, false),
        ),
        (
            Value::String(s),
            SqlType::NVarChar { len: Some(l), .. } | SqlType::NChar { len: l, .. },
        ) => (s.encode_utf16().count(), (*l as usize, true)),
        (Value::Binary(b), SqlType::VarBinary { len: Some(l) } | SqlType::Binary { len: l }) => {
            (b.len(), (*l as usize, false))
        }
        _ => return Ok(()),
    };
    let (limit, _) = unicode;
    let effective = match v {
        Value::String(s)
            if matches!(
                to,
                SqlType::Char { .. }
                    | SqlType::NChar { .. }
                    | SqlType::VarChar { .. }
                    | SqlType::NVarChar { .. }
            ) =>
        {
            // Trailing spaces beyond the limit are trimmed silently.
            let trimmed = s.trim_end_matches(' ');
            if unicode.1 {
                trimmed.encode_utf16().count()
            } else {
                trimmed.len()
            }
        }
        _ => len,
    };
    if effective > limit {
        let shown: String = to_display_string(v).chars().take(limit).collect();
        return Err(SqlError::new(
            2628,
            16,
            1,
            format!("String or binary data would be truncated in table '{table}', column '{column}'. Truncated value: '{shown}'."),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Result types of expressions
// ---------------------------------------------------------------------------------------

/// Data type precedence (higher wins in implicit conversion).
pub fn precedence(t: &SqlType) -> u8 {
    match t {
        SqlType::SqlVariant => 27,
        SqlType::Xml => 26,
        SqlType::DateTimeOffset { .. } => 25,
        SqlType::DateTime2 { .. } => 24,
        SqlType::DateTime => 23,
        SqlType::SmallDateTime => 22,
        SqlType::Date => 21,
        SqlType::Time { .. } => 20,
        SqlType::Float => 19,
        SqlType::Real => 18,
        SqlType::Decimal { .. } => 17,
        SqlType::Money => 16,
        SqlType::SmallMoney => 15,
        SqlType::BigInt => 14,
        SqlType::Int => 13,
        SqlType::SmallInt => 12,
        SqlType::TinyInt => 11,
        SqlType::Bit => 10,
        SqlType::NText { .. } => 9,
        SqlType::Text { .. } => 8,
        SqlType::Image => 7,
        SqlType::RowVersion => 6,
        SqlType::UniqueIdentifier => 5,
        SqlType::NVarChar { .. } => 4,
        SqlType::NChar { .. } => 3,
        SqlType::VarChar { .. } => 2,
        SqlType::Char { .. } => 1,
        SqlType::Binary { .. } | SqlType::VarBinary { .. } => 0,
        SqlType::HierarchyId | SqlType::Geometry | SqlType::Geography => 28,
        SqlType::Null => 0,
    }
}

/// Precision and scale of a type when it takes part in decimal arithmetic.
pub fn decimal_shape(t: &SqlType) -> (u8, u8) {
    match t {
        SqlType::Decimal {
            precision, scale, ..
        } => (*precision, *scale),
        SqlType::Bit | SqlType::TinyInt => (3, 0),
        SqlType::SmallInt => (5, 0),
        SqlType::Int | SqlType::Null => (10, 0),
        SqlType::BigInt => (19, 0),
        SqlType::Money => (19, 4),
        SqlType::SmallMoney => (10, 4),
        _ => (38, 0),
    }
}

/// Caps precision at 38 as SQL Server does (keeps at least min(scale, 6) digits of scale).
pub fn cap_decimal(p: u32, s: u32) -> (u8, u8) {
    if p <= 38 {
        return (p as u8, s as u8);
    }
    let integral = p - s;
    let s = if integral >= 38 {
        s.min(6)
    } else {
        (38 - integral).max(s.min(6))
    };
    (38, s as u8)
}

/// The type of the common type of two operands (CASE branches, COALESCE, UNION, compare).
pub fn common_type(a: &SqlType, b: &SqlType) -> SqlType {
    if matches!(a, SqlType::Null) {
        return b.clone();
    }
    if matches!(b, SqlType::Null) {
        return a.clone();
    }
    // Strings of the same family: widest.
    if is_string_type(a) && is_string_type(b) {
        let unicode = is_unicode_type(a) || is_unicode_type(b);
        let la = char_len(a);
        let lb = char_len(b);
        let len = match (la, lb) {
            (Some(x), Some(y)) => Some(x.max(y)),
            _ => None,
        };
        return if unicode {
            nvarchar(len.map(|l| l.min(4000)))
        } else {
            varchar(len)
        };
    }
    if let (SqlType::Decimal { .. }, _) | (_, SqlType::Decimal { .. }) = (a, b) {
        if is_numeric_type(a)
            && is_numeric_type(b)
            && !matches!(a, SqlType::Float | SqlType::Real)
            && !matches!(b, SqlType::Float | SqlType::Real)
        {
            let (p1, s1) = decimal_shape(a);
            let (p2, s2) = decimal_shape(b);
            let s = s1.max(s2) as u32;
            let (p, s) = cap_decimal((p1 - s1).max(p2 - s2) as u32 + s, s);
            return decimal(p, s);
        }
    }
    if (is_binary_type(a) && is_binary_type(b)) && a != b {
        return SqlType::VarBinary {
            len: match (binary_len(a), binary_len(b)) {
                (Some(x), Some(y)) => Some(x.max(y)),
                _ => None,
            },
        };
    }
    if let (SqlType::DateTime2 { scale: x }, SqlType::DateTime2 { scale: y }) = (a, b) {
        return SqlType::DateTime2 {
            scale: (*x).max(*y),
        };
    }
    if precedence(a) >= precedence(b) {
        a.clone()
    } else {
        b.clone()
    }
}

pub fn char_len(t: &SqlType) -> Option<u16> {
    match t {
        SqlType::Char { len, .. } | SqlType::NChar { len, .. } => Some(*len),
        SqlType::VarChar { len, .. } | SqlType::NVarChar { len, .. } => *len,
        _ => None,
    }
}

fn binary_len(t: &SqlType) -> Option<u16> {
    match t {
        SqlType::Binary { len } => Some(*len),
        SqlType::VarBinary { len } => *len,
        SqlType::RowVersion => Some(8),
        _ => None,
    }
}

/// Length of the string form of a type when it is converted to a string implicitly (for
/// concatenation result types).
pub fn string_len_of(t: &SqlType) -> Option<u16> {
    match t {
        SqlType::Char { len, .. } | SqlType::NChar { len, .. } => Some(*len),
        SqlType::VarChar { len, .. } | SqlType::NVarChar { len, .. } => *len,
        SqlType::Int => Some(12),
        SqlType::BigInt => Some(24),
        SqlType::SmallInt => Some(6),
        SqlType::TinyInt => Some(3),
        SqlType::Bit => Some(1),
        SqlType::UniqueIdentifier => Some(36),
        SqlType::Decimal { precision, .. } => Some(*precision as u16 + 2),
        SqlType::Date => Some(10),
        SqlType::DateTime | SqlType::DateTime2 { .. } | SqlType::SmallDateTime => Some(30),
        _ => Some(30),
    }
}

/// Result type of an arithmetic operator.
pub fn arithmetic_type(op: char, a: &SqlType, b: &SqlType) -> Result<SqlType, SqlError> {
    if matches!(a, SqlType::Null) && matches!(b, SqlType::Null) {
        return Ok(SqlType::Int);
    }
    let a = if matches!(a, SqlType::Null) { b } else { a };
    let b = if matches!(b, SqlType::Null) { a } else { b };
    if op == '+'
        && (is_string_type(a) || is_string_type(b))
        && !(is_numeric_type(a) || is_numeric_type(b))
    {
        let unicode = is_unicode_type(a) || is_unicode_type(b);
        let len = match (string_len_of(a), string_len_of(b)) {
            (Some(x), Some(y)) => {
                let sum = x as u32 + y as u32;
                let limit = if unicode { 4000 } else { 8000 };
                if sum > limit {
                    None
                } else {
                    Some(sum as u16)
                }
            }
            _ => None,
        };
        return Ok(if unicode { nvarchar(len) } else { varchar(len) });
    }
    if op == '+' && is_binary_type(a) && is_binary_type(b) {
        return Ok(SqlType::VarBinary {
            len: match (binary_len(a), binary_len(b)) {
                (Some(x), Some(y)) if x as u32 + y as u32 <= 8000 => Some(x + y),
                _ => None,
            },
        });
    }
    if is_datetime_type(a) && (op == '+' || op == '-') {
        return Ok(a.clone());
    }
    // String operands in arithmetic with numbers convert to the number's type.
    let a = if is_string_type(a) { b } else { a };
    let b = if is_string_type(b) { a } else { b };
    if !is_numeric_type(a) || !is_numeric_type(b) {
        return Err(err(
            8117,
            format!(
                "Operand data type {} is invalid for {} operator.",
                base_type_name(if is_numeric_type(a) { b } else { a }),
                op_name(op)
            ),
        ));
    }
    if matches!(a, SqlType::Float) || matches!(b, SqlType::Float) {
        return Ok(SqlType::Float);
    }
    if matches!(a, SqlType::Real) || matches!(b, SqlType::Real) {
        return Ok(SqlType::Real);
    }
    let is_dec = |t: &SqlType| matches!(t, SqlType::Decimal { .. });
    if is_dec(a) || is_dec(b) {
        let (p1, s1) = decimal_shape(a);
        let (p2, s2) = decimal_shape(b);
        let (p1, s1, p2, s2) = (p1 as u32, s1 as u32, p2 as u32, s2 as u32);
        let (p, s) = match op {
            '+' | '-' => {
                let s = s1.max(s2);
                ((p1 - s1).max(p2 - s2) + s + 1, s)
            }
            '*' => (p1 + p2 + 1, s1 + s2),
            '/' => {
                let s = 6u32.max(s1 + p2 + 1);
                (p1 - s1 + s2 + s, s)
            }
            _ => {
                let s = s1.max(s2);
                ((p1 - s1).min(p2 - s2) + s, s)
            }
        };
        let (p, s) = cap_decimal(p, s);
        return Ok(decimal(p, s));
    }
    if matches!(a, SqlType::Money) || matches!(b, SqlType::Money) {
        return Ok(SqlType::Money);
    }
    if matches!(a, SqlType::SmallMoney) || matches!(b, SqlType::SmallMoney) {
        return Ok(SqlType::SmallMoney);
    }
    // Integers: the higher precedence; bit behaves as int? No: bit op bit is int in T-SQL.
    let t = if precedence(a) >= precedence(b) {
        a.clone()
    } else {
        b.clone()
    };
    Ok(if matches!(t, SqlType::Bit) {
        SqlType::Int
    } else {
        t
    })
}

fn op_name(op: char) -> &'static str {
    match op {
        '+' => "add",
        '-' => "subtract",
        '*' => "multiply",
        '/' => "divide",
        '%' => "modulo",
        _ => "this",
    }
}

/// Evaluates an arithmetic operator; `ty` is the result type from `arithmetic_type`.
/// Unary minus. Exact for decimal and money (`0 - x` would widen decimal(38,s) past 38 digits
/// and lose scale); other types go through subtraction from zero of the same type.
pub fn negate(v: &Value, ty: &SqlType) -> Result<Value, SqlError> {
    Ok(match v {
        Value::Null => Value::Null,
        Value::Decimal(m, s) => Value::Decimal(-*m, *s),
        Value::Float(x) => Value::Float(-*x),
        Value::Real(x) => Value::Real(-*x),
        Value::Money(x) => Value::Money(x.checked_neg().ok_or_else(|| {
            err(
                8115,
                "Arithmetic overflow error converting expression to data type money.",
            )
        })?),
        other => {
            let zero = convert(&Value::Int(0), ty, 0).unwrap_or(Value::Int(0));
            arithmetic('-', &zero, other, ty)?
        }
    })
}

pub fn arithmetic(op: char, a: &Value, b: &Value, ty: &SqlType) -> Result<Value, SqlError> {
    if a.is_null_value() || b.is_null_value() {
        return Ok(Value::Null);
    }
    if is_string_type(ty) {
        let mut s = to_display_string(a);
        s.push_str(&to_display_string(b));
        return Ok(Value::String(Arc::from(s)));
    }
    if is_binary_type(ty) {
        let (Value::Binary(x), Value::Binary(y)) = (a, b) else {
            return Err(err(8117, "Operand data type is invalid for add operator."));
        };
        let mut v = x.to_vec();
        v.extend_from_slice(y);
        return Ok(Value::Binary(Arc::from(v)));
    }
    if is_datetime_type(ty) {
        let (days, ticks, off) = datetime_parts(a)
            .ok_or_else(|| err(8117, "Operand data type is invalid for add operator."))?;
        let delta = num_to_f64(to_num(&convert(b, &SqlType::Float, 0)?).unwrap_or(Num::Int(0)));
        let delta_ticks =
            (delta * TICKS_PER_DAY as f64).round() as i64 * if op == '-' { -1 } else { 1 };
        let total = days as i64 * TICKS_PER_DAY as i64 + ticks as i64 + delta_ticks;
        return datetime_from_parts(
            total.div_euclid(TICKS_PER_DAY as i64) as i32,
            total.rem_euclid(TICKS_PER_DAY as i64) as u64,
            off,
            ty,
        );
    }
    let divide_by_zero = || err(8134, "Divide by zero error encountered.");
    let na = to_num(&convert(a, ty, 0).or_else(|_| convert(a, &SqlType::Float, 0))?)
        .unwrap_or(Num::Int(0));
    let nb = to_num(&convert(b, ty, 0).or_else(|_| convert(b, &SqlType::Float, 0))?)
        .unwrap_or(Num::Int(0));
    match ty {
        SqlType::Float | SqlType::Real => {
            let (x, y) = (num_to_f64(na), num_to_f64(nb));
            let r = match op {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                '/' => {
                    if y == 0.0 {
                        return Err(divide_by_zero());
                    }
                    x / y
                }
                _ => {
                    if y == 0.0 {
                        return Err(divide_by_zero());
                    }
                    x % y
                }
            };
            Ok(if matches!(ty, SqlType::Real) {
                Value::Real(r as f32)
            } else {
                Value::Float(r)
            })
        }
        SqlType::Decimal { .. } | SqlType::Money | SqlType::SmallMoney => {
            let (precision, scale) = match ty {
                SqlType::Decimal {
                    precision, scale, ..
                } => (*precision, *scale),
                _ => (19, 4),
            };
            let _ = precision;
            let (ma, sa) = dec_parts(na);
            let (mb, sb) = dec_parts(nb);
            let ovf = || overflow(ty);
            let r: i128 = match op {
                '+' | '-' => {
                    let s = sa.max(sb);
                    let x = rescale(ma, sa, s).ok_or_else(ovf)?;
                    let y = rescale(mb, sb, s).ok_or_else(ovf)?;
                    let r = if op == '+' {
                        x.checked_add(y)
                    } else {
                        x.checked_sub(y)
                    }
                    .ok_or_else(ovf)?;
                    rescale(r, s, scale).ok_or_else(ovf)?
                }
                '*' => {
                    let r = ma.checked_mul(mb).ok_or_else(ovf)?;
                    rescale(r, sa + sb, scale).ok_or_else(ovf)?
                }
                '/' => {
                    if mb == 0 {
                        return Err(divide_by_zero());
                    }
                    // (ma/10^sa) / (mb/10^sb) at scale `scale`: ma * 10^(scale + sb - sa) / mb.
                    let shift = scale as i32 + sb as i32 - sa as i32;
                    let (num, den) = if shift >= 0 {
                        (ma.checked_mul(pow10(shift as u32 + 1)).ok_or_else(ovf)?, mb)
                    } else {
                        (
                            ma,
                            mb.checked_mul(pow10((-shift) as u32))
                                .ok_or_else(ovf)?
                                .checked_mul(1)
                                .ok_or_else(ovf)?,
                        )
                    };
                    if shift >= 0 {
                        let q = num / den;
                        // one extra digit for rounding
                        (q + q.signum() * 5) / 10
                    } else {
                        num / den
                    }
                }
                _ => {
                    if mb == 0 {
                        return Err(divide_by_zero());
                    }
                    let s = sa.max(sb);
                    let x = rescale(ma, sa, s).ok_or_else(ovf)?;
                    let y = rescale(mb, sb, s).ok_or_else(ovf)?;
                    rescale(x % y, s, scale).ok_or_else(ovf)?
                }
            };
            match ty {
                SqlType::Money => i64::try_from(r).map(Value::Money).map_err(|_| ovf()),
                SqlType::SmallMoney => i32::try_from(r).map(Value::SmallMoney).map_err(|_| ovf()),
                _ => {
                    if r.unsigned_abs() >= pow10(precision_of(ty) as u32) as u128 {
                        return Err(err(
                            8115,
                            "Arithmetic overflow error converting expression to data type numeric.",
                        ));
                    }
                    Ok(Value::Decimal(r, scale))
                }
            }
        }
        _ => {
            let (Num::Int(x), Num::Int(y)) = (na, nb) else {
                return Err(err(
                    8117,
                    "Operand data type is invalid for arithmetic operator.",
                ));
            };
            let r = match op {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                '/' => {
                    if y == 0 {
                        return Err(divide_by_zero());
                    }
                    x / y
                }
                _ => {
                    if y == 0 {
                        return Err(divide_by_zero());
                    }
                    x % y
                }
            };
            int_value(r, ty).map_err(|_| {
                err(
                    8115,
                    format!(
                        "Arithmetic overflow error converting expression to data type {}.",
                        base_type_name(ty)
                    ),
                )
            })
        }
    }
}

fn precision_of(t: &SqlType) -> u8 {
    match t {
        SqlType::Decimal { precision, .. } => *precision,
        _ => 38,
    }
}

fn dec_parts(n: Num) -> (i128, u8) {
    match n {
        Num::Int(i) => (i, 0),
        Num::Dec(m, s) => (m, s),
        Num::Float(f) => ((f * 1e6).round() as i128, 6),
    }
}
