//! Change apply benchmark: the `ChangeApplier` (source transactions of 10 changes applied in
//! order, batched into `unnest` statements, positions checkpointed in the same transaction)
//! next to a ceiling measured in the same run: the same row changes applied by a bulk staged
//! COPY + merge (inserts, updates, deletes each COPYed into a staging table and merged with one
//! statement, one transaction).
//!
//! `cargo run --release -p dbsync-apply --example change_bench -- [transactions]` (default 20,000
//! transactions = 200,000 changes: 6 inserts, 3 updates, 1 delete each).

use std::error::Error;
use std::time::Instant;

use dbsync_apply::pg::catalog::ResolvedTable;
use dbsync_apply::pg::changes::{ApplyLimits, ChangeApplier, TableApply};
use dbsync_apply::pg::checkpoint::ensure_schema;
use dbsync_apply::pg::ddl::DdlOptions;
use dbsync_apply::plan::TableTarget;
use dbsync_apply::schema::create_objects;
use dbsync_core::lsn::Lsn;
use dbsync_core::sink::ChangeSink;
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1::value::Kind;
use dbsync_proto::v1::*;
use futures::pin_mut;
use postgres_types::Type;
use tokio_postgres::binary_copy::BinaryCopyInWriter;

fn col(name: &str, ty: &str, len: i32) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        type_name: ty.into(),
        max_length: len,
        nullable: name != "id",
        ..Default::default()
    }
}

fn plan(name: &str) -> TablePlan {
    TablePlan {
        source: Some(TableSchema {
            table: Some(TableRef {
                database: "bench".into(),
                schema: "dbo".into(),
                name: name.into(),
            }),
            columns: vec![
                col("id", "int", 4),
                col("name", "nvarchar", 200),
                col("note", "nvarchar", -1),
                col("qty", "int", 4),
            ],
            indexes: vec![IndexSchema {
                name: format!("PK_{name}"),
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
        sync_inserts: true,
        sync_updates: true,
        sync_deletes: true,
        ..Default::default()
    }
}

enum Op {
    Insert(i32, i32),
    Update(i32, i32),
    Delete(i32),
}

/// Transaction `t`: inserts ids 6t..6t+5; updates three rows and deletes one of transaction t−1.
fn workload(t: i32) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..6).map(|i| Op::Insert(6 * t + i, t)).collect();
    if t > 0 {
        let prev = 6 * (t - 1);
        ops.extend((1..4).map(|i| Op::Update(prev + i, t)));
        ops.push(Op::Delete(prev));
    }
    ops
}

fn values(id: i32, n: i32) -> Vec<Value> {
    let v = |k| Value { kind: Some(k) };
    vec![
        v(Kind::Int(i64::from(id))),
        v(Kind::Text(format!("name {n}"))),
        v(Kind::Text(format!("note for {id} at {n}"))),
        v(Kind::Int(i64::from(n))),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let transactions: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
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
    let targets: Vec<TableTarget> = [plan("applied"), plan("ceiling")]
        .iter()
        .map(|p| TableTarget::from_plan(p).unwrap())
        .collect();
    create_objects(
        &mut control,
        "bench",
        "precheck",
        &targets,
        &[],
        &DdlOptions::default(),
        false,
    )
    .await?;
    let table = std::sync::Arc::new(ResolvedTable::load(&control, targets[0].clone()).await?);
    let changes: usize = (0..transactions).map(|t| workload(t).len()).sum();

    // The applier, fed fragments as capture would send them.
    let client = dbsync_apply::pg::connect(&target).await?;
    let reorder = std::env::var("REORDER").map(|v| v != "0").unwrap_or(true);
    let mut apply = TableApply::new(table, None, false);
    apply.reorder = reorder;
    let mut applier = ChangeApplier::start(
        client,
        "bench",
        "g",
        vec![Some(apply)],
        None,
        ApplyLimits::default(),
    )
    .await?;
    let start = Instant::now();
    for t in 0..transactions {
        let ops = workload(t);
        let mut out = Vec::with_capacity(ops.len() + 3);
        for (seq, op) in ops.iter().enumerate() {
            let seqval = Lsn::from_u128(seq as u128).0.to_vec();
            let change = |operation: Operation, values| RowChange {
                table_index: 0,
                operation: operation as i32,
                seqval: seqval.clone(),
                values,
                ..Default::default()
            };
            match op {
                Op::Insert(id, n) => out.push(change(Operation::Insert, values(*id, *n))),
                Op::Update(id, n) => {
                    out.push(change(Operation::UpdateBefore, values(*id, n - 1)));
                    out.push(change(Operation::UpdateAfter, values(*id, *n)));
                }
                Op::Delete(id) => out.push(change(Operation::Delete, values(*id, 0))),
            }
        }
        applier
            .apply_fragment(TransactionFragment {
                commit_lsn: Lsn::from_u128(t as u128 + 1).0.to_vec(),
                commit_time_unix_micros: 0,
                changes: out,
                last_fragment: true,
                fragment_index: 0,
            })
            .await?;
        // Commit when "the stream has nothing ready" every 100 transactions.
        if t % 100 == 99 {
            applier.flush().await?;
        }
    }
    applier.flush().await?;
    let applied_secs = start.elapsed().as_secs_f64();

    // Ceiling: the same changes by bulk staged COPY + merge.
    let start = Instant::now();
    let tx = control.transaction().await?;
    tx.batch_execute(
        "CREATE TEMP TABLE s_ins (id int, name text, note text, qty int) ON COMMIT DROP;
         CREATE TEMP TABLE s_upd (id int, name text, note text, qty int) ON COMMIT DROP;
         CREATE TEMP TABLE s_del (id int) ON COMMIT DROP;",
    )
    .await?;
    let types = [Type::INT4, Type::TEXT, Type::TEXT, Type::INT4];
    for (stage, pick) in [("s_ins", 0u8), ("s_upd", 1)] {
        let sink = tx
            .copy_in(&format!("COPY {stage} FROM STDIN (FORMAT binary)"))
            .await?;
        let w = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(w);
        for t in 0..transactions {
            for op in workload(t) {
                let (id, n) = match (op, pick) {
                    (Op::Insert(id, n), 0) | (Op::Update(id, n), 1) => (id, n),
                    _ => continue,
                };
                w.as_mut()
                    .write(&[
                        &id,
                        &format!("name {n}"),
                        &format!("note for {id} at {n}"),
                        &n,
                    ])
                    .await?;
            }
        }
        w.finish().await?;
    }
    let sink = tx.copy_in("COPY s_del FROM STDIN (FORMAT binary)").await?;
    let w = BinaryCopyInWriter::new(sink, &[Type::INT4]);
    pin_mut!(w);
    for t in 0..transactions {
        for op in workload(t) {
            if let Op::Delete(id) = op {
                w.as_mut().write(&[&id]).await?;
            }
        }
    }
    w.finish().await?;
    tx.batch_execute(
        "INSERT INTO dbo.ceiling SELECT * FROM s_ins;
         UPDATE dbo.ceiling c SET name = u.name, note = u.note, qty = u.qty FROM s_upd u WHERE c.id = u.id;
         DELETE FROM dbo.ceiling c USING s_del d WHERE c.id = d.id;",
    )
    .await?;
    tx.commit().await?;
    let ceiling_secs = start.elapsed().as_secs_f64();

    let diff: i64 = control
        .query_one(
            "SELECT count(*) FROM ((SELECT * FROM dbo.applied EXCEPT SELECT * FROM dbo.ceiling)
                                   UNION ALL (SELECT * FROM dbo.ceiling EXCEPT SELECT * FROM dbo.applied)) d",
            &[],
        )
        .await?
        .get(0);
    println!("transactions: {transactions}, changes: {changes}, regrouping statements: {reorder}");
    println!(
        "applier (in order, checkpointed): {:>9.0} changes/s ({applied_secs:.2} s)",
        changes as f64 / applied_secs
    );
    println!(
        "staged COPY + merge ceiling     : {:>9.0} changes/s ({ceiling_secs:.2} s)",
        changes as f64 / ceiling_secs
    );
    println!(
        "applier / ceiling               : {:>8.0}%",
        ceiling_secs / applied_secs * 100.0
    );
    println!("rows differing                  : {diff}");
    Ok(())
}
