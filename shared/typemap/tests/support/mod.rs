//! Shared helpers for the PostgreSQL round-trip tests.
#![allow(dead_code)]

use bytes::BytesMut;
use dbsync_proto::v1::{value::Kind, ColumnSchema, Value};
use dbsync_typemap::{begin_row, copy_header, copy_trailer, encode_value, PgColumnType, PgKind};
use futures::SinkExt;

pub fn column(type_name: &str, max_length: i32, precision: i32, scale: i32) -> ColumnSchema {
    ColumnSchema {
        name: format!("col_{type_name}"),
        type_name: type_name.to_string(),
        max_length,
        precision,
        scale,
        nullable: true,
        ..Default::default()
    }
}

pub fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

pub fn null() -> Value {
    Value { kind: None }
}

pub async fn client() -> tokio_postgres::Client {
    let cluster = dbsync_pgtest::PgCluster::shared();
    let client = cluster.connect("postgres").await.unwrap();
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 1")
        .await
        .unwrap();
    client
}

/// Creates `table (id int, v <mapped type> [CHECK])` and COPYs `values` into it with ids 0..
pub async fn copy_into(
    client: &tokio_postgres::Client,
    table: &str,
    ty: &PgColumnType,
    values: &[Value],
) {
    let check = ty
        .check_sql("v")
        .map(|c| format!(" CHECK ({c})"))
        .unwrap_or_default();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, v {}{check})",
            ty.ddl()
        ))
        .await
        .unwrap();
    let id_type = PgColumnType::new("id", PgKind::Integer);
    let mut buf = BytesMut::new();
    copy_header(&mut buf);
    for (i, value) in values.iter().enumerate() {
        begin_row(&mut buf, 2);
        encode_value(&v(Kind::Int(i as i64)), &id_type, &mut buf).unwrap();
        encode_value(value, ty, &mut buf).unwrap_or_else(|e| panic!("encode {value:?}: {e}"));
    }
    copy_trailer(&mut buf);
    let sink = client
        .copy_in(&format!("COPY {table} (id, v) FROM STDIN (FORMAT binary)"))
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(buf.freeze()).await.unwrap();
    sink.as_mut().finish().await.unwrap();
}

/// `SELECT <expr> FROM table ORDER BY id` as optional text.
pub async fn select_text(
    client: &tokio_postgres::Client,
    table: &str,
    expr: &str,
) -> Vec<Option<String>> {
    client
        .query(
            &format!("SELECT ({expr})::text FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, Option<String>>(0))
        .collect()
}
