//! apply's real writes against a real PostgreSQL: DDL, binary COPY of every type, chunk and
//! change checkpoints across crashes, change ordering rules, op selection, conflict modes and
//! fragmented transactions.

mod common;

use common::*;
use dbsync_apply::pg::changes::{ApplyLimits, ChangeApplier, TableApply};
use dbsync_apply::pg::checkpoint::PgCheckpoints;
use dbsync_apply::pg::copy::ChunkWriter;
use dbsync_apply::pg::ddl::DdlOptions;
use dbsync_apply::plan::TableTarget;
use dbsync_apply::schema::{create_objects, post_load};
use dbsync_apply::ApplyError;
use dbsync_core::lsn::{Lsn, Position};
use dbsync_core::sink::{ChangeSink, CheckpointStore};
use dbsync_proto::v1::*;

fn lsn(n: u128) -> Vec<u8> {
    Lsn::from_u128(n).0.to_vec()
}

fn change(op: Operation, seq: u128, values: Vec<Value>) -> RowChange {
    RowChange {
        table_index: 0,
        operation: op as i32,
        seqval: lsn(seq),
        values,
        ..Default::default()
    }
}

fn txn(commit: u128, changes: Vec<RowChange>) -> TransactionFragment {
    TransactionFragment {
        commit_lsn: lsn(commit),
        commit_time_unix_micros: 1_700_000_000_000_000,
        changes,
        last_fragment: true,
        fragment_index: 0,
    }
}

fn item(id: i64, name: &str, note: Value, qty: i64) -> Vec<Value> {
    vec![int(id), text(name), note, int(qty)]
}

async fn applier(
    target: &TargetConnection,
    tables: Vec<Option<TableApply>>,
    limits: ApplyLimits,
) -> ChangeApplier {
    let client = dbsync_apply::pg::connect(target).await.unwrap();
    let start = PgCheckpoints {
        client: &client,
        task_id: TASK,
    }
    .load_position("g1")
    .await
    .unwrap();
    ChangeApplier::start(client, TASK, "g1", tables, start, limits)
        .await
        .unwrap()
}

#[tokio::test]
async fn ddl_for_every_type_and_constraint_runs_on_postgres() {
    let (_target, mut client) = fresh_db("ddl").await;
    // orders/customers from the golden tests plus a table with every type.
    let mut orders = all_types_plan();
    orders.source.as_mut().unwrap().columns[0].identity = Some(Identity {
        seed: 1,
        increment: 1,
        last_value: Some(41),
    });
    let customers = items_plan();
    let mut plan = orders.clone();
    let src = plan.source.as_mut().unwrap();
    src.columns.push(col("item_id", "int", 4, 10, 0, true));
    src.foreign_keys.push(ForeignKeySchema {
        name: "FK_AllTypes_Items".into(),
        columns: vec!["item_id".into()],
        referenced_table: customers.source.as_ref().unwrap().table.clone(),
        referenced_columns: vec!["id".into()],
        on_delete: "CASCADE".into(),
        on_update: "NO_ACTION".into(),
        ..Default::default()
    });
    src.checks.push(CheckSchema {
        name: "CK_AllTypes_Small".into(),
        definition: "([c_smallint]<(0))".into(),
        disabled: false,
    });
    src.indexes.push(IndexSchema {
        name: "IX_Filtered".into(),
        is_unique: true,
        columns: vec![IndexColumn {
            name: "c_int_missing".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    src.indexes.push(IndexSchema {
        name: "IX_Partial".into(),
        is_unique: true,
        columns: vec![
            IndexColumn {
                name: "c_bigint".into(),
                descending: true,
                ..Default::default()
            },
            IndexColumn {
                name: "c_date".into(),
                included: true,
                ..Default::default()
            },
        ],
        filter_definition: "([c_bit]=(1))".into(),
        ..Default::default()
    });
    let targets: Vec<TableTarget> = [plan, customers]
        .iter()
        .map(|p| TableTarget::from_plan(p).unwrap())
        .collect();
    let opts = DdlOptions::default();
    let seq = SequenceSchema {
        database: "shop".into(),
        schema: "dbo".into(),
        name: "OrderNo".into(),
        type_name: "bigint".into(),
        start_value: 1000,
        increment: 10,
        minimum_value: 1,
        maximum_value: 1_000_000,
        current_value: 1230,
        ..Default::default()
    };
    let notes = create_objects(
        &mut client,
        TASK,
        "precheck",
        &targets,
        &[seq],
        &opts,
        false,
    )
    .await
    .unwrap();
    assert!(notes.iter().any(|n| n.contains("IX_Filtered")), "{notes:?}");
    let fk: (bool,) = client
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_alltypes_items'",
            &[],
        )
        .await
        .map(|r| (r.get(0),))
        .unwrap();
    assert!(!fk.0, "FK is created NOT VALID before the load");
    // A second run (restart) is a no-op, not a conflict.
    create_objects(&mut client, TASK, "precheck", &targets, &[], &opts, false)
        .await
        .unwrap();
    post_load(&mut client, TASK, &targets, &opts, false)
        .await
        .unwrap();
    let validated: bool = client
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_alltypes_items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(validated, "FK is validated after the load");
    let index: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'alltypes_ix_partial'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(index, "CREATE UNIQUE INDEX alltypes_ix_partial ON dbo.alltypes USING btree (c_bigint DESC) INCLUDE (c_date) WHERE (c_bit = true)");
    // Identity restarts after the source's last value; tinyint keeps its domain; CHECK holds.
    let id: i32 = client
        .query_one(
            "INSERT INTO dbo.alltypes (c_smallint) VALUES (-1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 42);
    assert!(client
        .execute("INSERT INTO dbo.alltypes (c_tinyint) VALUES (256)", &[])
        .await
        .is_err());
    assert!(client
        .execute("INSERT INTO dbo.alltypes (c_smallint) VALUES (5)", &[])
        .await
        .is_err());
    // The sequence continues after the source's current value.
    let next: i64 = client
        .query_one("SELECT nextval('dbo.orderno')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 1240);
}

#[tokio::test]
async fn precheck_mode_refuses_existing_tables_before_writing_anything() {
    let (_target, mut client) = fresh_db("conflict").await;
    client
        .batch_execute("CREATE SCHEMA dbo; CREATE TABLE dbo.items (id int primary key)")
        .await
        .unwrap();
    let targets: Vec<TableTarget> = [all_types_plan(), items_plan()]
        .iter()
        .map(|p| TableTarget::from_plan(p).unwrap())
        .collect();
    let err = create_objects(
        &mut client,
        TASK,
        "precheck",
        &targets,
        &[],
        &DdlOptions::default(),
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ApplyError::ConflictingTables { .. }), "{err}");
    assert!(err.to_string().contains("dbo.items"), "{err}");
    let created: bool = client
        .query_one("SELECT to_regclass('dbo.alltypes') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!created, "nothing is created when a conflict is found");
}

#[tokio::test]
async fn binary_copy_writes_every_type_exactly() {
    let (target, mut client) = fresh_db("copy").await;
    let tables = create_tables(&mut client, &[all_types_plan()], "precheck").await;
    let table = &tables[0];
    let (row, expected) = extreme_row(1);
    let nulls: Vec<Value> = std::iter::once(int(2))
        .chain((1..row.len()).map(|_| null()))
        .collect();
    let mut data = dbsync_apply::pg::connect(&target).await.unwrap();
    let mut w = ChunkWriter::begin(&mut data, table, "", 0, false)
        .await
        .unwrap();
    w.put_row(&row).unwrap();
    w.put_row(&nulls).unwrap();
    let (rows, _) = w.commit().await.unwrap();
    assert_eq!(rows, 2);
    let names: Vec<String> = all_types_plan()
        .source
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let got = client
        .query_one(
            &format!(
                "SELECT {} FROM dbo.alltypes WHERE id = 1",
                names
                    .iter()
                    .map(|n| format!("{n}::text"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
        )
        .await
        .unwrap();
    for (i, name) in names.iter().enumerate().skip(1) {
        let value: String = got.get(i);
        if name == "c_text" {
            assert_eq!(value.len(), 100_000);
        } else {
            assert_eq!(value, expected[i], "column {name}");
        }
    }
    let null_count: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM dbo.alltypes WHERE id = 2 AND {}",
                names[1..]
                    .iter()
                    .map(|n| format!("{n} IS NULL"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(null_count, 1);
    // A value PostgreSQL cannot store is refused with the column named.
    let mut w = ChunkWriter::begin(&mut data, table, "", 1, false)
        .await
        .unwrap();
    let mut bad = row.clone();
    bad[16] = text("a\0b");
    let err = w.put_row(&bad).unwrap_err();
    assert!(
        err.to_string().contains("c_nvarchar") && err.to_string().contains("NUL"),
        "{err}"
    );
}

#[tokio::test]
async fn a_chunk_is_loaded_exactly_once_across_a_crash() {
    let (target, mut client) = fresh_db("chunk").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let table = &tables[0];
    let store = PgCheckpoints {
        client: &client,
        task_id: TASK,
    };
    let chunks: Vec<Chunk> = (0..2)
        .map(|i| Chunk {
            index: i,
            ..Default::default()
        })
        .collect();
    store
        .save_chunk_plan(&table.target.source_name, &chunks)
        .await
        .unwrap();
    let mut data = dbsync_apply::pg::connect(&target).await.unwrap();
    // Crash in the middle of chunk 0: rows were sent, the commit never happened.
    {
        let mut w = ChunkWriter::begin(&mut data, table, TASK, 0, false)
            .await
            .unwrap();
        for i in 0..1000 {
            w.put_row(&item(i, "a", null(), i)).unwrap();
            w.maybe_flush().await.unwrap();
        }
        drop(w);
    }
    drop(data);
    assert!(items(&client).await.is_empty());
    let plan = store
        .load_chunks(&table.target.source_name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plan.iter().filter(|(_, done)| *done).count(), 0);
    // Resume: chunk 0 again, then chunk 0 a second time (a duplicate worker) is refused.
    let mut data = dbsync_apply::pg::connect(&target).await.unwrap();
    let mut w = ChunkWriter::begin(&mut data, table, TASK, 0, false)
        .await
        .unwrap();
    for i in 0..1000 {
        w.put_row(&item(i, "a", null(), i)).unwrap();
    }
    w.commit().await.unwrap();
    let mut w = ChunkWriter::begin(&mut data, table, TASK, 0, false)
        .await
        .unwrap();
    w.put_row(&item(5000, "dup", null(), 0)).unwrap();
    assert!(w.commit().await.is_err());
    assert_eq!(items(&client).await.len(), 1000);
    let plan = store
        .load_chunks(&table.target.source_name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        plan.iter()
            .map(|(c, done)| (c.index, *done))
            .collect::<Vec<_>>(),
        vec![(0, true), (1, false)]
    );
}

#[tokio::test]
async fn change_transactions_apply_exactly_once_across_a_crash() {
    let (target, mut client) = fresh_db("exactly_once").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let t = || vec![Some(TableApply::new(tables[0].clone(), None, false))];
    let t1 = txn(
        10,
        (1..=3)
            .map(|i| change(Operation::Insert, i, item(i as i64, "one", null(), 1)))
            .collect(),
    );
    let t2 = txn(
        20,
        vec![
            change(Operation::Insert, 1, item(4, "two", null(), 2)),
            change(Operation::Delete, 2, item(1, "one", null(), 1)),
        ],
    );

    let mut a = applier(&target, t(), ApplyLimits::default()).await;
    a.apply_fragment(t1.clone()).await.unwrap();
    assert_eq!(
        a.flush().await.unwrap(),
        Some(Position::end_of(Lsn::from_u128(10)))
    );
    // Crash after T2 was written but before its commit.
    a.apply_fragment(t2.clone()).await.unwrap();
    drop(a);
    assert_eq!(
        items(&client).await,
        vec!["1|one|NULL|1", "2|one|NULL|1", "3|one|NULL|1"]
    );

    // Restart: the position is T1's; capture resends T1 (a redelivery) and T2.
    let mut a = applier(&target, t(), ApplyLimits::default()).await;
    assert_eq!(a.committed(), Some(Position::end_of(Lsn::from_u128(10))));
    a.apply_fragment(t1).await.unwrap();
    a.apply_fragment(t2.clone()).await.unwrap();
    a.flush().await.unwrap();
    // Crash right after the commit: nothing is applied twice on restart.
    drop(a);
    let mut a = applier(&target, t(), ApplyLimits::default()).await;
    a.apply_fragment(t2).await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(
        items(&client).await,
        vec!["2|one|NULL|1", "3|one|NULL|1", "4|two|NULL|2"]
    );
    let changes: i64 = client
        .query_one("SELECT changes_applied FROM dbsync.stream_position", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(changes, 5);
}

#[tokio::test]
async fn primary_key_changes_delete_before_insert_and_before_images_give_the_key() {
    let (target, mut client) = fresh_db("pk_change").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        ApplyLimits::default(),
    )
    .await;
    a.apply_fragment(txn(
        10,
        vec![
            change(Operation::Insert, 1, item(1, "a", null(), 1)),
            change(Operation::Insert, 2, item(2, "b", null(), 2)),
        ],
    ))
    .await
    .unwrap();
    // Swap keys: 1 → 3 and 2 → 1, each as delete + insert with one seqval (strict inserts:
    // a wrong order would hit the primary key).
    a.apply_fragment(txn(
        20,
        vec![
            change(Operation::Delete, 5, item(1, "a", null(), 1)),
            change(Operation::Insert, 5, item(3, "a", null(), 1)),
            change(Operation::Delete, 6, item(2, "b", null(), 2)),
            change(Operation::Insert, 6, item(1, "b", null(), 2)),
            // An update whose before image carries the key.
            change(Operation::UpdateBefore, 7, item(3, "a", null(), 1)),
            change(Operation::UpdateAfter, 7, item(3, "a2", null(), 10)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(items(&client).await, vec!["1|b|NULL|2", "3|a2|NULL|10"]);
}

#[tokio::test]
async fn unchanged_lob_values_are_never_written_and_lob_only_updates_are() {
    let (target, mut client) = fresh_db("lob").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        ApplyLimits::default(),
    )
    .await;
    let big = "L".repeat(50_000);
    a.apply_fragment(txn(
        10,
        vec![change(Operation::Insert, 1, item(1, "a", text(&big), 1))],
    ))
    .await
    .unwrap();
    a.apply_fragment(txn(
        20,
        vec![
            change(Operation::UpdateBefore, 2, item(1, "a", null(), 1)),
            change(Operation::UpdateAfter, 2, item(1, "a", unchanged(), 7)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    let (note, qty): (String, i32) = client
        .query_one("SELECT note, qty FROM dbo.items", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((note.len(), qty), (50_000, 7));
    // An update of the LOB alone.
    a.apply_fragment(txn(
        30,
        vec![
            change(Operation::UpdateBefore, 3, item(1, "a", null(), 7)),
            change(Operation::UpdateAfter, 3, item(1, "a", text("small"), 7)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(items(&client).await, vec!["1|a|small|7"]);
}

#[tokio::test]
async fn operation_selection_skips_unwanted_changes() {
    let (target, mut client) = fresh_db("ops").await;
    let mut plan = items_plan();
    plan.sync_deletes = false;
    plan.sync_updates = false;
    let tables = create_tables(&mut client, &[plan], "precheck").await;
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        ApplyLimits::default(),
    )
    .await;
    a.apply_fragment(txn(
        10,
        vec![
            change(Operation::Insert, 1, item(1, "a", null(), 1)),
            change(Operation::UpdateBefore, 2, item(1, "a", null(), 1)),
            change(Operation::UpdateAfter, 2, item(1, "changed", null(), 9)),
            change(Operation::Insert, 3, item(2, "b", null(), 2)),
            change(Operation::Delete, 4, item(2, "b", null(), 2)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(items(&client).await, vec!["1|a|NULL|1", "2|b|NULL|2"]);
}

#[tokio::test]
async fn ignore_mode_keeps_rows_on_full_sync_and_overwrites_on_incremental() {
    let (target, mut client) = fresh_db("ignore").await;
    client
        .batch_execute(
            "CREATE SCHEMA dbo;
             CREATE TABLE dbo.items (id int primary key, name varchar(100), note text, qty int);
             INSERT INTO dbo.items VALUES (1, 'target', NULL, 0)",
        )
        .await
        .unwrap();
    let tables = create_tables(&mut client, &[items_plan()], "ignore").await;
    let mut data = dbsync_apply::pg::connect(&target).await.unwrap();
    let mut w = ChunkWriter::begin(&mut data, &tables[0], "", 0, true)
        .await
        .unwrap();
    w.put_row(&item(1, "source", null(), 1)).unwrap();
    w.put_row(&item(2, "source", null(), 2)).unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        items(&client).await,
        vec!["1|target|NULL|0", "2|source|NULL|2"]
    );
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, true))],
        ApplyLimits::default(),
    )
    .await;
    a.apply_fragment(txn(
        10,
        vec![change(Operation::Insert, 1, item(1, "changed", null(), 5))],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(
        items(&client).await,
        vec!["1|changed|NULL|5", "2|source|NULL|2"]
    );
}

#[tokio::test]
async fn changes_inside_the_snapshot_window_converge_idempotently() {
    let (target, mut client) = fresh_db("catchup").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    // The snapshot (ended at LSN 15) already holds row 1 as of LSN 12.
    client
        .execute("INSERT INTO dbo.items VALUES (1, 'v12', NULL, 12)", &[])
        .await
        .unwrap();
    let apply = TableApply::new(tables[0].clone(), Some(Lsn::from_u128(15)), false);
    let mut a = applier(&target, vec![Some(apply)], ApplyLimits::default()).await;
    a.apply_fragment(txn(
        11,
        vec![change(Operation::Insert, 1, item(1, "v11", null(), 11))],
    ))
    .await
    .unwrap();
    a.apply_fragment(txn(
        12,
        vec![change(
            Operation::UpdateAfter,
            1,
            item(1, "v12", null(), 12),
        )],
    ))
    .await
    .unwrap();
    a.apply_fragment(txn(
        16,
        vec![change(Operation::Insert, 1, item(2, "v16", null(), 16))],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(items(&client).await, vec!["1|v12|NULL|12", "2|v16|NULL|16"]);
    // After the window, a duplicate insert is a divergence and fails naming the table.
    let err = a
        .apply_fragment(txn(
            17,
            vec![change(Operation::Insert, 1, item(2, "dup", null(), 17))],
        ))
        .await;
    let err = match err {
        Ok(_) => a.flush().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("dbo.items") && err.to_string().contains("23505"),
        "{err}"
    );
}

#[tokio::test]
async fn a_large_transaction_streams_in_fragments_and_is_invisible_until_its_end() {
    let (target, mut client) = fresh_db("large").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let limits = ApplyLimits {
        batch_rows: 500,
        batch_bytes: 64 << 10,
        commit_changes: 1000,
    };
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        limits,
    )
    .await;
    let fragments = 20;
    for f in 0..fragments {
        let changes = (0..1000).map(|i| {
            let id = f * 1000 + i;
            change(
                Operation::Insert,
                id as u128 + 1,
                item(id, "big", null(), f),
            )
        });
        let fragment = TransactionFragment {
            commit_lsn: lsn(100),
            commit_time_unix_micros: 1,
            changes: changes.collect(),
            last_fragment: f == fragments - 1,
            fragment_index: f as u32,
        };
        let committed = a.apply_fragment(fragment).await.unwrap();
        if f < fragments - 1 {
            assert_eq!(committed, None);
            // Flushing mid-transaction sends rows but commits nothing.
            assert_eq!(a.flush().await.unwrap(), None);
            let visible: i64 = client
                .query_one("SELECT count(*) FROM dbo.items", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(visible, 0, "fragment {f} must not be visible");
            assert!(client
                .query_opt("SELECT 1 FROM dbsync.stream_position", &[])
                .await
                .unwrap()
                .is_none());
        }
    }
    a.flush().await.unwrap();
    let visible: i64 = client
        .query_one("SELECT count(*) FROM dbo.items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, 20_000);
    assert_eq!(a.committed(), Some(Position::end_of(Lsn::from_u128(100))));
}

#[tokio::test]
async fn idle_progress_advances_the_stored_position() {
    let (target, mut client) = fresh_db("progress").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        ApplyLimits::default(),
    )
    .await;
    a.advance(Lsn::from_u128(50), 123).await.unwrap();
    a.flush().await.unwrap();
    let stored = PgCheckpoints {
        client: &client,
        task_id: TASK,
    }
    .load_position("g1")
    .await
    .unwrap();
    assert_eq!(stored, Some(Position::end_of(Lsn::from_u128(49))));
}

#[tokio::test]
async fn regrouped_statements_end_in_the_same_state_as_change_order() {
    let (target, mut client) = fresh_db("regroup").await;
    let tables = create_tables(&mut client, &[items_plan()], "precheck").await;
    let mut apply = TableApply::new(tables[0].clone(), None, false);
    apply.reorder = true;
    let limits = ApplyLimits {
        batch_rows: 7,
        batch_bytes: 1 << 20,
        commit_changes: 50,
    };
    let mut a = applier(&target, vec![Some(apply)], limits).await;
    // Seeded workload over 40 keys: inserts, updates, deletes and key changes, replayed on a
    // model in change order.
    let mut model = std::collections::BTreeMap::<i64, (String, i64)>::new();
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for t in 0..400u128 {
        let mut changes = Vec::new();
        for s in 0..(1 + next(8)) {
            let seq = s as u128 + 1;
            let id = next(40) as i64;
            let n = (t as i64) * 10 + s as i64;
            match (model.get(&id).cloned(), next(4)) {
                (None, _) => {
                    changes.push(change(
                        Operation::Insert,
                        seq,
                        item(id, &format!("v{n}"), null(), n),
                    ));
                    model.insert(id, (format!("v{n}"), n));
                }
                (Some((name, q)), 0) => {
                    changes.push(change(Operation::Delete, seq, item(id, &name, null(), q)));
                    model.remove(&id);
                }
                (Some((name, q)), 1) => {
                    let new_id = 100 + next(40) as i64;
                    if model.contains_key(&new_id) {
                        continue;
                    }
                    changes.push(change(Operation::Delete, seq, item(id, &name, null(), q)));
                    changes.push(change(
                        Operation::Insert,
                        seq,
                        item(new_id, &name, null(), q),
                    ));
                    model.remove(&id);
                    model.insert(new_id, (name, q));
                }
                (Some((name, q)), _) => {
                    changes.push(change(
                        Operation::UpdateBefore,
                        seq,
                        item(id, &name, null(), q),
                    ));
                    changes.push(change(
                        Operation::UpdateAfter,
                        seq,
                        item(id, &format!("u{n}"), unchanged(), n),
                    ));
                    model.insert(id, (format!("u{n}"), n));
                }
            }
        }
        a.apply_fragment(txn(t + 1, changes)).await.unwrap();
        if t % 37 == 0 {
            a.flush().await.unwrap();
        }
    }
    a.flush().await.unwrap();
    let expected: Vec<String> = model
        .iter()
        .map(|(id, (name, q))| format!("{id}|{name}|NULL|{q}"))
        .collect();
    assert_eq!(items(&client).await, expected);
}

#[tokio::test]
async fn row_filters_insert_rows_entering_and_delete_rows_leaving() {
    let (target, mut client) = fresh_db("filter").await;
    let mut plan = items_plan();
    plan.where_filter = "([qty]>=(10))".into();
    let tables = create_tables(&mut client, &[plan], "precheck").await;
    dbsync_apply::pg::changes::check_filter(&tables[0]).unwrap();
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        ApplyLimits::default(),
    )
    .await;
    a.apply_fragment(txn(
        10,
        vec![
            change(Operation::Insert, 1, item(1, "low", null(), 5)),
            change(Operation::Insert, 2, item(2, "high", null(), 20)),
            change(Operation::Insert, 3, item(3, "high", null(), 30)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(
        items(&client).await,
        vec!["2|high|NULL|20", "3|high|NULL|30"]
    );
    a.apply_fragment(txn(
        20,
        vec![
            // 1 enters the filter, 2 leaves it, 3 stays inside.
            change(Operation::UpdateBefore, 4, item(1, "low", null(), 5)),
            change(Operation::UpdateAfter, 4, item(1, "entered", null(), 15)),
            change(Operation::UpdateBefore, 5, item(2, "high", null(), 20)),
            change(Operation::UpdateAfter, 5, item(2, "left", null(), 2)),
            change(Operation::UpdateBefore, 6, item(3, "high", null(), 30)),
            change(Operation::UpdateAfter, 6, item(3, "still", null(), 31)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    assert_eq!(
        items(&client).await,
        vec!["1|entered|NULL|15", "3|still|NULL|31"]
    );
    // A filter that does not translate is refused up front, naming the table.
    let mut bad = items_plan();
    bad.where_filter = "(dbo.f([qty])=(1))".into();
    let mut t = (*tables[0]).clone();
    t.target.where_filter = bad.where_filter.clone();
    let err = dbsync_apply::pg::changes::check_filter(&t).unwrap_err();
    assert!(
        err.to_string().contains("shop.dbo.Items") && err.to_string().contains("row filter"),
        "{err}"
    );
}

#[tokio::test]
async fn parallel_groups_create_tables_in_one_schema_without_racing() {
    let (target, _client) = fresh_db("ddl_race").await;
    // Eight groups, each one table in schema dbo, created at the same moment.
    let mut runs = Vec::new();
    for i in 0..8 {
        let target = target.clone();
        runs.push(tokio::spawn(async move {
            let mut client = dbsync_apply::pg::connect_plain(&target).await.unwrap();
            let plan = table_plan(
                &format!("T{i}"),
                vec![col("id", "int", 4, 10, 0, false)],
                &["id"],
            );
            let t = TableTarget::from_plan(&plan).unwrap();
            create_objects(
                &mut client,
                TASK,
                "precheck",
                &[t],
                &[],
                &DdlOptions::default(),
                false,
            )
            .await
        }));
    }
    for r in runs {
        r.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn char_keys_are_matched_in_full_by_updates_and_deletes() {
    let (target, mut client) = fresh_db("char_key").await;
    let plan = table_plan(
        "Stock",
        vec![
            col("wh", "char", 4, 0, 0, false),
            col("id", "int", 4, 10, 0, false),
            col("qty", "int", 4, 10, 0, true),
        ],
        &["wh", "id"],
    );
    let tables = create_tables(&mut client, &[plan], "precheck").await;
    let row = |wh: &str, id: i64, q: i64| vec![text(wh), int(id), int(q)];
    let mut a = applier(
        &target,
        vec![Some(TableApply::new(tables[0].clone(), None, false))],
        ApplyLimits::default(),
    )
    .await;
    a.apply_fragment(txn(
        10,
        vec![
            change(Operation::Insert, 1, row("AMS1", 1, 5)),
            change(Operation::Insert, 2, row("AMS2", 1, 6)),
        ],
    ))
    .await
    .unwrap();
    a.apply_fragment(txn(
        20,
        vec![
            change(Operation::UpdateBefore, 3, row("AMS1", 1, 5)),
            change(Operation::UpdateAfter, 3, row("AMS1", 1, 50)),
            change(Operation::Delete, 4, row("AMS2", 1, 6)),
        ],
    ))
    .await
    .unwrap();
    a.flush().await.unwrap();
    let rows: Vec<(String, i32)> = client
        .query("SELECT wh::text, qty FROM dbo.stock ORDER BY wh", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("AMS1".to_string(), 50)]);
}
