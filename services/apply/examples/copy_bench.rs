//! Snapshot write path benchmark: apply's COPY path (proto rows → our binary encoders →
//! `ChunkWriter`, chunk checkpoint included) next to a raw binary COPY of the same rows with
//! tokio-postgres' `BinaryCopyInWriter` into an identical table, in the same run.
//!
//! `cargo run --release -p dbsync-apply --example copy_bench -- [rows]` (default 1,000,000).
//! Table: bigint key, int, text, numeric(12,2), datetime2, bit, nvarchar(200).

use std::error::Error;
use std::time::Instant;

use bytes::BytesMut;
use dbsync_apply::pg::catalog::ResolvedTable;
use dbsync_apply::pg::checkpoint::ensure_schema;
use dbsync_apply::pg::copy::ChunkWriter;
use dbsync_apply::pg::ddl::DdlOptions;
use dbsync_apply::plan::TableTarget;
use dbsync_apply::schema::create_objects;
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1::value::Kind;
use dbsync_proto::v1::*;
use dbsync_typemap::numeric::write_pg_numeric;
use dbsync_typemap::temporal::pg_timestamp_micros;
use futures::pin_mut;
use postgres_types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

const BATCH: usize = 10_000;
const CHUNK_ROWS: usize = 100_000;
const TICKS_2024: i64 = 738_885 * 864_000_000_000;

fn col(name: &str, ty: &str, len: i32, p: i32, s: i32) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        type_name: ty.into(),
        max_length: len,
        precision: p,
        scale: s,
        nullable: true,
        ..Default::default()
    }
}

fn plan() -> TablePlan {
    let mut id = col("id", "bigint", 8, 19, 0);
    id.nullable = false;
    TablePlan {
        source: Some(TableSchema {
            table: Some(TableRef {
                database: "bench".into(),
                schema: "dbo".into(),
                name: "bench_apply".into(),
            }),
            columns: vec![
                id,
                col("qty", "int", 4, 10, 0),
                col("label", "varchar", -1, 0, 0),
                col("amount", "decimal", 9, 12, 2),
                col("created", "datetime2", 8, 27, 7),
                col("active", "bit", 1, 1, 0),
                col("name", "nvarchar", 400, 0, 0),
            ],
            indexes: vec![IndexSchema {
                name: "PK_bench_apply".into(),
                is_primary_key: true,
                is_unique: true,
                columns: vec![IndexColumn {
                    name: "id".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            key_columns: vec!["id".into()],
            key_source: "primary_key".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The same logical row for both paths.
struct Native {
    id: i64,
    qty: i32,
    label: String,
    amount: (i128, u32),
    created_ticks: i64,
    active: bool,
    name: String,
}

fn native(i: usize) -> Native {
    Native {
        id: i as i64,
        qty: (i % 1000) as i32,
        label: format!("label-{}", i % 97),
        amount: ((i as i128 * 37) % 10_000_000, 2),
        created_ticks: TICKS_2024 + (i as i64) * 10_000_017,
        active: i.is_multiple_of(3),
        name: format!("customer name {} ü", i % 1013),
    }
}

fn proto_row(n: &Native) -> Row {
    let v = |k| Value { kind: Some(k) };
    Row {
        values: vec![
            v(Kind::Int(n.id)),
            v(Kind::Int(i64::from(n.qty))),
            v(Kind::Text(n.label.clone())),
            v(Kind::Decimal(Decimal {
                unscaled: n.amount.0.to_le_bytes()[..8].to_vec(),
                scale: n.amount.1,
            })),
            v(Kind::Datetime(n.created_ticks)),
            v(Kind::Bool(n.active)),
            v(Kind::Text(n.name.clone())),
        ],
    }
}

#[derive(Debug)]
struct RawNumeric(i128, u32);
impl ToSql for RawNumeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        write_pg_numeric(out, self.0, self.1);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
    to_sql_checked!();
}

#[derive(Debug)]
struct RawTimestamp(i64);
impl ToSql for RawTimestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP
    }
    to_sql_checked!();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cluster = PgCluster::start()?;
    cluster.create_database("bench").await?;
    let target = TargetConnection {
        host: cluster.host().into(),
        port: u32::from(cluster.port()),
        user: cluster.superuser().into(),
        database: "bench".into(),
        ..Default::default()
    };
    let mut control = dbsync_apply::pg::connect_plain(&target).await?;
    ensure_schema(&mut control).await?;
    let t = TableTarget::from_plan(&plan())?;
    create_objects(
        &mut control,
        "bench",
        "precheck",
        std::slice::from_ref(&t),
        &[],
        &DdlOptions::default(),
        false,
    )
    .await?;
    control
        .batch_execute(
            "CREATE TABLE dbo.bench_raw (LIKE dbo.bench_apply INCLUDING ALL); CHECKPOINT",
        )
        .await?;
    let table = ResolvedTable::load(&control, t).await?;

    // One template batch of each form; keys are rewritten per batch (cheap, same for both).
    let natives: Vec<Native> = (0..BATCH).map(native).collect();
    let mut batch = RowBatch {
        rows: natives.iter().map(proto_row).collect(),
        ..Default::default()
    };
    let bytes_per_row = batch
        .rows
        .iter()
        .map(prost::Message::encoded_len)
        .sum::<usize>()
        / BATCH;

    // apply's path: chunks of CHUNK_ROWS rows, one transaction + done flag each.
    let chunks = rows.div_ceil(CHUNK_ROWS);
    dbsync_core::sink::CheckpointStore::save_chunk_plan(
        &dbsync_apply::pg::checkpoint::PgCheckpoints {
            client: &control,
            task_id: "bench",
        },
        &table.target.source_name,
        &(0..chunks as u32)
            .map(|index| Chunk {
                index,
                ..Default::default()
            })
            .collect::<Vec<_>>(),
    )
    .await?;
    let mut data = dbsync_apply::pg::connect(&target).await?;
    let start = Instant::now();
    let mut written = 0usize;
    for c in 0..chunks {
        let mut w = ChunkWriter::begin(&mut data, &table, "bench", c as u32, false).await?;
        let in_chunk = CHUNK_ROWS.min(rows - written);
        let mut done = 0;
        while done < in_chunk {
            let n = BATCH.min(in_chunk - done);
            for (i, row) in batch.rows[..n].iter_mut().enumerate() {
                row.values[0].kind = Some(Kind::Int((written + done + i) as i64));
            }
            for row in &batch.rows[..n] {
                w.put_row(&row.values)?;
                w.maybe_flush().await?;
            }
            done += n;
        }
        w.commit().await?;
        written += in_chunk;
    }
    let apply_secs = start.elapsed().as_secs_f64();
    batch.bytes = 0;

    // Raw binary COPY of the same rows with native Rust values.
    let raw = control.copy_in("COPY dbo.bench_raw (id, qty, label, amount, created, active, name) FROM STDIN (FORMAT binary)").await?;
    let types = [
        Type::INT8,
        Type::INT4,
        Type::TEXT,
        Type::NUMERIC,
        Type::TIMESTAMP,
        Type::BOOL,
        Type::VARCHAR,
    ];
    let writer = BinaryCopyInWriter::new(raw, &types);
    pin_mut!(writer);
    let start = Instant::now();
    for i in 0..rows {
        let n = &natives[i % BATCH];
        let id = i as i64;
        writer
            .as_mut()
            .write(&[
                &id,
                &n.qty,
                &n.label,
                &RawNumeric(n.amount.0, n.amount.1),
                &RawTimestamp(pg_timestamp_micros(n.created_ticks, 6)),
                &n.active,
                &n.name,
            ])
            .await?;
    }
    writer.finish().await?;
    let raw_secs = start.elapsed().as_secs_f64();

    let count = |t: &'static str| {
        let control = &control;
        async move {
            control
                .query_one(&format!("SELECT count(*) FROM dbo.{t}"), &[])
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    };
    let (a, r) = (count("bench_apply").await?, count("bench_raw").await?);
    assert_eq!((a as usize, r as usize), (rows, rows));
    let same: i64 = control
        .query_one("SELECT count(*) FROM (SELECT * FROM dbo.bench_apply EXCEPT SELECT * FROM dbo.bench_raw) d", &[])
        .await?
        .get(0);
    let mb = |secs: f64| rows as f64 * bytes_per_row as f64 / secs / 1e6;
    println!("rows: {rows}, ~{bytes_per_row} protobuf bytes per row");
    println!(
        "apply COPY path : {:>10.0} rows/s  {:>6.1} MB/s  ({apply_secs:.2} s)",
        rows as f64 / apply_secs,
        mb(apply_secs)
    );
    println!(
        "raw binary COPY : {:>10.0} rows/s  {:>6.1} MB/s  ({raw_secs:.2} s)",
        rows as f64 / raw_secs,
        mb(raw_secs)
    );
    println!("apply / raw     : {:>9.0}%", raw_secs / apply_secs * 100.0);
    println!("rows differing  : {same}");
    Ok(())
}
