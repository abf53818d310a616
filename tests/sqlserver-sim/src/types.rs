//! The value model shared by the wire codec and the engine: SQL Server types and values with
//! their exact storage forms (so that the wire encodings are exact).

use std::sync::Arc;

/// A collation as it travels in TDS (5 bytes). Only the fields the stand-in needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Collation {
    pub lcid: u32,
    /// TDS flag bits: 0x1 ignore case, 0x2 ignore accent, 0x4 ignore width, 0x8 ignore kana,
    /// 0x10 binary, 0x20 binary2.
    pub flags: u8,
    pub version: u8,
    pub sort_id: u8,
}

impl Collation {
    /// SQL_Latin1_General_CP1_CI_AS: `09 04 D0 00 34`.
    pub const SQL_LATIN1_GENERAL_CP1_CI_AS: Collation = Collation {
        lcid: 0x0409,
        flags: 0x0D,
        version: 0,
        sort_id: 0x34,
    };
}

/// A SQL Server data type with its length/precision/scale.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SqlType {
    Bit,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Real,
    Float,
    /// decimal and numeric (they are the same type; `numeric` only changes the name shown).
    Decimal {
        precision: u8,
        scale: u8,
        numeric: bool,
    },
    Money,
    SmallMoney,
    Date,
    Time {
        scale: u8,
    },
    DateTime,
    SmallDateTime,
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    /// Byte length; `None` = (max).
    Char {
        len: u16,
        collation: Collation,
    },
    VarChar {
        len: Option<u16>,
        collation: Collation,
    },
    /// Character length (UTF-16 code units).
    NChar {
        len: u16,
        collation: Collation,
    },
    NVarChar {
        len: Option<u16>,
        collation: Collation,
    },
    Binary {
        len: u16,
    },
    VarBinary {
        len: Option<u16>,
    },
    Text {
        collation: Collation,
    },
    NText {
        collation: Collation,
    },
    Image,
    UniqueIdentifier,
    Xml,
    /// rowversion / timestamp: binary(8) with user type 80.
    RowVersion,
    SqlVariant,
    /// CLR types are stored as their serialized bytes.
    HierarchyId,
    Geometry,
    Geography,
    /// The type of a bare NULL literal.
    Null,
}

/// A value. Each variant holds the exact form SQL Server stores.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bit(bool),
    TinyInt(u8),
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    Real(f32),
    Float(f64),
    /// Unscaled value and scale: 123.45 = Decimal(12345, 2). Precision comes from the type.
    Decimal(i128, u8),
    /// Money and smallmoney: value × 10 000.
    Money(i64),
    SmallMoney(i32),
    /// Days since 0001-01-01.
    Date(i32),
    /// 100 ns ticks since midnight.
    Time(u64),
    /// Days since 1900-01-01 (may be negative down to 1753) and 1/300 s ticks since midnight.
    DateTime {
        days: i32,
        ticks: u32,
    },
    /// Days since 1900-01-01 and minutes since midnight.
    SmallDateTime {
        days: u16,
        minutes: u16,
    },
    /// Days since 0001-01-01 and 100 ns ticks since midnight.
    DateTime2 {
        days: i32,
        ticks: u64,
    },
    /// UTC date and time (as datetime2) plus the offset in minutes.
    DateTimeOffset {
        days: i32,
        ticks: u64,
        offset_minutes: i16,
    },
    /// Character data (char, varchar, nchar, nvarchar, text, ntext, xml). Shared so that
    /// streaming a stored row does not copy its strings.
    String(Arc<str>),
    /// Binary data (binary, varbinary, image, rowversion, CLR types).
    Binary(Arc<[u8]>),
    /// uniqueidentifier in SQL Server's byte order on the wire: Data1 LE, Data2 LE, Data3 LE,
    /// Data4 as is. Stored here in RFC 4122 (display) order.
    Guid([u8; 16]),
}
