//! Micro-benchmark of the binary COPY encoder and the canonical form:
//! `cargo run --release -p dbsync-typemap --example encode_bench`.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use dbsync_proto::v1::{value::Kind, ColumnSchema, DateTimeOffset, Value};
use dbsync_typemap::*;

fn column(type_name: &str, max_length: i32, precision: i32, scale: i32) -> ColumnSchema {
    ColumnSchema {
        name: type_name.into(),
        type_name: type_name.into(),
        max_length,
        precision,
        scale,
        ..Default::default()
    }
}

fn main() {
    let columns = [
        column("int", 4, 10, 0),
        column("bigint", 8, 19, 0),
        column("decimal", 9, 18, 4),
        column("money", 8, 19, 4),
        column("datetime2", 8, 27, 7),
        column("datetimeoffset", 10, 34, 7),
        column("nvarchar", 200, 0, 0),
        column("uniqueidentifier", 16, 0, 0),
        column("bit", 1, 1, 0),
        column("float", 8, 53, 0),
    ];
    let types: Vec<PgColumnType> = columns
        .iter()
        .map(|c| map_column(c, &MappingOptions::default()).unwrap())
        .collect();
    let rows: Vec<Vec<Value>> = (0..10_000i64)
        .map(|i| {
            let v = |k| Value { kind: Some(k) };
            vec![
                v(Kind::Int(i)),
                v(Kind::Int(i * 1_000_003)),
                v(Kind::Decimal(decimal_from_parts(
                    i128::from(i) * 12_345 - 7,
                    4,
                ))),
                v(Kind::Decimal(money_from_sql(i * 99_991))),
                v(Kind::Datetime(datetime2_from_sql(
                    737_000 + i as u32 % 1000,
                    (i as u64 * 7_654_321) % 864_000_000_000,
                    7,
                ))),
                v(Kind::Datetimeoffset(DateTimeOffset {
                    utc_ticks: 637_000_000_000_000_000 + i * 10_000_123,
                    offset_minutes: 60,
                })),
                v(Kind::Text(format!("customer name {i} with some text"))),
                v(Kind::Uuid(
                    (0..16).map(|b| (b as u8).wrapping_mul(i as u8)).collect(),
                )),
                v(Kind::Bool(i % 2 == 0)),
                v(Kind::Float64(i as f64 * 1.25)),
            ]
        })
        .collect();

    let mut buf = BytesMut::with_capacity(4 << 20);
    let mut values = 0u64;
    let mut bytes = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        buf.clear();
        copy_header(&mut buf);
        for row in &rows {
            begin_row(&mut buf, row.len() as u16);
            for (value, ty) in row.iter().zip(&types) {
                encode_value(value, ty, &mut buf).unwrap();
            }
        }
        copy_trailer(&mut buf);
        values += (rows.len() * types.len()) as u64;
        bytes += buf.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "binary COPY encode: {:.1} M values/s, {:.1} M rows/s, {:.0} MB/s",
        values as f64 / seconds / 1e6,
        values as f64 / types.len() as f64 / seconds / 1e6,
        bytes as f64 / seconds / 1e6
    );

    let mut out = Vec::with_capacity(4 << 20);
    let mut values = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for row in &rows {
            out.clear();
            for (value, ty) in row.iter().zip(&types) {
                canonical_bytes(value, ty, &mut out);
            }
        }
        values += (rows.len() * types.len()) as u64;
    }
    println!(
        "canonical form: {:.1} M values/s",
        values as f64 / started.elapsed().as_secs_f64() / 1e6
    );
}
