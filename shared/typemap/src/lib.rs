//! SQL Server to PostgreSQL type mapping and exact PostgreSQL binary COPY encoders.
//!
//! Capture and apply both depend on this crate, so each conversion rule exists once:
//! - [`map_column`]: SQL Server column → PostgreSQL type (DDL text, type name/OID, CHECK);
//! - [`sqlvalue`] helpers: SQL Server raw forms (datetime ticks, money, increments, GUID bytes,
//!   UTF-16) → the wire [`Value`](dbsync_proto::v1::Value);
//! - [`encode_value`] with [`copy_header`]/[`begin_row`]/[`copy_trailer`]: binary COPY;
//! - [`render_literal`]: the same values as SQL literals;
//! - [`canonical_bytes`] / [`pg_canonical_sql`]: equal-exactly-when-they-should forms for
//!   verification;
//! - [`translate_expression`]: T-SQL defaults, computed columns, CHECKs, index filters;
//! - [`pg_identifier`], [`shorten_identifier`], [`quote_ident`]: names.
//!
//! Temporal rounding (100 ns → the column's precision, half up, with carry) is defined once in
//! [`temporal`]; text that PostgreSQL cannot store follows [`InvalidTextPolicy`].

pub mod canonical;
mod choices;
pub mod copy;
pub mod digest;
mod error;
pub mod expr;
pub mod ident;
pub mod literal;
pub mod mapping;
pub mod numeric;
pub mod packed;
pub mod schema;
pub mod sqlvalue;
pub mod temporal;
pub mod text;

pub use canonical::{canonical_bytes, canonical_text, pg_canonical_sql, pg_canonical_text_sql};
pub use copy::{begin_row, copy_header, copy_trailer, encode_value};
pub use error::{EncodeError, MappingError, TypemapError, Untranslatable};
pub use expr::{translate_expression, ExprColumn, ExprContext, ExprUsage};
pub use ident::{pg_identifier, quote_ident, shorten_identifier, Capitalization};
pub use literal::{quote_literal, render_literal};
pub use mapping::{
    map_column, BitAs, ColumnCheck, DatetimePrecision, HierarchyidAs, MappingOptions, PgColumnType,
    PgKind, RowversionAs, SpatialAs, XmlAs,
};
pub use packed::{PackedReader, PackedWriter};
pub use schema::{identity_clause, identity_setval, pg_collation, PgCollation};
pub use sqlvalue::{
    date_from_sql, datetime2_from_sql, datetime_from_sql, datetimeoffset_from_sql,
    decimal_from_parts, decimal_parts, money_from_sql, smalldatetime_from_sql, smallmoney_from_sql,
    text_from_utf16, time_from_sql, uuid_from_sql_bytes,
};
pub use text::InvalidTextPolicy;
