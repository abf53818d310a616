//! TYPE_INFO and value encodings in both directions (MS-TDS 2.2.5.4 – 2.2.5.5).
//!
//! Encoding writes straight into the response buffer: no allocation per value except for the
//! (max) types, which go through a reused scratch buffer to be cut into PLP chunks.

use bytes::{BufMut, BytesMut};
use encoding_rs::WINDOWS_1252;

use super::reader::{utf16_to_string, Reader};
use super::WireError;
use crate::types::{Collation, SqlType, Value};

/// UserType of timestamp/rowversion columns in COLMETADATA.
pub const USER_TYPE_TIMESTAMP: u32 = 80;
/// PLP chunk size of (max) values the stand-in sends.
pub const PLP_CHUNK: usize = 8000;
const PLP_NULL: u64 = u64::MAX;
const PLP_UNKNOWN_LEN: u64 = u64::MAX - 1;
/// MaxLen of a sql_variant column (as SQL Server reports it).
const SQL_VARIANT_MAX_LEN: u32 = 8009;

/// Type bytes (MS-TDS 2.2.5.4).
pub mod code {
    pub const NULL: u8 = 0x1F;
    pub const INT1: u8 = 0x30;
    pub const BIT: u8 = 0x32;
    pub const INT2: u8 = 0x34;
    pub const INT4: u8 = 0x38;
    pub const DATETIME4: u8 = 0x3A;
    pub const FLT4: u8 = 0x3B;
    pub const MONEY: u8 = 0x3C;
    pub const DATETIME: u8 = 0x3D;
    pub const FLT8: u8 = 0x3E;
    pub const MONEY4: u8 = 0x7A;
    pub const INT8: u8 = 0x7F;
    pub const GUID: u8 = 0x24;
    pub const INTN: u8 = 0x26;
    pub const DECIMALN: u8 = 0x6A;
    pub const NUMERICN: u8 = 0x6C;
    pub const BITN: u8 = 0x68;
    pub const FLTN: u8 = 0x6D;
    pub const MONEYN: u8 = 0x6E;
    pub const DATETIMN: u8 = 0x6F;
    pub const DATEN: u8 = 0x28;
    pub const TIMEN: u8 = 0x29;
    pub const DATETIME2N: u8 = 0x2A;
    pub const DATETIMEOFFSETN: u8 = 0x2B;
    pub const BIGVARBINARY: u8 = 0xA5;
    pub const BIGVARCHAR: u8 = 0xA7;
    pub const BIGBINARY: u8 = 0xAD;
    pub const BIGCHAR: u8 = 0xAF;
    pub const NVARCHAR: u8 = 0xE7;
    pub const NCHAR: u8 = 0xEF;
    pub const XML: u8 = 0xF1;
    pub const UDT: u8 = 0xF0;
    pub const TEXT: u8 = 0x23;
    pub const IMAGE: u8 = 0x22;
    pub const NTEXT: u8 = 0x63;
    pub const SSVARIANT: u8 = 0x62;
}

/// A value that does not fit the column it is sent in (an engine bug, reported loudly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

fn mismatch(ty: &SqlType, value: &Value) -> EncodeError {
    EncodeError(format!("value {value:?} cannot be sent as {ty:?}"))
}

/// SQL Server sends NOT NULL columns of these types in their fixed-length form and
/// everything else in the nullable ("N") or length-prefixed form.
pub fn is_fixed(ty: &SqlType, nullable: bool) -> bool {
    !nullable
        && matches!(
            ty,
            SqlType::Bit
                | SqlType::TinyInt
                | SqlType::SmallInt
                | SqlType::Int
                | SqlType::BigInt
                | SqlType::Real
                | SqlType::Float
                | SqlType::Money
                | SqlType::SmallMoney
                | SqlType::DateTime
                | SqlType::SmallDateTime
        )
}

/// COLMETADATA UserType of a column type.
pub fn user_type(ty: &SqlType) -> u32 {
    if *ty == SqlType::RowVersion {
        USER_TYPE_TIMESTAMP
    } else {
        0
    }
}

/// Value byte length of decimal(p, s) including the sign byte.
pub fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// Value byte length of time(n) (date and offset parts excluded).
pub fn time_len(scale: u8) -> u8 {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

pub fn write_collation(buf: &mut BytesMut, c: &Collation) {
    let info = (c.lcid & 0xF_FFFF) | ((c.flags as u32) << 20) | (((c.version & 0x0F) as u32) << 28);
    buf.put_u32_le(info);
    buf.put_u8(c.sort_id);
}

fn read_collation(r: &mut Reader) -> Result<Collation, WireError> {
    let info = r.u32()?;
    let sort_id = r.u8()?;
    Ok(Collation {
        lcid: info & 0xF_FFFF,
        flags: ((info >> 20) & 0xFF) as u8,
        version: ((info >> 28) & 0x0F) as u8,
        sort_id,
    })
}

/// B_VARCHAR: u8 character count + UTF-16LE (names longer than 255 units are cut).
pub fn put_b_varchar(buf: &mut BytesMut, s: &str) {
    let at = buf.len();
    buf.put_u8(0);
    let mut n = 0u8;
    for unit in s.encode_utf16() {
        if n == u8::MAX {
            break;
        }
        buf.put_u16_le(unit);
        n += 1;
    }
    buf[at] = n;
}

/// US_VARCHAR: u16 character count + UTF-16LE.
pub fn put_us_varchar(buf: &mut BytesMut, s: &str) {
    let at = buf.len();
    buf.put_u16_le(0);
    let mut n = 0u16;
    for unit in s.encode_utf16() {
        if n == u16::MAX {
            break;
        }
        buf.put_u16_le(unit);
        n += 1;
    }
    buf[at..at + 2].copy_from_slice(&n.to_le_bytes());
}

/// The CLR type names SQL Server reports in UDT_INFO: name, max byte size, CLR class.
fn udt_names(ty: &SqlType) -> Option<(&'static str, u16, &'static str)> {
    match ty {
        SqlType::HierarchyId => Some((
            "hierarchyid",
            892,
            "Microsoft.SqlServer.Types.SqlHierarchyId",
        )),
        SqlType::Geometry => Some(("geometry", 0xFFFF, "Microsoft.SqlServer.Types.SqlGeometry")),
        SqlType::Geography => Some((
            "geography",
            0xFFFF,
            "Microsoft.SqlServer.Types.SqlGeography",
        )),
        _ => None,
    }
}

/// TYPE_INFO of a result column or RETURNVALUE.
pub fn write_type_info(buf: &mut BytesMut, ty: &SqlType, nullable: bool) {
    let fixed = is_fixed(ty, nullable);
    match ty {
        SqlType::Bit if fixed => buf.put_u8(code::BIT),
        SqlType::TinyInt if fixed => buf.put_u8(code::INT1),
        SqlType::SmallInt if fixed => buf.put_u8(code::INT2),
        SqlType::Int if fixed => buf.put_u8(code::INT4),
        SqlType::BigInt if fixed => buf.put_u8(code::INT8),
        SqlType::Real if fixed => buf.put_u8(code::FLT4),
        SqlType::Float if fixed => buf.put_u8(code::FLT8),
        SqlType::Money if fixed => buf.put_u8(code::MONEY),
        SqlType::SmallMoney if fixed => buf.put_u8(code::MONEY4),
        SqlType::DateTime if fixed => buf.put_u8(code::DATETIME),
        SqlType::SmallDateTime if fixed => buf.put_u8(code::DATETIME4),
        SqlType::Bit => buf.put_slice(&[code::BITN, 1]),
        SqlType::TinyInt => buf.put_slice(&[code::INTN, 1]),
        SqlType::SmallInt => buf.put_slice(&[code::INTN, 2]),
        // SQL Server types a bare NULL literal as int.
        SqlType::Int | SqlType::Null => buf.put_slice(&[code::INTN, 4]),
        SqlType::BigInt => buf.put_slice(&[code::INTN, 8]),
        SqlType::Real => buf.put_slice(&[code::FLTN, 4]),
        SqlType::Float => buf.put_slice(&[code::FLTN, 8]),
        SqlType::Money => buf.put_slice(&[code::MONEYN, 8]),
        SqlType::SmallMoney => buf.put_slice(&[code::MONEYN, 4]),
        SqlType::DateTime => buf.put_slice(&[code::DATETIMN, 8]),
        SqlType::SmallDateTime => buf.put_slice(&[code::DATETIMN, 4]),
        SqlType::Decimal {
            precision,
            scale,
            numeric,
        } => {
            let c = if *numeric {
                code::NUMERICN
            } else {
                code::DECIMALN
            };
            buf.put_slice(&[c, decimal_len(*precision), *precision, *scale]);
        }
        SqlType::Date => buf.put_u8(code::DATEN),
        SqlType::Time { scale } => buf.put_slice(&[code::TIMEN, *scale]),
        SqlType::DateTime2 { scale } => buf.put_slice(&[code::DATETIME2N, *scale]),
        SqlType::DateTimeOffset { scale } => buf.put_slice(&[code::DATETIMEOFFSETN, *scale]),
        SqlType::Char { len, collation } => {
            buf.put_u8(code::BIGCHAR);
            buf.put_u16_le(*len);
            write_collation(buf, collation);
        }
        SqlType::VarChar { len, collation } => {
            buf.put_u8(code::BIGVARCHAR);
            buf.put_u16_le(len.unwrap_or(0xFFFF));
            write_collation(buf, collation);
        }
        SqlType::NChar { len, collation } => {
            buf.put_u8(code::NCHAR);
            buf.put_u16_le(len.saturating_mul(2));
            write_collation(buf, collation);
        }
        SqlType::NVarChar { len, collation } => {
            buf.put_u8(code::NVARCHAR);
            buf.put_u16_le(len.map(|n| n.saturating_mul(2)).unwrap_or(0xFFFF));
            write_collation(buf, collation);
        }
        SqlType::Binary { len } => {
            buf.put_u8(code::BIGBINARY);
            buf.put_u16_le(*len);
        }
        SqlType::RowVersion => {
            buf.put_u8(code::BIGBINARY);
            buf.put_u16_le(8);
        }
        SqlType::VarBinary { len } => {
            buf.put_u8(code::BIGVARBINARY);
            buf.put_u16_le(len.unwrap_or(0xFFFF));
        }
        SqlType::Text { collation } => {
            buf.put_u8(code::TEXT);
            buf.put_u32_le(0x7FFF_FFFF);
            write_collation(buf, collation);
        }
        SqlType::NText { collation } => {
            buf.put_u8(code::NTEXT);
            buf.put_u32_le(0x7FFF_FFFE);
            write_collation(buf, collation);
        }
        SqlType::Image => {
            buf.put_u8(code::IMAGE);
            buf.put_u32_le(0x7FFF_FFFF);
        }
        SqlType::UniqueIdentifier => buf.put_slice(&[code::GUID, 16]),
        SqlType::Xml => buf.put_slice(&[code::XML, 0]),
        SqlType::SqlVariant => {
            buf.put_u8(code::SSVARIANT);
            buf.put_u32_le(SQL_VARIANT_MAX_LEN);
        }
        SqlType::HierarchyId | SqlType::Geometry | SqlType::Geography => {
            let (name, max, class) = udt_names(ty).expect("CLR type");
            buf.put_u8(code::UDT);
            buf.put_u16_le(max);
            put_b_varchar(buf, "master");
            put_b_varchar(buf, "sys");
            put_b_varchar(buf, name);
            put_us_varchar(buf, &format!("{class}, Microsoft.SqlServer.Types, Version=11.0.0.0, Culture=neutral, PublicKeyToken=89845dcd8080cc91"));
        }
    }
}

/// Whether the type carries a TableName in COLMETADATA (text, ntext, image).
pub fn has_table_name(ty: &SqlType) -> bool {
    matches!(
        ty,
        SqlType::Text { .. } | SqlType::NText { .. } | SqlType::Image
    )
}

/// How a NULL of this type is written inside a ROW token.
pub fn write_null(buf: &mut BytesMut, ty: &SqlType) {
    match ty {
        SqlType::Char { .. }
        | SqlType::NChar { .. }
        | SqlType::Binary { .. }
        | SqlType::RowVersion => buf.put_u16_le(0xFFFF),
        SqlType::VarChar { len: Some(_), .. }
        | SqlType::NVarChar { len: Some(_), .. }
        | SqlType::VarBinary { len: Some(_) } => buf.put_u16_le(0xFFFF),
        SqlType::VarChar { len: None, .. }
        | SqlType::NVarChar { len: None, .. }
        | SqlType::VarBinary { len: None }
        | SqlType::Xml
        | SqlType::HierarchyId
        | SqlType::Geometry
        | SqlType::Geography => buf.put_u64_le(PLP_NULL),
        SqlType::SqlVariant => buf.put_u32_le(0),
        // Text pointer length 0; every N-type has a zero length byte.
        _ => buf.put_u8(0),
    }
}

/// Integer value of any integer variant (the engine may widen or narrow within range).
fn int_value(value: &Value) -> Option<i64> {
    match value {
        Value::TinyInt(v) => Some(*v as i64),
        Value::SmallInt(v) => Some(*v as i64),
        Value::Int(v) => Some(*v as i64),
        Value::BigInt(v) => Some(*v),
        _ => None,
    }
}

/// Write one non-NULL value (or a NULL with its in-ROW marker) of a column.
pub fn write_value(
    buf: &mut BytesMut,
    ty: &SqlType,
    nullable: bool,
    value: &Value,
    scratch: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if matches!(value, Value::Null) {
        if is_fixed(ty, nullable) {
            return Err(EncodeError(format!(
                "NULL in a NOT NULL column of type {ty:?}"
            )));
        }
        write_null(buf, ty);
        return Ok(());
    }
    let fixed = is_fixed(ty, nullable);
    let prefix = |buf: &mut BytesMut, n: u8| {
        if !fixed {
            buf.put_u8(n)
        }
    };
    match ty {
        SqlType::Bit => {
            let Value::Bit(b) = value else {
                return Err(mismatch(ty, value));
            };
            prefix(buf, 1);
            buf.put_u8(*b as u8);
        }
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            let v = int_value(value).ok_or_else(|| mismatch(ty, value))?;
            let out_of_range = || EncodeError(format!("{v} is out of range for {ty:?}"));
            match ty {
                SqlType::TinyInt => {
                    prefix(buf, 1);
                    buf.put_u8(u8::try_from(v).map_err(|_| out_of_range())?);
                }
                SqlType::SmallInt => {
                    prefix(buf, 2);
                    buf.put_i16_le(i16::try_from(v).map_err(|_| out_of_range())?);
                }
                SqlType::Int => {
                    prefix(buf, 4);
                    buf.put_i32_le(i32::try_from(v).map_err(|_| out_of_range())?);
                }
                _ => {
                    prefix(buf, 8);
                    buf.put_i64_le(v);
                }
            }
        }
        SqlType::Real => {
            let Value::Real(f) = value else {
                return Err(mismatch(ty, value));
            };
            prefix(buf, 4);
            buf.put_f32_le(*f);
        }
        SqlType::Float => {
            let f = match value {
                Value::Float(f) => *f,
                Value::Real(f) => *f as f64,
                _ => return Err(mismatch(ty, value)),
            };
            prefix(buf, 8);
            buf.put_f64_le(f);
        }
        SqlType::Money => {
            let m = match value {
                Value::Money(m) => *m,
                Value::SmallMoney(m) => *m as i64,
                _ => return Err(mismatch(ty, value)),
            };
            prefix(buf, 8);
            buf.put_i32_le((m >> 32) as i32);
            buf.put_u32_le(m as u32);
        }
        SqlType::SmallMoney => {
            let m = match value {
                Value::SmallMoney(m) => *m,
                Value::Money(m) => i32::try_from(*m).map_err(|_| mismatch(ty, value))?,
                _ => return Err(mismatch(ty, value)),
            };
            prefix(buf, 4);
            buf.put_i32_le(m);
        }
        SqlType::DateTime => {
            let Value::DateTime { days, ticks } = value else {
                return Err(mismatch(ty, value));
            };
            prefix(buf, 8);
            buf.put_i32_le(*days);
            buf.put_u32_le(*ticks);
        }
        SqlType::SmallDateTime => {
            let Value::SmallDateTime { days, minutes } = value else {
                return Err(mismatch(ty, value));
            };
            prefix(buf, 4);
            buf.put_u16_le(*days);
            buf.put_u16_le(*minutes);
        }
        SqlType::Decimal {
            precision, scale, ..
        } => {
            let v = match value {
                Value::Decimal(v, s) => {
                    rescale(*v, *s, *scale).ok_or_else(|| mismatch(ty, value))?
                }
                other => {
                    let i = int_value(other).ok_or_else(|| mismatch(ty, value))?;
                    rescale(i as i128, 0, *scale).ok_or_else(|| mismatch(ty, value))?
                }
            };
            let len = decimal_len(*precision);
            buf.put_u8(len);
            put_decimal_body(buf, v, len);
        }
        SqlType::Date => {
            let Value::Date(days) = value else {
                return Err(mismatch(ty, value));
            };
            buf.put_u8(3);
            put_uint(buf, *days as u64, 3);
        }
        SqlType::Time { scale } => {
            let Value::Time(ticks) = value else {
                return Err(mismatch(ty, value));
            };
            let n = time_len(*scale);
            buf.put_u8(n);
            put_uint(buf, ticks_to_increments(*ticks, *scale), n as usize);
        }
        SqlType::DateTime2 { scale } => {
            let Value::DateTime2 { days, ticks } = value else {
                return Err(mismatch(ty, value));
            };
            let n = time_len(*scale);
            buf.put_u8(n + 3);
            put_uint(buf, ticks_to_increments(*ticks, *scale), n as usize);
            put_uint(buf, *days as u64, 3);
        }
        SqlType::DateTimeOffset { scale } => {
            let Value::DateTimeOffset {
                days,
                ticks,
                offset_minutes,
            } = value
            else {
                return Err(mismatch(ty, value));
            };
            let n = time_len(*scale);
            buf.put_u8(n + 5);
            put_uint(buf, ticks_to_increments(*ticks, *scale), n as usize);
            put_uint(buf, *days as u64, 3);
            buf.put_i16_le(*offset_minutes);
        }
        SqlType::Char { len, .. } => {
            let Value::String(s) = value else {
                return Err(mismatch(ty, value));
            };
            let at = buf.len();
            buf.put_u16_le(0);
            let n = put_cp1252(buf, s);
            if n > *len as usize {
                return Err(EncodeError(format!("{n} bytes do not fit char({len})")));
            }
            buf.put_bytes(b' ', *len as usize - n);
            patch_u16(buf, at, *len);
        }
        SqlType::VarChar { len: Some(max), .. } => {
            let Value::String(s) = value else {
                return Err(mismatch(ty, value));
            };
            let at = buf.len();
            buf.put_u16_le(0);
            let n = put_cp1252(buf, s);
            if n > *max as usize {
                return Err(EncodeError(format!("{n} bytes do not fit varchar({max})")));
            }
            patch_u16(buf, at, n as u16);
        }
        SqlType::NChar { len, .. } => {
            let Value::String(s) = value else {
                return Err(mismatch(ty, value));
            };
            let at = buf.len();
            buf.put_u16_le(0);
            let units = put_utf16(buf, s);
            if units > *len as usize {
                return Err(EncodeError(format!(
                    "{units} characters do not fit nchar({len})"
                )));
            }
            for _ in units..*len as usize {
                buf.put_u16_le(b' ' as u16);
            }
            patch_u16(buf, at, len * 2);
        }
        SqlType::NVarChar { len: Some(max), .. } => {
            let Value::String(s) = value else {
                return Err(mismatch(ty, value));
            };
            let at = buf.len();
            buf.put_u16_le(0);
            let units = put_utf16(buf, s);
            if units > *max as usize {
                return Err(EncodeError(format!(
                    "{units} characters do not fit nvarchar({max})"
                )));
            }
            patch_u16(buf, at, (units * 2) as u16);
        }
        SqlType::Binary { len } => {
            let Value::Binary(b) = value else {
                return Err(mismatch(ty, value));
            };
            if b.len() > *len as usize {
                return Err(EncodeError(format!(
                    "{} bytes do not fit binary({len})",
                    b.len()
                )));
            }
            buf.put_u16_le(*len);
            buf.put_slice(b);
            buf.put_bytes(0, *len as usize - b.len());
        }
        SqlType::RowVersion => {
            let Value::Binary(b) = value else {
                return Err(mismatch(ty, value));
            };
            if b.len() != 8 {
                return Err(EncodeError(format!("rowversion of {} bytes", b.len())));
            }
            buf.put_u16_le(8);
            buf.put_slice(b);
        }
        SqlType::VarBinary { len: Some(max) } => {
            let Value::Binary(b) = value else {
                return Err(mismatch(ty, value));
            };
            if b.len() > *max as usize {
                return Err(EncodeError(format!(
                    "{} bytes do not fit varbinary({max})",
                    b.len()
                )));
            }
            buf.put_u16_le(b.len() as u16);
            buf.put_slice(b);
        }
        SqlType::VarChar { len: None, .. } => {
            let Value::String(s) = value else {
                return Err(mismatch(ty, value));
            };
            scratch.clear();
            put_cp1252(scratch, s);
            put_plp(buf, scratch);
        }
        SqlType::NVarChar { len: None, .. } | SqlType::Xml => {
            let Value::String(s) = value else {
                return Err(mismatch(ty, value));
            };
            scratch.clear();
            scratch.reserve(s.len() * 2);
            for unit in s.encode_utf16() {
                scratch.extend_from_slice(&unit.to_le_bytes());
            }
            put_plp(buf, scratch);
        }
        SqlType::VarBinary { len: None }
        | SqlType::HierarchyId
        | SqlType::Geometry
        | SqlType::Geography => {
            let Value::Binary(b) = value else {
                return Err(mismatch(ty, value));
            };
            put_plp(buf, b);
        }
        SqlType::Text { .. } | SqlType::NText { .. } | SqlType::Image => {
            put_text_pointer(buf);
            let at = buf.len();
            buf.put_u32_le(0);
            let n = match (ty, value) {
                (SqlType::Text { .. }, Value::String(s)) => put_cp1252(buf, s),
                (SqlType::NText { .. }, Value::String(s)) => put_utf16(buf, s) * 2,
                (SqlType::Image, Value::Binary(b)) => {
                    buf.put_slice(b);
                    b.len()
                }
                _ => return Err(mismatch(ty, value)),
            };
            buf[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
        }
        SqlType::UniqueIdentifier => {
            let Value::Guid(g) = value else {
                return Err(mismatch(ty, value));
            };
            buf.put_u8(16);
            buf.put_slice(&guid_swap(g));
        }
        SqlType::SqlVariant => put_variant(buf, value)?,
        SqlType::Null => return Err(mismatch(ty, value)),
    }
    Ok(())
}

/// A text pointer (16 bytes) and timestamp (8 bytes); clients only check the length.
fn put_text_pointer(buf: &mut BytesMut) {
    buf.put_u8(16);
    buf.put_bytes(0xAA, 16);
    buf.put_bytes(0, 8);
}

fn patch_u16(buf: &mut BytesMut, at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_uint(buf: &mut BytesMut, v: u64, n: usize) {
    buf.put_slice(&v.to_le_bytes()[..n]);
}

fn put_decimal_body(buf: &mut BytesMut, v: i128, len: u8) {
    buf.put_u8(if v < 0 { 0 } else { 1 });
    buf.put_slice(&v.unsigned_abs().to_le_bytes()[..len as usize - 1]);
}

/// Bring an unscaled decimal to the column's scale (rounding half away from zero when the
/// value has more digits than the column keeps, as SQL Server does on conversion).
pub fn rescale(v: i128, from: u8, to: u8) -> Option<i128> {
    if from == to {
        Some(v)
    } else if to > from {
        v.checked_mul(10i128.checked_pow((to - from) as u32)?)
    } else {
        let factor = 10i128.checked_pow((from - to) as u32)?;
        let half = factor / 2;
        let rounded = if v >= 0 {
            v.checked_add(half)?
        } else {
            v.checked_sub(half)?
        };
        Some(rounded / factor)
    }
}

const POW10: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

fn ticks_to_increments(ticks: u64, scale: u8) -> u64 {
    ticks / POW10[7 - scale.min(7) as usize]
}

fn increments_to_ticks(increments: u64, scale: u8) -> u64 {
    increments * POW10[7 - scale.min(7) as usize]
}

/// SQL Server's byte order: Data1, Data2, Data3 little-endian, Data4 as is.
pub fn guid_swap(g: &[u8; 16]) -> [u8; 16] {
    let mut out = *g;
    out[0..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    out
}

/// UTF-16LE; returns the number of code units written.
fn put_utf16(buf: &mut BytesMut, s: &str) -> usize {
    if s.is_ascii() {
        // Every byte is one UTF-16 unit with a zero high byte: widen in place (no per-unit
        // capacity checks; the loop vectorises).
        let start = buf.len();
        buf.resize(start + s.len() * 2, 0);
        for (unit, byte) in buf[start..].chunks_exact_mut(2).zip(s.bytes()) {
            unit[0] = byte;
        }
        return s.len();
    }
    buf.reserve(s.len() * 2);
    let mut units = 0;
    for unit in s.encode_utf16() {
        buf.put_u16_le(unit);
        units += 1;
    }
    units
}

/// Windows-1252 bytes; returns the byte count. Characters the code page lacks become '?',
/// as SQL Server stores them.
fn put_cp1252<B: BufMut>(buf: &mut B, s: &str) -> usize {
    if s.is_ascii() {
        buf.put_slice(s.as_bytes());
        return s.len();
    }
    let mut written_total = 0;
    let mut encoder = WINDOWS_1252.new_encoder();
    let mut rest = s;
    let mut chunk = [0u8; 256];
    loop {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(rest, &mut chunk, true);
        buf.put_slice(&chunk[..written]);
        written_total += written;
        rest = &rest[read..];
        match result {
            encoding_rs::EncoderResult::InputEmpty => break,
            encoding_rs::EncoderResult::OutputFull => {}
            encoding_rs::EncoderResult::Unmappable(_) => {
                buf.put_u8(b'?');
                written_total += 1;
            }
        }
    }
    written_total
}

/// PLP with the total length known, cut into chunks of `PLP_CHUNK` bytes.
fn put_plp(buf: &mut BytesMut, data: &[u8]) {
    buf.reserve(data.len() + 12 + 4 * (data.len() / PLP_CHUNK + 1));
    buf.put_u64_le(data.len() as u64);
    for chunk in data.chunks(PLP_CHUNK) {
        buf.put_u32_le(chunk.len() as u32);
        buf.put_slice(chunk);
    }
    buf.put_u32_le(0);
}

/// sql_variant: the base type follows from the value's own variant (the value model keeps no
/// separate base type). Strings travel as nvarchar, binaries as varbinary, decimals as
/// numeric(38, s) and the time types with scale 7.
fn put_variant(buf: &mut BytesMut, value: &Value) -> Result<(), EncodeError> {
    let at = buf.len();
    buf.put_u32_le(0);
    let body = buf.len();
    match value {
        Value::Null => {
            buf.truncate(at);
            buf.put_u32_le(0);
            return Ok(());
        }
        Value::Bit(b) => buf.put_slice(&[code::BIT, 0, *b as u8]),
        Value::TinyInt(v) => buf.put_slice(&[code::INT1, 0, *v]),
        Value::SmallInt(v) => {
            buf.put_slice(&[code::INT2, 0]);
            buf.put_i16_le(*v);
        }
        Value::Int(v) => {
            buf.put_slice(&[code::INT4, 0]);
            buf.put_i32_le(*v);
        }
        Value::BigInt(v) => {
            buf.put_slice(&[code::INT8, 0]);
            buf.put_i64_le(*v);
        }
        Value::Real(v) => {
            buf.put_slice(&[code::FLT4, 0]);
            buf.put_f32_le(*v);
        }
        Value::Float(v) => {
            buf.put_slice(&[code::FLT8, 0]);
            buf.put_f64_le(*v);
        }
        Value::Money(m) => {
            buf.put_slice(&[code::MONEY, 0]);
            buf.put_i32_le((*m >> 32) as i32);
            buf.put_u32_le(*m as u32);
        }
        Value::SmallMoney(m) => {
            buf.put_slice(&[code::MONEY4, 0]);
            buf.put_i32_le(*m);
        }
        Value::DateTime { days, ticks } => {
            buf.put_slice(&[code::DATETIME, 0]);
            buf.put_i32_le(*days);
            buf.put_u32_le(*ticks);
        }
        Value::SmallDateTime { days, minutes } => {
            buf.put_slice(&[code::DATETIME4, 0]);
            buf.put_u16_le(*days);
            buf.put_u16_le(*minutes);
        }
        Value::Decimal(v, scale) => {
            buf.put_slice(&[code::NUMERICN, 2, 38, *scale]);
            put_decimal_body(buf, *v, 17);
        }
        Value::Date(days) => {
            buf.put_slice(&[code::DATEN, 0]);
            put_uint(buf, *days as u64, 3);
        }
        Value::Time(ticks) => {
            buf.put_slice(&[code::TIMEN, 1, 7]);
            put_uint(buf, *ticks, 5);
        }
        Value::DateTime2 { days, ticks } => {
            buf.put_slice(&[code::DATETIME2N, 1, 7]);
            put_uint(buf, *ticks, 5);
            put_uint(buf, *days as u64, 3);
        }
        Value::DateTimeOffset {
            days,
            ticks,
            offset_minutes,
        } => {
            buf.put_slice(&[code::DATETIMEOFFSETN, 1, 7]);
            put_uint(buf, *ticks, 5);
            put_uint(buf, *days as u64, 3);
            buf.put_i16_le(*offset_minutes);
        }
        Value::String(s) => {
            buf.put_slice(&[code::NVARCHAR, 7]);
            write_collation(buf, &Collation::SQL_LATIN1_GENERAL_CP1_CI_AS);
            buf.put_u16_le(8000);
            if put_utf16(buf, s) > 4000 {
                return Err(EncodeError(
                    "sql_variant string longer than 4000 characters".into(),
                ));
            }
        }
        Value::Binary(b) => {
            if b.len() > 8000 {
                return Err(EncodeError(
                    "sql_variant binary longer than 8000 bytes".into(),
                ));
            }
            buf.put_slice(&[code::BIGVARBINARY, 2]);
            buf.put_u16_le(8000);
            buf.put_slice(b);
        }
        Value::Guid(g) => {
            buf.put_slice(&[code::GUID, 0]);
            buf.put_slice(&guid_swap(g));
        }
    }
    let len = (buf.len() - body) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Decoding (RPC parameters, bulk-load rows)
// ----------------------------------------------------------------------------------------

/// A TYPE_INFO as the client sent it: the type byte decides the value layout.
#[derive(Debug, Clone, PartialEq)]
pub struct WireType {
    pub code: u8,
    pub ty: SqlType,
    /// Declared length for length-prefixed types; 0xFFFF marks PLP (max).
    pub max_len: u32,
}

/// Read a TYPE_INFO (`user_type` is 80 for timestamp columns of a bulk COLMETADATA).
pub fn read_type_info(r: &mut Reader, user_type: u32) -> Result<WireType, WireError> {
    let c = r.u8()?;
    let fixed = |ty: SqlType| WireType {
        code: c,
        ty,
        max_len: 0,
    };
    let bad_len =
        |len: u8| WireError::invalid("TYPE_INFO", format!("type {c:#04x} with length {len}"));
    let wt = match c {
        code::NULL => fixed(SqlType::Null),
        code::INT1 => fixed(SqlType::TinyInt),
        code::BIT => fixed(SqlType::Bit),
        code::INT2 => fixed(SqlType::SmallInt),
        code::INT4 => fixed(SqlType::Int),
        code::INT8 => fixed(SqlType::BigInt),
        code::DATETIME4 => fixed(SqlType::SmallDateTime),
        code::FLT4 => fixed(SqlType::Real),
        code::MONEY => fixed(SqlType::Money),
        code::DATETIME => fixed(SqlType::DateTime),
        code::FLT8 => fixed(SqlType::Float),
        code::MONEY4 => fixed(SqlType::SmallMoney),
        code::INTN | code::BITN | code::FLTN | code::MONEYN | code::DATETIMN | code::GUID => {
            let len = r.u8()?;
            let ty = match (c, len) {
                (code::INTN, 1) => SqlType::TinyInt,
                (code::INTN, 2) => SqlType::SmallInt,
                (code::INTN, 4) => SqlType::Int,
                (code::INTN, 8) => SqlType::BigInt,
                (code::BITN, 1) => SqlType::Bit,
                (code::FLTN, 4) => SqlType::Real,
                (code::FLTN, 8) => SqlType::Float,
                (code::MONEYN, 4) => SqlType::SmallMoney,
                (code::MONEYN, 8) => SqlType::Money,
                (code::DATETIMN, 4) => SqlType::SmallDateTime,
                (code::DATETIMN, 8) => SqlType::DateTime,
                (code::GUID, 16) => SqlType::UniqueIdentifier,
                _ => return Err(bad_len(len)),
            };
            WireType {
                code: c,
                ty,
                max_len: len as u32,
            }
        }
        code::DECIMALN | code::NUMERICN => {
            let len = r.u8()?;
            let precision = r.u8()?;
            let scale = r.u8()?;
            if !(1..=38).contains(&precision) || scale > precision {
                return Err(WireError::invalid(
                    "TYPE_INFO",
                    format!("decimal({precision}, {scale})"),
                ));
            }
            WireType {
                code: c,
                ty: SqlType::Decimal {
                    precision,
                    scale,
                    numeric: c == code::NUMERICN,
                },
                max_len: len as u32,
            }
        }
        code::DATEN => fixed(SqlType::Date),
        code::TIMEN | code::DATETIME2N | code::DATETIMEOFFSETN => {
            let scale = r.u8()?;
            if scale > 7 {
                return Err(WireError::invalid(
                    "TYPE_INFO",
                    format!("time scale {scale}"),
                ));
            }
            fixed(match c {
                code::TIMEN => SqlType::Time { scale },
                code::DATETIME2N => SqlType::DateTime2 { scale },
                _ => SqlType::DateTimeOffset { scale },
            })
        }
        code::BIGCHAR | code::BIGVARCHAR | code::NCHAR | code::NVARCHAR => {
            let len = r.u16()?;
            let collation = read_collation(r)?;
            let max = (len != 0xFFFF).then_some(len);
            let ty = match c {
                code::BIGCHAR => SqlType::Char { len, collation },
                code::BIGVARCHAR => SqlType::VarChar {
                    len: max,
                    collation,
                },
                code::NCHAR => SqlType::NChar {
                    len: len / 2,
                    collation,
                },
                _ => SqlType::NVarChar {
                    len: max.map(|n| n / 2),
                    collation,
                },
            };
            WireType {
                code: c,
                ty,
                max_len: len as u32,
            }
        }
        code::BIGBINARY | code::BIGVARBINARY => {
            let len = r.u16()?;
            let ty = match c {
                code::BIGBINARY if user_type == USER_TYPE_TIMESTAMP => SqlType::RowVersion,
                code::BIGBINARY => SqlType::Binary { len },
                _ => SqlType::VarBinary {
                    len: (len != 0xFFFF).then_some(len),
                },
            };
            WireType {
                code: c,
                ty,
                max_len: len as u32,
            }
        }
        code::TEXT | code::NTEXT | code::IMAGE => {
            let len = r.u32()?;
            let ty = match c {
                code::TEXT => SqlType::Text {
                    collation: read_collation(r)?,
                },
                code::NTEXT => SqlType::NText {
                    collation: read_collation(r)?,
                },
                _ => SqlType::Image,
            };
            WireType {
                code: c,
                ty,
                max_len: len,
            }
        }
        code::XML => {
            if r.u8()? == 1 {
                r.b_varchar()?;
                r.b_varchar()?;
                r.us_varchar()?;
            }
            WireType {
                code: c,
                ty: SqlType::Xml,
                max_len: 0xFFFF,
            }
        }
        code::SSVARIANT => WireType {
            code: c,
            ty: SqlType::SqlVariant,
            max_len: r.u32()?,
        },
        code::UDT => {
            // RPC form (MS-TDS 2.2.5.5.5.2): database, schema and type name.
            r.b_varchar()?;
            r.b_varchar()?;
            let name = r.b_varchar()?.to_ascii_lowercase();
            let ty = match name.as_str() {
                "hierarchyid" => SqlType::HierarchyId,
                "geometry" => SqlType::Geometry,
                "geography" => SqlType::Geography,
                other => return Err(WireError::Unsupported(format!("CLR type {other}"))),
            };
            WireType {
                code: c,
                ty,
                max_len: 0xFFFF,
            }
        }
        other => return Err(WireError::Unsupported(format!("type byte {other:#04x}"))),
    };
    Ok(wt)
}

fn read_plp(r: &mut Reader) -> Result<Option<Vec<u8>>, WireError> {
    let total = r.u64()?;
    if total == PLP_NULL {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(if total == PLP_UNKNOWN_LEN {
        0
    } else {
        (total as usize).min(r.remaining())
    });
    loop {
        let n = r.u32()? as usize;
        if n == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(r.bytes(n)?);
    }
}

fn cp1252_decode(raw: &[u8]) -> Value {
    Value::String(
        WINDOWS_1252
            .decode_without_bom_handling(raw)
            .0
            .as_ref()
            .into(),
    )
}

fn utf16_value(raw: &[u8]) -> Result<Value, WireError> {
    utf16_to_string(raw)
        .map(|s| Value::String(s.into()))
        .map_err(|e| WireError::invalid("nvarchar value", e))
}

/// Read one value laid out as the client's TYPE_INFO says.
pub fn read_value(r: &mut Reader, wt: &WireType) -> Result<Value, WireError> {
    let value = match wt.code {
        code::NULL => Value::Null,
        code::INT1 => Value::TinyInt(r.u8()?),
        code::BIT => Value::Bit(r.u8()? != 0),
        code::INT2 => Value::SmallInt(r.u16()? as i16),
        code::INT4 => Value::Int(r.u32()? as i32),
        code::INT8 => Value::BigInt(r.u64()? as i64),
        code::FLT4 => Value::Real(f32::from_bits(r.u32()?)),
        code::FLT8 => Value::Float(f64::from_bits(r.u64()?)),
        code::MONEY4 => Value::SmallMoney(r.u32()? as i32),
        code::MONEY => read_money8(r)?,
        code::DATETIME4 => Value::SmallDateTime {
            days: r.u16()?,
            minutes: r.u16()?,
        },
        code::DATETIME => Value::DateTime {
            days: r.u32()? as i32,
            ticks: r.u32()?,
        },
        code::INTN | code::BITN | code::FLTN | code::MONEYN | code::DATETIMN | code::GUID => {
            let len = r.u8()?;
            match (wt.code, len) {
                (_, 0) => Value::Null,
                (code::INTN, 1) => Value::TinyInt(r.u8()?),
                (code::INTN, 2) => Value::SmallInt(r.u16()? as i16),
                (code::INTN, 4) => Value::Int(r.u32()? as i32),
                (code::INTN, 8) => Value::BigInt(r.u64()? as i64),
                (code::BITN, 1) => Value::Bit(r.u8()? != 0),
                (code::FLTN, 4) => Value::Real(f32::from_bits(r.u32()?)),
                (code::FLTN, 8) => Value::Float(f64::from_bits(r.u64()?)),
                (code::MONEYN, 4) => Value::SmallMoney(r.u32()? as i32),
                (code::MONEYN, 8) => read_money8(r)?,
                (code::DATETIMN, 4) => Value::SmallDateTime {
                    days: r.u16()?,
                    minutes: r.u16()?,
                },
                (code::DATETIMN, 8) => Value::DateTime {
                    days: r.u32()? as i32,
                    ticks: r.u32()?,
                },
                (code::GUID, 16) => {
                    let raw: [u8; 16] = r.bytes(16)?.try_into().expect("16 bytes");
                    Value::Guid(guid_swap(&raw))
                }
                (c, len) => {
                    return Err(WireError::invalid(
                        "value",
                        format!("type {c:#04x} with length {len}"),
                    ))
                }
            }
        }
        code::DECIMALN | code::NUMERICN => {
            let len = r.u8()? as usize;
            if len == 0 {
                Value::Null
            } else {
                let SqlType::Decimal { scale, .. } = wt.ty else {
                    unreachable!("decimal code")
                };
                Value::Decimal(read_decimal_body(r, len)?, scale)
            }
        }
        code::DATEN => match r.u8()? {
            0 => Value::Null,
            3 => Value::Date(r.uint(3)? as i32),
            n => return Err(WireError::invalid("date value", format!("length {n}"))),
        },
        code::TIMEN | code::DATETIME2N | code::DATETIMEOFFSETN => {
            let len = r.u8()? as usize;
            if len == 0 {
                Value::Null
            } else {
                let scale = match wt.ty {
                    SqlType::Time { scale }
                    | SqlType::DateTime2 { scale }
                    | SqlType::DateTimeOffset { scale } => scale,
                    _ => unreachable!("time codes"),
                };
                let time_bytes = time_len(scale) as usize;
                let expected = time_bytes
                    + match wt.code {
                        code::TIMEN => 0,
                        code::DATETIME2N => 3,
                        _ => 5,
                    };
                if len != expected {
                    return Err(WireError::invalid(
                        "time value",
                        format!("length {len} for scale {scale}"),
                    ));
                }
                let ticks = increments_to_ticks(r.uint(time_bytes)?, scale);
                match wt.code {
                    code::TIMEN => Value::Time(ticks),
                    code::DATETIME2N => Value::DateTime2 {
                        days: r.uint(3)? as i32,
                        ticks,
                    },
                    _ => Value::DateTimeOffset {
                        days: r.uint(3)? as i32,
                        ticks,
                        offset_minutes: r.u16()? as i16,
                    },
                }
            }
        }
        code::BIGCHAR
        | code::BIGVARCHAR
        | code::NCHAR
        | code::NVARCHAR
        | code::BIGBINARY
        | code::BIGVARBINARY => {
            let raw = if wt.max_len == 0xFFFF {
                read_plp(r)?
            } else {
                match r.u16()? {
                    0xFFFF => None,
                    n => Some(r.bytes(n as usize)?.to_vec()),
                }
            };
            match raw {
                None => Value::Null,
                Some(raw) => match wt.code {
                    code::BIGCHAR | code::BIGVARCHAR => cp1252_decode(&raw),
                    code::NCHAR | code::NVARCHAR => utf16_value(&raw)?,
                    _ => Value::Binary(raw.into()),
                },
            }
        }
        code::TEXT | code::NTEXT | code::IMAGE => {
            let ptr_len = r.u8()? as usize;
            if ptr_len == 0 {
                Value::Null
            } else {
                r.skip(ptr_len + 8)?;
                let n = r.u32()? as usize;
                let raw = r.bytes(n)?;
                match wt.code {
                    code::TEXT => cp1252_decode(raw),
                    code::NTEXT => utf16_value(raw)?,
                    _ => Value::Binary(raw.into()),
                }
            }
        }
        code::XML => match read_plp(r)? {
            None => Value::Null,
            Some(raw) => {
                let raw = raw.strip_prefix(&[0xFF, 0xFE]).unwrap_or(&raw);
                utf16_value(raw)?
            }
        },
        code::UDT => match read_plp(r)? {
            None => Value::Null,
            Some(raw) => Value::Binary(raw.into()),
        },
        code::SSVARIANT => read_variant(r)?,
        other => {
            return Err(WireError::Unsupported(format!(
                "value of type byte {other:#04x}"
            )))
        }
    };
    Ok(value)
}

fn read_money8(r: &mut Reader) -> Result<Value, WireError> {
    let high = r.u32()? as i32 as i64;
    let low = r.u32()? as i64;
    Ok(Value::Money((high << 32) | low))
}

fn read_decimal_body(r: &mut Reader, len: usize) -> Result<i128, WireError> {
    if !(2..=17).contains(&len) {
        return Err(WireError::invalid("decimal value", format!("length {len}")));
    }
    let positive = r.u8()? == 1;
    let mut magnitude = [0u8; 16];
    magnitude[..len - 1].copy_from_slice(r.bytes(len - 1)?);
    let m = u128::from_le_bytes(magnitude);
    let m = i128::try_from(m)
        .map_err(|_| WireError::invalid("decimal value", "magnitude too large"))?;
    Ok(if positive { m } else { -m })
}

fn read_variant(r: &mut Reader) -> Result<Value, WireError> {
    let total = r.u32()? as usize;
    if total == 0 {
        return Ok(Value::Null);
    }
    let base = r.u8()?;
    let props = r.u8()? as usize;
    let data_len = total.checked_sub(2 + props).ok_or_else(|| {
        WireError::invalid(
            "sql_variant",
            format!("length {total} with {props} property bytes"),
        )
    })?;
    let prop_bytes = r.bytes(props)?;
    let mut pr = Reader::new(prop_bytes, "sql_variant properties");
    let data = r.bytes(data_len)?;
    let mut dr = Reader::new(data, "sql_variant value");
    let value = match base {
        code::DECIMALN | code::NUMERICN => {
            pr.u8()?;
            let scale = pr.u8()?;
            Value::Decimal(read_decimal_body(&mut dr, data_len)?, scale)
        }
        code::TIMEN | code::DATETIME2N | code::DATETIMEOFFSETN => {
            let scale = pr.u8()?;
            let n = time_len(scale) as usize;
            let ticks = increments_to_ticks(dr.uint(n)?, scale);
            match base {
                code::TIMEN => Value::Time(ticks),
                code::DATETIME2N => Value::DateTime2 {
                    days: dr.uint(3)? as i32,
                    ticks,
                },
                _ => Value::DateTimeOffset {
                    days: dr.uint(3)? as i32,
                    ticks,
                    offset_minutes: dr.u16()? as i16,
                },
            }
        }
        code::DATEN => Value::Date(dr.uint(3)? as i32),
        code::GUID => Value::Guid(guid_swap(
            &data
                .try_into()
                .map_err(|_| WireError::invalid("sql_variant", "guid length"))?,
        )),
        code::BIGCHAR | code::BIGVARCHAR => cp1252_decode(data),
        code::NCHAR | code::NVARCHAR => utf16_value(data)?,
        code::BIGBINARY | code::BIGVARBINARY => Value::Binary(data.into()),
        fixed_code => {
            let wt = WireType {
                code: fixed_code,
                ty: SqlType::SqlVariant,
                max_len: 0,
            };
            read_value(&mut dr, &wt)?
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATIN1: Collation = Collation::SQL_LATIN1_GENERAL_CP1_CI_AS;

    #[test]
    fn utf16_of_ascii_and_other_text_matches_encode_utf16() {
        for text in [
            "",
            "a",
            "customer name 12",
            "mixed ä ñ 😀 text",
            "\u{7f}\u{80}",
            "x".repeat(5000).as_str(),
        ] {
            let mut buf = BytesMut::from(&b"prefix"[..]);
            let units = put_utf16(&mut buf, text);
            let want: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            assert_eq!(units, text.encode_utf16().count(), "{text:?}");
            assert_eq!(&buf[..6], b"prefix");
            assert_eq!(&buf[6..], &want[..], "{text:?}");
        }
    }

    /// Encode TYPE_INFO + value as the server sends them, decode them as the server reads
    /// client data: the decoder must give back the type and the value (types tiberius never
    /// sends as parameters, such as char, text or sql_variant, are covered here).
    fn round_trip(ty: SqlType, nullable: bool, value: Value) -> (SqlType, Value) {
        let mut buf = BytesMut::new();
        let mut scratch = Vec::new();
        write_type_info(&mut buf, &ty, nullable);
        write_value(&mut buf, &ty, nullable, &value, &mut scratch).expect("encodes");
        let mut r = Reader::new(&buf, "test");
        let wt = read_type_info(&mut r, user_type(&ty)).expect("type info decodes");
        let decoded = read_value(&mut r, &wt).expect("value decodes");
        assert!(r.is_empty(), "{ty:?}: {} bytes left over", r.remaining());
        (wt.ty, decoded)
    }

    #[test]
    fn every_type_decodes_what_it_encodes() {
        let s = |t: &str| Value::String(t.into());
        let b = |v: &[u8]| Value::Binary(v.into());
        let cases = vec![
            (SqlType::Bit, Value::Bit(true)),
            (SqlType::TinyInt, Value::TinyInt(200)),
            (SqlType::SmallInt, Value::SmallInt(-300)),
            (SqlType::Int, Value::Int(-70_000)),
            (SqlType::BigInt, Value::BigInt(i64::MIN)),
            (SqlType::Real, Value::Real(-1.25)),
            (SqlType::Float, Value::Float(1e300)),
            (SqlType::Money, Value::Money(-922_337_203_685_477_580)),
            (SqlType::SmallMoney, Value::SmallMoney(-2_147_483_648)),
            (
                SqlType::DateTime,
                Value::DateTime {
                    days: -53_690,
                    ticks: 25_919_999,
                },
            ),
            (
                SqlType::SmallDateTime,
                Value::SmallDateTime {
                    days: 65_535,
                    minutes: 1439,
                },
            ),
            (
                SqlType::Decimal {
                    precision: 38,
                    scale: 10,
                    numeric: false,
                },
                Value::Decimal(-(10i128.pow(38) - 1), 10),
            ),
            (
                SqlType::Decimal {
                    precision: 5,
                    scale: 2,
                    numeric: true,
                },
                Value::Decimal(12_345, 2),
            ),
            (SqlType::Date, Value::Date(3_652_058)),
            (SqlType::Time { scale: 7 }, Value::Time(863_999_999_999)),
            (SqlType::Time { scale: 2 }, Value::Time(863_999_900_000)),
            (
                SqlType::DateTime2 { scale: 4 },
                Value::DateTime2 {
                    days: 1,
                    ticks: 123_000,
                },
            ),
            (
                SqlType::DateTimeOffset { scale: 7 },
                Value::DateTimeOffset {
                    days: 700_000,
                    ticks: 1,
                    offset_minutes: -840,
                },
            ),
            (
                SqlType::Char {
                    len: 6,
                    collation: LATIN1,
                },
                s("€ñ    "),
            ),
            (
                SqlType::VarChar {
                    len: Some(10),
                    collation: LATIN1,
                },
                s("café"),
            ),
            (
                SqlType::VarChar {
                    len: None,
                    collation: LATIN1,
                },
                s(&"é".repeat(9000)),
            ),
            (
                SqlType::NChar {
                    len: 3,
                    collation: LATIN1,
                },
                s("😀a"),
            ),
            (
                SqlType::NVarChar {
                    len: Some(10),
                    collation: LATIN1,
                },
                s("ŋ"),
            ),
            (
                SqlType::NVarChar {
                    len: None,
                    collation: LATIN1,
                },
                s(&"😀".repeat(5000)),
            ),
            (SqlType::Binary { len: 3 }, b(&[1, 2, 3])),
            (SqlType::VarBinary { len: Some(5) }, b(&[])),
            (SqlType::VarBinary { len: None }, b(&[9; 17_000])),
            (SqlType::Text { collation: LATIN1 }, s("text ü")),
            (SqlType::NText { collation: LATIN1 }, s("ntext 😀")),
            (SqlType::Image, b(&[0, 255])),
            (
                SqlType::UniqueIdentifier,
                Value::Guid([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
            ),
            (SqlType::Xml, s("<x>ü</x>")),
            (SqlType::RowVersion, b(&[0, 0, 0, 0, 0, 0, 0x12, 0x34])),
        ];
        for (ty, value) in cases {
            for nullable in [false, true] {
                assert_eq!(
                    round_trip(ty.clone(), nullable, value.clone()),
                    (ty.clone(), value.clone()),
                    "nullable {nullable}"
                );
            }
            if !is_fixed(&ty, false) || ty == SqlType::RowVersion {
                assert_eq!(
                    round_trip(ty.clone(), true, Value::Null),
                    (ty.clone(), Value::Null),
                    "NULL"
                );
            }
        }
    }

    #[test]
    fn sql_variant_values_keep_their_base_type() {
        let values = vec![
            Value::Null,
            Value::Bit(false),
            Value::TinyInt(1),
            Value::SmallInt(-2),
            Value::Int(3),
            Value::BigInt(-4),
            Value::Real(0.5),
            Value::Float(-0.25),
            Value::Money(123_456),
            Value::SmallMoney(-7),
            Value::DateTime { days: 1, ticks: 2 },
            Value::SmallDateTime {
                days: 3,
                minutes: 4,
            },
            Value::Decimal(-12_345, 3),
            Value::Date(5),
            Value::Time(6),
            Value::DateTime2 { days: 7, ticks: 8 },
            Value::DateTimeOffset {
                days: 9,
                ticks: 10,
                offset_minutes: 60,
            },
            Value::String("variant ü".into()),
            Value::Binary(vec![1u8, 2].into()),
            Value::Guid([7; 16]),
        ];
        for value in values {
            assert_eq!(
                round_trip(SqlType::SqlVariant, true, value.clone()),
                (SqlType::SqlVariant, value)
            );
        }
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let mut buf = BytesMut::new();
        let mut scratch = Vec::new();
        let too_long = Value::String("abcdef".into());
        let refused = [
            (SqlType::Int, false, Value::Null),
            (SqlType::TinyInt, true, Value::Int(256)),
            (SqlType::Int, true, Value::String("1".into())),
            (
                SqlType::VarChar {
                    len: Some(5),
                    collation: LATIN1,
                },
                true,
                too_long.clone(),
            ),
            (
                SqlType::NChar {
                    len: 5,
                    collation: LATIN1,
                },
                true,
                too_long,
            ),
            (
                SqlType::Binary { len: 1 },
                true,
                Value::Binary(vec![1u8, 2].into()),
            ),
            (
                SqlType::Decimal {
                    precision: 38,
                    scale: 38,
                    numeric: false,
                },
                true,
                Value::Decimal(i128::MAX, 0),
            ),
        ];
        for (ty, nullable, value) in refused {
            assert!(
                write_value(&mut buf, &ty, nullable, &value, &mut scratch).is_err(),
                "{ty:?} {value:?}"
            );
        }
    }

    #[test]
    fn unmappable_characters_become_question_marks_in_varchar() {
        let mut buf = BytesMut::new();
        assert_eq!(put_cp1252(&mut buf, "a€😀ŋ"), 4);
        assert_eq!(&buf[..], &[b'a', 0x80, b'?', b'?']);
    }

    #[test]
    fn plp_values_are_cut_into_chunks() {
        let mut buf = BytesMut::new();
        put_plp(&mut buf, &[7u8; PLP_CHUNK * 2 + 1]);
        let mut r = Reader::new(&buf, "plp");
        assert_eq!(r.u64().unwrap(), (PLP_CHUNK * 2 + 1) as u64);
        let mut chunks = Vec::new();
        loop {
            let n = r.u32().unwrap() as usize;
            if n == 0 {
                break;
            }
            r.skip(n).unwrap();
            chunks.push(n);
        }
        assert_eq!(chunks, [PLP_CHUNK, PLP_CHUNK, 1]);
    }
}
