//! Writers for the tokens the server sends (MS-TDS 2.2.7).

use bytes::{BufMut, BytesMut};

use super::login::{PROGRAM_NAME, SERVER_NAME, SERVER_VERSION, TDS_VERSION};
use super::values::{self, put_b_varchar, put_us_varchar, EncodeError};
use crate::api::{EnvChange, ResultColumn, SqlError, StatementKind};
use crate::types::{SqlType, Value};

pub mod token {
    pub const RETURNSTATUS: u8 = 0x79;
    pub const COLMETADATA: u8 = 0x81;
    pub const ERROR: u8 = 0xAA;
    pub const INFO: u8 = 0xAB;
    pub const RETURNVALUE: u8 = 0xAC;
    pub const LOGINACK: u8 = 0xAD;
    pub const ROW: u8 = 0xD1;
    pub const NBCROW: u8 = 0xD2;
    pub const ENVCHANGE: u8 = 0xE3;
    pub const DONE: u8 = 0xFD;
    pub const DONEPROC: u8 = 0xFE;
    pub const DONEINPROC: u8 = 0xFF;
}

/// DONE status bits.
pub mod done {
    pub const FINAL: u16 = 0x00;
    pub const MORE: u16 = 0x01;
    pub const ERROR: u16 = 0x02;
    pub const INXACT: u16 = 0x04;
    pub const COUNT: u16 = 0x10;
    pub const ATTN: u16 = 0x20;
}

/// COLMETADATA flag bits.
pub mod col_flag {
    pub const NULLABLE: u16 = 0x0001;
    pub const UPDATEABLE_UNKNOWN: u16 = 0x0008;
    pub const IDENTITY: u16 = 0x0010;
    pub const COMPUTED: u16 = 0x0020;
}

pub fn curcmd(kind: StatementKind) -> u16 {
    match kind {
        StatementKind::Select => 0xC1,
        StatementKind::Insert => 0xC3,
        StatementKind::Delete => 0xC4,
        StatementKind::Update => 0xC5,
        StatementKind::Other => 0,
    }
}

pub fn write_done(buf: &mut BytesMut, token: u8, status: u16, curcmd: u16, rows: u64) {
    buf.put_u8(token);
    buf.put_u16_le(status);
    buf.put_u16_le(curcmd);
    buf.put_u64_le(rows);
}

/// Longest ERROR/INFO message text SQL Server sends.
const MAX_MESSAGE_CHARS: usize = 2047;

/// ERROR (`token::ERROR`) or INFO (`token::INFO`).
pub fn write_message(buf: &mut BytesMut, token: u8, e: &SqlError) {
    buf.put_u8(token);
    let at = buf.len();
    buf.put_u16_le(0);
    buf.put_i32_le(e.number);
    buf.put_u8(e.state);
    buf.put_u8(e.class);
    // The token length is a u16: cut messages at SQL Server's own limit (2047 characters).
    let message = match e.message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => &e.message[..cut],
        None => &e.message,
    };
    put_us_varchar(buf, message);
    put_b_varchar(buf, SERVER_NAME);
    put_b_varchar(buf, &e.procedure);
    buf.put_u32_le(e.line);
    patch_len(buf, at);
}

fn patch_len(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at - 2) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_le_bytes());
}

pub fn write_loginack(buf: &mut BytesMut) {
    buf.put_u8(token::LOGINACK);
    let at = buf.len();
    buf.put_u16_le(0);
    buf.put_u8(1); // SQL interface
    buf.put_u32(TDS_VERSION); // big-endian, as SQL Server sends it
    put_b_varchar(buf, PROGRAM_NAME);
    buf.put_slice(&SERVER_VERSION);
    patch_len(buf, at);
}

/// ENVCHANGE with B_VARCHAR values (database 1, packet size 4).
pub fn write_env_text(buf: &mut BytesMut, kind: u8, new: &str, old: &str) {
    buf.put_u8(token::ENVCHANGE);
    let at = buf.len();
    buf.put_u16_le(0);
    buf.put_u8(kind);
    put_b_varchar(buf, new);
    put_b_varchar(buf, old);
    patch_len(buf, at);
}

/// ENVCHANGE with B_VARBYTE values (collation 7, transactions 8/9/10).
pub fn write_env_bytes(buf: &mut BytesMut, kind: u8, new: &[u8], old: &[u8]) {
    buf.put_u8(token::ENVCHANGE);
    buf.put_u16_le((3 + new.len() + old.len()) as u16);
    buf.put_u8(kind);
    buf.put_u8(new.len() as u8);
    buf.put_slice(new);
    buf.put_u8(old.len() as u8);
    buf.put_slice(old);
}

pub fn write_env_change(buf: &mut BytesMut, change: &EnvChange) {
    match change {
        EnvChange::Database { new, old } => write_env_text(buf, 1, new, old),
        EnvChange::BeginTransaction { descriptor } => {
            write_env_bytes(buf, 8, &descriptor.to_le_bytes(), &[])
        }
        EnvChange::CommitTransaction { descriptor } => {
            write_env_bytes(buf, 9, &[], &descriptor.to_le_bytes())
        }
        EnvChange::RollbackTransaction { descriptor } => {
            write_env_bytes(buf, 10, &[], &descriptor.to_le_bytes())
        }
    }
}

pub fn write_return_status(buf: &mut BytesMut, status: i32) {
    buf.put_u8(token::RETURNSTATUS);
    buf.put_i32_le(status);
}

pub fn column_flags(c: &ResultColumn) -> u16 {
    let mut flags = 0;
    if c.nullable {
        flags |= col_flag::NULLABLE;
    }
    if c.identity {
        flags |= col_flag::IDENTITY;
    } else if c.computed {
        flags |= col_flag::COMPUTED;
    } else if c.updateable {
        flags |= col_flag::UPDATEABLE_UNKNOWN;
    }
    flags
}

pub fn write_colmetadata(buf: &mut BytesMut, columns: &[ResultColumn]) {
    buf.put_u8(token::COLMETADATA);
    buf.put_u16_le(columns.len() as u16);
    for c in columns {
        buf.put_u32_le(values::user_type(&c.ty));
        buf.put_u16_le(column_flags(c));
        values::write_type_info(buf, &c.ty, c.nullable);
        if values::has_table_name(&c.ty) {
            let table = c.table_name.as_deref().unwrap_or("");
            let parts: Vec<&str> = table.split('.').filter(|p| !p.is_empty()).collect();
            buf.put_u8(parts.len() as u8);
            for p in parts {
                put_us_varchar(buf, p);
            }
        }
        put_b_varchar(buf, &c.name);
    }
}

/// RETURNVALUE of an OUTPUT parameter (always sent in the nullable form).
pub fn write_return_value(
    buf: &mut BytesMut,
    ordinal: u16,
    name: &str,
    ty: &SqlType,
    value: &Value,
    scratch: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    buf.put_u8(token::RETURNVALUE);
    buf.put_u16_le(ordinal);
    put_b_varchar(buf, name);
    buf.put_u8(0x01);
    buf.put_u32_le(values::user_type(ty));
    buf.put_u16_le(col_flag::NULLABLE);
    values::write_type_info(buf, ty, true);
    values::write_value(buf, ty, true, value, scratch)
}

/// Encodes the rows of one result set; keeps its scratch buffer across rows.
#[derive(Default)]
pub struct RowEncoder {
    columns: Vec<ResultColumn>,
    scratch: Vec<u8>,
}

impl RowEncoder {
    pub fn set_columns(&mut self, columns: &[ResultColumn]) {
        self.columns.clear();
        self.columns.extend_from_slice(columns);
    }

    pub fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }

    /// ROW, or NBCROW when the row has a NULL (as SQL Server does). On error `buf` is left as
    /// it was.
    pub fn write_row(&mut self, buf: &mut BytesMut, row: &[Value]) -> Result<(), EncodeError> {
        if row.len() != self.columns.len() {
            return Err(EncodeError(format!(
                "row of {} values for {} columns",
                row.len(),
                self.columns.len()
            )));
        }
        let start = buf.len();
        let result = self.write_row_inner(buf, row);
        if result.is_err() {
            buf.truncate(start);
        }
        result
    }

    fn write_row_inner(&mut self, buf: &mut BytesMut, row: &[Value]) -> Result<(), EncodeError> {
        let has_null = row.iter().any(|v| matches!(v, Value::Null));
        if has_null {
            buf.put_u8(token::NBCROW);
            let bitmap_at = buf.len();
            buf.put_bytes(0, row.len().div_ceil(8));
            for (i, (value, col)) in row.iter().zip(&self.columns).enumerate() {
                if matches!(value, Value::Null) {
                    if values::is_fixed(&col.ty, col.nullable) {
                        return Err(EncodeError(format!("NULL in NOT NULL column {}", col.name)));
                    }
                    buf[bitmap_at + i / 8] |= 1 << (i % 8);
                } else {
                    values::write_value(buf, &col.ty, col.nullable, value, &mut self.scratch)
                        .map_err(|e| EncodeError(format!("column {}: {}", col.name, e.0)))?;
                }
            }
        } else {
            buf.put_u8(token::ROW);
            for (value, col) in row.iter().zip(&self.columns) {
                values::write_value(buf, &col.ty, col.nullable, value, &mut self.scratch)
                    .map_err(|e| EncodeError(format!("column {}: {}", col.name, e.0)))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_so_the_token_length_stays_valid() {
        let mut buf = BytesMut::new();
        let long = SqlError::new(50000, 16, 1, "😀".repeat(40_000));
        write_message(&mut buf, token::ERROR, &long);
        let len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
        assert_eq!(len + 3, buf.len());
        let chars = u16::from_le_bytes([buf[9], buf[10]]) as usize;
        assert!(chars <= 2 * MAX_MESSAGE_CHARS, "{chars} UTF-16 units");
    }
}
