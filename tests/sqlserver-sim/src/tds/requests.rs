//! Parsers for the client requests after login: SQL batch, RPC, Transaction Manager and
//! BulkLoad.

use super::reader::{utf16_to_string, Reader};
use super::tokens::{col_flag, token};
use super::values::{has_table_name, read_type_info, read_value};
use super::WireError;
use crate::api::{ResultColumn, RpcParam, RpcProc, TransactionRequest};
use crate::types::Value;

/// Read ALL_HEADERS and return the transaction descriptor it carries (0 when absent).
fn read_all_headers(r: &mut Reader) -> Result<u64, WireError> {
    let total = r.u32()? as usize;
    if total < 4 {
        return Err(WireError::invalid(
            "ALL_HEADERS",
            format!("total length {total}"),
        ));
    }
    let mut headers = Reader::new(r.bytes(total - 4)?, "ALL_HEADERS");
    let mut descriptor = 0;
    while !headers.is_empty() {
        let length = headers.u32()? as usize;
        if length < 6 {
            return Err(WireError::invalid(
                "ALL_HEADERS",
                format!("header length {length}"),
            ));
        }
        let kind = headers.u16()?;
        let data = headers.bytes(length - 6)?;
        // Type 2: transaction descriptor (8 bytes) + outstanding request count.
        if kind == 2 && data.len() >= 8 {
            descriptor = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        }
    }
    Ok(descriptor)
}

/// SQL batch: ALL_HEADERS then the text as UTF-16LE.
/// SQL batch: ALL_HEADERS then the text as UTF-16LE. Returns (descriptor, text).
pub fn parse_sql_batch(payload: &[u8]) -> Result<(u64, String), WireError> {
    let mut r = Reader::new(payload, "SQL batch");
    let descriptor = read_all_headers(&mut r)?;
    let text = r.bytes(r.remaining())?;
    let text = utf16_to_string(text).map_err(|e| WireError::invalid("SQL batch", e))?;
    Ok((descriptor, text))
}

/// One procedure call of an RPC request.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall {
    pub proc: RpcProc,
    pub params: Vec<RpcParam>,
}

/// An RPC request as decoded: usually one call; a client may batch several, separated by
/// BatchFlag 0xFF (NoExecFlag 0x80 in older TDS versions).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    pub descriptor: u64,
    pub calls: Vec<RpcCall>,
}

const RPC_BATCH_FLAG: u8 = 0xFF;
const RPC_NO_EXEC_FLAG: u8 = 0x80;

/// RPC request: the procedures and their parameters.
pub fn parse_rpc(payload: &[u8]) -> Result<RpcRequest, WireError> {
    let mut r = Reader::new(payload, "RPC request");
    let descriptor = read_all_headers(&mut r)?;
    let mut calls = Vec::new();
    loop {
        let name_len = r.u16()?;
        let proc = if name_len == 0xFFFF {
            RpcProc::Id(r.u16()?)
        } else {
            RpcProc::Name(r.utf16(name_len as usize)?)
        };
        let _option_flags = r.u16()?;
        let mut params = Vec::new();
        let mut more = false;
        while !r.is_empty() {
            if matches!(r.peek()?, RPC_BATCH_FLAG | RPC_NO_EXEC_FLAG) {
                r.skip(1)?;
                more = true;
                break;
            }
            let name = r.b_varchar()?;
            let status = r.u8()?;
            let wt = read_type_info(&mut r, 0)?;
            let value = read_value(&mut r, &wt)?;
            params.push(RpcParam {
                name,
                ty: wt.ty,
                value,
                output: status & 0x01 != 0,
            });
        }
        calls.push(RpcCall { proc, params });
        if !more || r.is_empty() {
            return Ok(RpcRequest { descriptor, calls });
        }
    }
}

/// Transaction Manager request (packet 0x0E). Returns (descriptor, request).
pub fn parse_transaction_request(payload: &[u8]) -> Result<(u64, TransactionRequest), WireError> {
    let mut r = Reader::new(payload, "transaction manager request");
    let descriptor = read_all_headers(&mut r)?;
    let request = match r.u16()? {
        5 => {
            let isolation = r.u8()?;
            let name = r.b_varchar()?;
            TransactionRequest::Begin { isolation, name }
        }
        7 => TransactionRequest::Commit {
            name: r.b_varchar()?,
        },
        8 => TransactionRequest::Rollback {
            name: r.b_varchar()?,
        },
        9 => TransactionRequest::Save {
            name: r.b_varchar()?,
        },
        other => {
            return Err(WireError::Unsupported(format!(
                "transaction manager request type {other}"
            )))
        }
    };
    Ok((descriptor, request))
}

/// BulkLoad message: COLMETADATA, ROW/NBCROW tokens, DONE.
pub fn parse_bulk_load(payload: &[u8]) -> Result<(Vec<ResultColumn>, Vec<Vec<Value>>), WireError> {
    let mut r = Reader::new(payload, "bulk load");
    if r.u8()? != token::COLMETADATA {
        return Err(WireError::invalid(
            "bulk load",
            "does not start with COLMETADATA",
        ));
    }
    let count = r.u16()? as usize;
    let mut columns = Vec::with_capacity(count);
    let mut wire_types = Vec::with_capacity(count);
    for _ in 0..count {
        let user_type = r.u32()?;
        let flags = r.u16()?;
        let wt = read_type_info(&mut r, user_type)?;
        // tiberius writes the table name of text/ntext/image as one bare US_VARCHAR.
        let table_name = if has_table_name(&wt.ty) {
            Some(r.us_varchar()?)
        } else {
            None
        };
        let name = r.b_varchar()?;
        columns.push(ResultColumn {
            name,
            ty: wt.ty.clone(),
            nullable: flags & col_flag::NULLABLE != 0,
            updateable: flags & col_flag::UPDATEABLE_UNKNOWN != 0,
            identity: flags & col_flag::IDENTITY != 0,
            computed: flags & col_flag::COMPUTED != 0,
            table_name,
        });
        wire_types.push(wt);
    }
    let mut rows = Vec::new();
    loop {
        match r.u8()? {
            token::ROW => {
                let row = wire_types
                    .iter()
                    .map(|wt| read_value(&mut r, wt))
                    .collect::<Result<Vec<_>, _>>()?;
                rows.push(row);
            }
            token::NBCROW => {
                let bitmap = r.bytes(count.div_ceil(8))?;
                let mut row = Vec::with_capacity(count);
                for (i, wt) in wire_types.iter().enumerate() {
                    if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                        row.push(Value::Null);
                    } else {
                        row.push(read_value(&mut r, wt)?);
                    }
                }
                rows.push(row);
            }
            token::DONE => break,
            other => {
                return Err(WireError::invalid(
                    "bulk load",
                    format!("unexpected token {other:#04x}"),
                ))
            }
        }
    }
    Ok((columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::tokens::write_colmetadata;
    use crate::tds::values::{put_b_varchar, write_value};
    use crate::types::{Collation, SqlType};
    use bytes::{BufMut, BytesMut};

    #[test]
    fn bulk_load_with_row_and_nbcrow_tokens() {
        let columns = vec![
            ResultColumn::expr("a", SqlType::Int, true),
            ResultColumn::expr(
                "b",
                SqlType::NVarChar {
                    len: Some(10),
                    collation: Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
                },
                true,
            ),
        ];
        let mut buf = BytesMut::new();
        write_colmetadata(&mut buf, &columns);
        let mut scratch = Vec::new();
        buf.put_u8(token::ROW);
        for (c, v) in columns
            .iter()
            .zip([Value::Int(1), Value::String("x".into())])
        {
            write_value(&mut buf, &c.ty, true, &v, &mut scratch).unwrap();
        }
        buf.put_u8(token::NBCROW);
        buf.put_u8(0b01);
        write_value(
            &mut buf,
            &columns[1].ty,
            true,
            &Value::String("y".into()),
            &mut scratch,
        )
        .unwrap();
        buf.put_slice(&[token::DONE, 0x10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let (decoded, rows) = parse_bulk_load(&buf).unwrap();
        assert_eq!(
            decoded.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(decoded.iter().all(|c| c.nullable));
        assert_eq!(
            rows,
            vec![
                vec![Value::Int(1), Value::String("x".into())],
                vec![Value::Null, Value::String("y".into())]
            ]
        );
    }

    #[test]
    fn transaction_manager_requests_and_rpc_names() {
        let headers = |buf: &mut BytesMut, descriptor: u64| {
            buf.put_u32_le(22);
            buf.put_u32_le(18);
            buf.put_u16_le(2);
            buf.put_u64_le(descriptor);
            buf.put_u32_le(1);
        };
        let mut begin = BytesMut::new();
        headers(&mut begin, 0);
        begin.put_u16_le(5);
        begin.put_u8(2);
        put_b_varchar(&mut begin, "t1");
        assert_eq!(
            parse_transaction_request(&begin).unwrap(),
            (
                0,
                TransactionRequest::Begin {
                    isolation: 2,
                    name: "t1".into()
                }
            )
        );
        let mut commit = BytesMut::new();
        headers(&mut commit, 7);
        commit.put_u16_le(7);
        put_b_varchar(&mut commit, "");
        commit.put_u8(0);
        assert_eq!(
            parse_transaction_request(&commit).unwrap(),
            (
                7,
                TransactionRequest::Commit {
                    name: String::new()
                }
            )
        );

        let mut rpc = BytesMut::new();
        headers(&mut rpc, 9);
        rpc.put_u16_le(4);
        for unit in "p_go".encode_utf16() {
            rpc.put_u16_le(unit);
        }
        rpc.put_u16_le(0);
        put_b_varchar(&mut rpc, "@x");
        rpc.put_u8(1);
        rpc.put_slice(&[0x26, 4, 4, 42, 0, 0, 0]);
        // A second call in the same request, after the batch flag.
        rpc.put_u8(0xFF);
        rpc.put_u16_le(0xFFFF);
        rpc.put_u16_le(10);
        rpc.put_u16_le(0);
        let parsed = parse_rpc(&rpc).unwrap();
        assert_eq!(parsed.descriptor, 9);
        assert_eq!(parsed.calls.len(), 2);
        assert_eq!(parsed.calls[0].proc, RpcProc::Name("p_go".into()));
        assert_eq!(
            parsed.calls[1],
            RpcCall {
                proc: RpcProc::Id(10),
                params: vec![]
            }
        );
        assert_eq!(
            parsed.calls[0].params,
            vec![RpcParam {
                name: "@x".into(),
                ty: SqlType::Int,
                value: Value::Int(42),
                output: true
            }]
        );
    }
}
