//! Shared helpers: a database per test on the shared ephemeral cluster, value builders and a
//! table plan covering every type.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dbsync_apply::pg::catalog::ResolvedTable;
use dbsync_apply::pg::checkpoint::ensure_schema;
use dbsync_apply::pg::ddl::DdlOptions;
use dbsync_apply::plan::TableTarget;
use dbsync_apply::schema::create_objects;
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1::value::Kind;
use dbsync_proto::v1::*;
use tokio_postgres::Client;

pub const TASK: &str = "task-1";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh database and its connection settings.
pub async fn fresh_db(prefix: &str) -> (TargetConnection, Client) {
    let cluster = PgCluster::shared();
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    cluster
        .create_database(&name)
        .await
        .expect("create database");
    let target = TargetConnection {
        host: cluster.host().to_string(),
        port: u32::from(cluster.port()),
        user: cluster.superuser().to_string(),
        password: String::new(),
        database: name,
        sslmode: "disable".into(),
    };
    let mut client = dbsync_apply::pg::connect_plain(&target)
        .await
        .expect("connect");
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    ensure_schema(&mut client).await.expect("checkpoint schema");
    (target, client)
}

/// Creates the tables of `plans` and resolves them for writing.
pub async fn create_tables(
    client: &mut Client,
    plans: &[TablePlan],
    conflict_mode: &str,
) -> Vec<Arc<ResolvedTable>> {
    let targets: Vec<TableTarget> = plans
        .iter()
        .map(|p| TableTarget::from_plan(p).unwrap())
        .collect();
    create_objects(
        client,
        TASK,
        conflict_mode,
        &targets,
        &[],
        &DdlOptions::default(),
        false,
    )
    .await
    .expect("create objects");
    let mut out = Vec::new();
    for t in targets {
        out.push(Arc::new(ResolvedTable::load(client, t).await.unwrap()));
    }
    out
}

pub fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}
pub fn null() -> Value {
    Value { kind: None }
}
pub fn int(i: i64) -> Value {
    v(Kind::Int(i))
}
pub fn text(s: &str) -> Value {
    v(Kind::Text(s.to_string()))
}
pub fn unchanged() -> Value {
    v(Kind::Unchanged(true))
}
pub fn decimal(unscaled: i128, scale: u32) -> Value {
    v(Kind::Decimal(Decimal {
        unscaled: unscaled.to_le_bytes().to_vec(),
        scale,
    }))
}

pub const TICKS_PER_DAY: i64 = 864_000_000_000;
/// Days from 0001-01-01 to 2020-01-01.
pub const DAYS_2020: i64 = 737_424;

pub fn col(name: &str, ty: &str, len: i32, p: i32, s: i32, nullable: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        type_name: ty.into(),
        max_length: len,
        precision: p,
        scale: s,
        nullable,
        ..Default::default()
    }
}

pub fn pk(name: &str, cols: &[&str]) -> IndexSchema {
    IndexSchema {
        name: name.into(),
        is_primary_key: true,
        is_unique: true,
        columns: cols
            .iter()
            .map(|c| IndexColumn {
                name: c.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn table_plan(name: &str, columns: Vec<ColumnSchema>, key: &[&str]) -> TablePlan {
    TablePlan {
        source: Some(TableSchema {
            table: Some(TableRef {
                database: "shop".into(),
                schema: "dbo".into(),
                name: name.into(),
            }),
            columns,
            indexes: vec![pk(&format!("PK_{name}"), key)],
            key_columns: key.iter().map(|k| k.to_string()).collect(),
            key_source: "primary_key".into(),
            ..Default::default()
        }),
        sync_inserts: true,
        sync_updates: true,
        sync_deletes: true,
        ..Default::default()
    }
}

/// `id int, name nvarchar(100), note nvarchar(max), qty int`.
pub fn items_plan() -> TablePlan {
    table_plan(
        "Items",
        vec![
            col("id", "int", 4, 10, 0, false),
            col("name", "nvarchar", 200, 0, 0, true),
            col("note", "nvarchar", -1, 0, 0, true),
            col("qty", "int", 4, 10, 0, true),
        ],
        &["id"],
    )
}

/// One column of every supported type.
pub fn all_types_plan() -> TablePlan {
    table_plan(
        "AllTypes",
        vec![
            col("id", "int", 4, 10, 0, false),
            col("c_bit", "bit", 1, 1, 0, true),
            col("c_tinyint", "tinyint", 1, 3, 0, true),
            col("c_smallint", "smallint", 2, 5, 0, true),
            col("c_bigint", "bigint", 8, 19, 0, true),
            col("c_dec38", "decimal", 17, 38, 38, true),
            col("c_dec", "decimal", 9, 12, 2, true),
            col("c_money", "money", 8, 19, 4, true),
            col("c_real", "real", 4, 24, 0, true),
            col("c_float", "float", 8, 53, 0, true),
            col("c_date", "date", 3, 10, 0, true),
            col("c_time", "time", 5, 16, 7, true),
            col("c_dt2", "datetime2", 8, 27, 7, true),
            col("c_dto", "datetimeoffset", 10, 34, 7, true),
            col("c_datetime", "datetime", 8, 23, 3, true),
            col("c_char", "char", 5, 0, 0, true),
            col("c_nvarchar", "nvarchar", 40, 0, 0, true),
            col("c_text", "nvarchar", -1, 0, 0, true),
            col("c_bin", "varbinary", -1, 0, 0, true),
            col("c_uuid", "uniqueidentifier", 16, 0, 0, true),
            col("c_xml", "xml", -1, 0, 0, true),
        ],
        &["id"],
    )
}

/// A row of extremes for [`all_types_plan`] and the text PostgreSQL shows for each value.
pub fn extreme_row(id: i64) -> (Vec<Value>, Vec<&'static str>) {
    let long = "x".repeat(100_000);
    let values = vec![
        int(id),
        v(Kind::Bool(true)),
        int(255),
        int(-32768),
        int(i64::MAX),
        decimal(10i128.pow(38) - 1, 38),
        decimal(-1234567, 2),
        decimal(i128::from(i64::MAX), 4),
        v(Kind::Float32(1.5)),
        v(Kind::Float64(1e308)),
        v(Kind::Date(0)),
        v(Kind::Time(TICKS_PER_DAY - 1)),
        v(Kind::Datetime(3_652_058 * TICKS_PER_DAY + 863_999_999_994)),
        v(Kind::Datetimeoffset(DateTimeOffset {
            utc_ticks: DAYS_2020 * TICKS_PER_DAY + 12 * 36_000_000_000,
            offset_minutes: 120,
        })),
        v(Kind::Datetime(DAYS_2020 * TICKS_PER_DAY + 33_333)),
        text("ab   "),
        text("😀ü"),
        text(&long),
        v(Kind::Binary(vec![0, 255, 16])),
        v(Kind::Uuid((0u8..16).map(|i| i * 17).collect())),
        text("<a>1</a>"),
    ];
    let expected = vec![
        "",
        "true",
        "255",
        "-32768",
        "9223372036854775807",
        "0.99999999999999999999999999999999999999",
        "-12345.67",
        "922337203685477.5807",
        "1.5",
        "1e+308",
        "0001-01-01",
        "24:00:00",
        "9999-12-31 23:59:59.999999",
        "2020-01-01 12:00:00+00",
        "2020-01-01 00:00:00.003",
        // bpchar keeps the padding; its text cast drops it
        "ab",
        "😀ü",
        "",
        "\\x00ff10",
        "00112233-4455-6677-8899-aabbccddeeff",
        "<a>1</a>",
    ];
    (values, expected)
}

/// `SELECT id, name, note, qty FROM dbo.items ORDER BY id` as strings ("NULL" for NULL).
pub async fn items(client: &Client) -> Vec<String> {
    client
        .query("SELECT id, name, note, qty FROM dbo.items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}",
                r.get::<_, i32>(0),
                r.get::<_, Option<String>>(1).unwrap_or("NULL".into()),
                r.get::<_, Option<String>>(2).unwrap_or("NULL".into()),
                r.get::<_, Option<i32>>(3)
                    .map_or("NULL".into(), |q| q.to_string())
            )
        })
        .collect()
}
