//! The capture service against the SQL Server stand-in over real TDS (tiberius), through its
//! gRPC API: catalog, chunked snapshot reads, CDC setup and the change stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_capture::CancellationToken;
use dbsync_proto::v1::{
    change_message::Kind as Msg, value::Kind, ChangeMessage, EnableCdcRequest, GetMaxLsnRequest,
    KeyBound, ObjectSelection, Operation, PlanChunksRequest, ReadChunkRequest, ReadRowsRequest,
    ReadSchemaRequest, SourcePrecheckRequest, StreamChangesRequest, TableRef, TableSchema, Value,
};
use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};

mod common;
use common::{env, gauges, Env};

/// An [`env`] over the sample database `shop` with `rows` rows per ordinary table.
async fn sample_env(rows: usize) -> Env {
    let mut env = env("scratch", "").await;
    dbsync_sqlserver_sim::sample::load_sample(&env.engine, rows).expect("sample database");
    env.source.database = "shop".into();
    env
}

impl Env {
    fn sql(&self, db: &str, sql: &str) {
        self.engine
            .run(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A change stream of `tables` from `from_lsn` (empty: from now), polled every 20 ms.
    fn stream_request(&self, tables: &[TableSchema], from_lsn: Vec<u8>) -> StreamChangesRequest {
        StreamChangesRequest {
            source: Some(self.source.clone()),
            task_id: "t".into(),
            tables: tables.to_vec(),
            from_lsn,
            poll_interval_ms: 20,
            ..Default::default()
        }
    }

    /// Removes what dbsync installed on the source; returns the removed objects.
    async fn cleanup_source(&mut self) -> Vec<String> {
        self.client
            .cleanup_source(dbsync_proto::v1::CleanupSourceRequest {
                source: Some(self.source.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .removed
    }

    async fn schema(&mut self, db: &str) -> Vec<TableSchema> {
        self.client
            .read_schema(ReadSchemaRequest {
                source: Some(self.source.clone()),
                selection: Some(ObjectSelection {
                    databases: vec![db.into()],
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .tables
    }

    async fn table(&mut self, db: &str, name: &str) -> TableSchema {
        self.schema(db)
            .await
            .into_iter()
            .find(|t| t.table.as_ref().unwrap().name == name)
            .expect("table in schema")
    }

    async fn read_all_chunks(
        &mut self,
        table: &TableSchema,
        target: u64,
        batch_rows: u32,
    ) -> (usize, Vec<Vec<Value>>, usize) {
        let chunks = self
            .client
            .plan_chunks(PlanChunksRequest {
                source: Some(self.source.clone()),
                table: Some(table.clone()),
                target_rows: target,
                where_filter: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .chunks;
        let mut rows = Vec::new();
        let mut batches = 0;
        for chunk in &chunks {
            let mut s = self
                .client
                .read_chunk(ReadChunkRequest {
                    source: Some(self.source.clone()),
                    task_id: "t".into(),
                    table: Some(table.clone()),
                    chunk: Some(chunk.clone()),
                    max_batch_rows: batch_rows,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            while let Some(b) = s.message().await.unwrap() {
                assert!(b.rows.len() <= batch_rows as usize);
                batches += 1;
                rows.extend(b.rows.into_iter().map(|r| r.values));
            }
        }
        (chunks.len(), rows, batches)
    }
}

fn int(v: &Value) -> i64 {
    match v.kind {
        Some(Kind::Int(i)) => i,
        ref other => panic!("not an int: {other:?}"),
    }
}

#[tokio::test]
async fn schema_reports_columns_keys_indexes_and_foreign_keys() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.customers (id int IDENTITY(1,1) NOT NULL PRIMARY KEY, email nvarchar(200) NOT NULL, \
           note nvarchar(max) NULL, balance money NOT NULL DEFAULT 0);
         CREATE TABLE dbo.orders (customer_id int NOT NULL, line int NOT NULL, total decimal(18,2) NULL, \
           CONSTRAINT pk_orders PRIMARY KEY (customer_id, line), \
           CONSTRAINT fk_orders_customers FOREIGN KEY (customer_id) REFERENCES dbo.customers (id) ON DELETE CASCADE);",
    )
    .await;
    let customers = env.table("shop", "customers").await;
    assert_eq!(customers.key_columns, vec!["id"]);
    assert_eq!(customers.key_source, "primary_key");
    let names: Vec<_> = customers
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str(), c.max_length))
        .collect();
    assert_eq!(
        names,
        vec![
            ("id", "int", 4),
            ("email", "nvarchar", 400),
            ("note", "nvarchar", -1),
            ("balance", "money", 8)
        ]
    );
    assert!(customers.columns[0].identity.is_some());
    assert!(!customers.columns[3].default_definition.is_empty());
    let orders = env.table("shop", "orders").await;
    assert_eq!(orders.key_columns, vec!["customer_id", "line"]);
    assert_eq!(orders.foreign_keys.len(), 1);
    assert_eq!(orders.foreign_keys[0].on_delete, "CASCADE");
    assert_eq!(
        orders.foreign_keys[0]
            .referenced_table
            .as_ref()
            .unwrap()
            .name,
        "customers"
    );
}

#[tokio::test]
async fn chunks_of_a_composite_key_cover_every_row_once_in_key_order() {
    let mut env = env("shop", "CREATE TABLE dbo.lines (a int NOT NULL, b nvarchar(10) NOT NULL, v bigint NULL, PRIMARY KEY (a, b));").await;
    let mut values = Vec::new();
    for a in 0..50 {
        for b in ["x", "y", "z", "w"] {
            values.push(format!("({a}, N'{b}', {})", a * 10));
        }
    }
    env.sql(
        "shop",
        &format!(
            "INSERT INTO dbo.lines (a, b, v) VALUES {}",
            values.join(", ")
        ),
    );
    let table = env.table("shop", "lines").await;
    let (chunks, rows, batches) = env.read_all_chunks(&table, 30, 7).await;
    assert_eq!(rows.len(), 200);
    assert_eq!(chunks, 200 / 30 + 1);
    assert!(batches >= 200 / 7);
    let keys: Vec<(i64, String)> = rows
        .iter()
        .map(|r| {
            (
                int(&r[0]),
                match &r[1].kind {
                    Some(Kind::Text(s)) => s.clone(),
                    _ => panic!(),
                },
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200, "every row exactly once");
    assert_eq!(keys, sorted, "rows arrive in key order");
}

#[tokio::test]
async fn read_rows_returns_exactly_the_requested_keys() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, v nvarchar(20) NULL);",
    )
    .await;
    env.sql(
        "shop",
        "INSERT INTO dbo.t (id, v) VALUES (1, N'a'), (2, N'b'), (3, N'c'), (4, NULL)",
    );
    let table = env.table("shop", "t").await;
    let key = |i: i64| KeyBound {
        values: vec![Value {
            kind: Some(Kind::Int(i)),
        }],
    };
    let mut s = env
        .client
        .read_rows(ReadRowsRequest {
            source: Some(env.source.clone()),
            table: Some(table),
            keys: vec![key(4), key(2), key(9)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(b) = s.message().await.unwrap() {
        ids.extend(b.rows.iter().map(|r| int(&r.values[0])));
    }
    assert_eq!(ids, vec![2, 4]);
}

/// Collects change messages until a Progress at or beyond `until` (the max LSN after the
/// writes) arrives.
async fn changes_until(
    env: &mut Env,
    req: StreamChangesRequest,
    until: Vec<u8>,
) -> Vec<ChangeMessage> {
    let mut s = env.client.stream_changes(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = tokio::time::timeout_at(deadline.into(), s.message())
            .await
            .expect("progress in time")
            .unwrap()
            .unwrap();
        let done = matches!(&m.kind, Some(Msg::Progress(p)) if p.lsn > until);
        out.push(m);
        if done {
            return out;
        }
    }
}

async fn max_lsn(env: &mut Env, db: &str) -> Vec<u8> {
    env.client
        .get_max_lsn(GetMaxLsnRequest {
            source: Some(env.source.clone()),
            database: db.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .lsn
}

fn fragments(messages: &[ChangeMessage]) -> Vec<&dbsync_proto::v1::TransactionFragment> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(Msg::Transaction(t)) => Some(t),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn change_stream_orders_transactions_by_commit_and_splits_key_updates_delete_first() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.a (id int NOT NULL PRIMARY KEY, v nvarchar(20) NULL, doc nvarchar(max) NULL);
         CREATE TABLE dbo.b (id int NOT NULL PRIMARY KEY, n int NULL);",
    )
    .await;
    let tables = env.schema("shop").await;
    let enabled = enable(&mut env, &tables, "", 0).await.unwrap();
    assert_eq!(enabled.tables.len(), 2);
    assert!(enabled.tables.iter().all(|t| t.created));
    // Idempotent: the second call reuses both instances.
    let again = enable(&mut env, &tables, "", 0).await.unwrap();
    assert!(again.tables.iter().all(|t| !t.created));

    let l0 = max_lsn(&mut env, "shop").await;
    env.sql(
        "shop",
        "INSERT INTO dbo.a (id, v, doc) VALUES (1, N'one', N'big document')",
    );
    // Interleaved: s1 begins and writes first, s2 commits first.
    let mut s1 = env.engine.session("shop").unwrap();
    s1.run("BEGIN TRAN; INSERT INTO dbo.b (id, n) VALUES (10, 1)")
        .unwrap();
    env.sql("shop", "INSERT INTO dbo.b (id, n) VALUES (20, 2)");
    s1.run("UPDATE dbo.a SET id = 2 WHERE id = 1; COMMIT")
        .unwrap();
    env.sql("shop", "UPDATE dbo.a SET v = N'two' WHERE id = 2");
    let end = max_lsn(&mut env, "shop").await;

    let tables = env.schema("shop").await;
    let req = env.stream_request(&tables, l0.clone());
    let messages = changes_until(&mut env, req, end).await;
    let frags = fragments(&messages);
    let table_of = |i: u32| tables[i as usize].table.as_ref().unwrap().name.clone();
    let summary: Vec<Vec<(String, i32)>> = frags
        .iter()
        .map(|f| {
            f.changes
                .iter()
                .map(|c| (table_of(c.table_index), c.operation))
                .collect()
        })
        .collect();
    let (d, i, ub, ua) = (
        Operation::Delete as i32,
        Operation::Insert as i32,
        Operation::UpdateBefore as i32,
        Operation::UpdateAfter as i32,
    );
    assert_eq!(
        summary,
        vec![
            vec![("a".to_string(), i)],
            vec![("b".to_string(), i)],
            // s1: its insert into b came first, then the key change of a as delete + insert
            vec![
                ("b".to_string(), i),
                ("a".to_string(), d),
                ("a".to_string(), i)
            ],
            vec![("a".to_string(), ub), ("a".to_string(), ua)],
        ]
    );
    assert!(frags.iter().all(|f| f.last_fragment));
    // __$command_id is the statement number within the transaction: s1's INSERT was its
    // first statement, the key-changing UPDATE (both halves) its second.
    let commands: Vec<i32> = frags[2].changes.iter().map(|c| c.command_id).collect();
    assert_eq!(commands, vec![1, 2, 2]);
    let commits: Vec<&Vec<u8>> = frags.iter().map(|f| &f.commit_lsn).collect();
    assert!(commits.windows(2).all(|w| w[0] < w[1]), "commit order");
    // Column lists precede the first change of each table.
    let first_columns = messages
        .iter()
        .position(|m| matches!(m.kind, Some(Msg::Columns(_))))
        .unwrap();
    let first_fragment = messages
        .iter()
        .position(|m| matches!(m.kind, Some(Msg::Transaction(_))))
        .unwrap();
    assert!(first_columns < first_fragment);
    // The last update did not touch the LOB: the before image's NULL for it is reported as
    // unchanged (never "set to NULL"); the after image carries the value.
    let last = frags.last().unwrap();
    assert_eq!(last.changes[0].values[2].kind, Some(Kind::Unchanged(true)));
    assert_eq!(
        last.changes[1].values[2].kind,
        Some(Kind::Text("big document".into()))
    );
    assert_eq!(
        last.changes[1].values[1].kind,
        Some(Kind::Text("two".into()))
    );
}

#[tokio::test]
async fn a_large_transaction_arrives_in_bounded_fragments_and_resumes_mid_transaction() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.big (id int NOT NULL PRIMARY KEY, v int NULL);",
    )
    .await;
    let tables = env.schema("shop").await;
    enable(&mut env, &tables, "", 0).await.unwrap();
    let l0 = max_lsn(&mut env, "shop").await;
    let values: Vec<String> = (0..2500).map(|i| format!("({i}, {i})")).collect();
    env.sql(
        "shop",
        &format!(
            "BEGIN TRAN; INSERT INTO dbo.big (id, v) VALUES {}; COMMIT",
            values.join(", ")
        ),
    );
    let end = max_lsn(&mut env, "shop").await;
    let base = StreamChangesRequest {
        max_batch_rows: 1000,
        ..env.stream_request(&tables, l0)
    };
    let messages = changes_until(&mut env, base.clone(), end.clone()).await;
    let frags = fragments(&messages);
    assert_eq!(
        frags.iter().map(|f| f.changes.len()).collect::<Vec<_>>(),
        vec![1000, 1000, 500]
    );
    assert_eq!(
        frags.iter().map(|f| f.last_fragment).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert_eq!(
        frags.iter().map(|f| f.fragment_index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let ids: Vec<i64> = frags
        .iter()
        .flat_map(|f| f.changes.iter().map(|c| int(&c.values[0])))
        .collect();
    assert_eq!(ids, (0..2500).collect::<Vec<_>>());

    // Resume after the 1000th change: the next change is the 1001st.
    let cut = &frags[0].changes[999];
    let resumed = StreamChangesRequest {
        from_lsn: frags[0].commit_lsn.clone(),
        from_seqval: cut.seqval.clone(),
        from_operation: cut.operation,
        ..base
    };
    let messages = changes_until(&mut env, resumed, end).await;
    let ids: Vec<i64> = fragments(&messages)
        .iter()
        .flat_map(|f| f.changes.iter().map(|c| int(&c.values[0])))
        .collect();
    assert_eq!(ids, (1000..2500).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_table_whose_changes_were_cleaned_up_needs_a_resnapshot_and_the_others_keep_streaming() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.kept (id int NOT NULL PRIMARY KEY); CREATE TABLE dbo.lost (id int NOT NULL PRIMARY KEY);",
    )
    .await;
    let tables = env.schema("shop").await;
    let enabled = enable(&mut env, &tables, "", 0).await.unwrap();
    let l0 = max_lsn(&mut env, "shop").await;
    env.sql("shop", "INSERT INTO dbo.lost (id) VALUES (1)");
    env.sql("shop", "INSERT INTO dbo.lost (id) VALUES (2)");
    let lost_instance = enabled
        .tables
        .iter()
        .find(|t| t.table.as_ref().unwrap().name == "lost")
        .unwrap()
        .capture_instance
        .clone();
    let watermark = max_lsn(&mut env, "shop").await;
    let cdc = Cdc::of(&env.engine).unwrap();
    cdc.cleanup_to_watermark(
        "shop",
        Some(&lost_instance),
        dbsync_sqlserver_sim::engine::lsn::Lsn::from_bytes(&watermark).unwrap(),
    )
    .unwrap();
    env.sql("shop", "INSERT INTO dbo.kept (id) VALUES (7)");
    let end = max_lsn(&mut env, "shop").await;
    let req = env.stream_request(&tables, l0);
    let messages = changes_until(&mut env, req, end).await;
    let lost_index = tables
        .iter()
        .position(|t| t.table.as_ref().unwrap().name == "lost")
        .unwrap() as u32;
    let resnap: Vec<_> = messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(Msg::NeedsResnapshot(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(resnap.len(), 1);
    assert_eq!(resnap[0].table_index, lost_index);
    let frags = fragments(&messages);
    assert_eq!(frags.len(), 1, "only the kept table's insert");
    assert_ne!(frags[0].changes[0].table_index, lost_index);
}

#[tokio::test]
async fn precheck_reports_items_for_the_source_and_each_table() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.heap (v int NULL); CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY);",
    )
    .await;
    let report = env
        .client
        .precheck(SourcePrecheckRequest {
            source: Some(env.source.clone()),
            tables: vec![
                TableRef {
                    database: "shop".into(),
                    schema: "dbo".into(),
                    name: "heap".into(),
                },
                TableRef {
                    database: "shop".into(),
                    schema: "dbo".into(),
                    name: "t".into(),
                },
                TableRef {
                    database: "shop".into(),
                    schema: "dbo".into(),
                    name: "missing".into(),
                },
            ],
            full_sync: true,
            incremental: true,
            incremental_mode: "cdc-polling".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let find = |id: &str, object: &str| {
        report
            .items
            .iter()
            .find(|i| i.id == id && i.object.ends_with(object))
            .map(|i| i.status)
    };
    assert_eq!(find("source.connectivity", ""), Some(1));
    assert_eq!(find("source.table_key", "heap"), Some(3));
    assert_eq!(find("source.table_key", ".t"), Some(1));
    assert_eq!(find("source.table_exists", "missing"), Some(3));
}

async fn enable(
    env: &mut Env,
    tables: &[TableSchema],
    mode: &str,
    limit: u32,
) -> Result<dbsync_proto::v1::EnableCdcResponse, tonic::Status> {
    env.client
        .enable_cdc(EnableCdcRequest {
            source: Some(env.source.clone()),
            tables: tables.iter().map(|t| t.table.clone().unwrap()).collect(),
            incremental_mode: mode.into(),
            max_cdc_tables: limit,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn hybrid_mode_follows_an_added_column_with_a_new_capture_instance() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, v int NULL);",
    )
    .await;
    let tables = env.schema("shop").await;
    let enabled = enable(&mut env, &tables, "hybrid", 0).await.unwrap();
    assert!(
        enabled.notes.iter().any(|n| n.contains("heartbeat")),
        "{:?}",
        enabled.notes
    );
    assert!(
        enabled.notes.iter().any(|n| n.contains("DDL trigger")),
        "{:?}",
        enabled.notes
    );
    let l0 = max_lsn(&mut env, "shop").await;
    env.sql("shop", "INSERT INTO dbo.t (id, v) VALUES (1, 10)");
    env.sql("shop", "ALTER TABLE dbo.t ADD w nvarchar(20) NULL");
    // Written after the DDL but before dbsync's new instance exists: the old instance has it
    // without w; it must still arrive in the new shape.
    env.sql(
        "shop",
        "INSERT INTO dbo.t (id, v, w) VALUES (3, 30, N'gap')",
    );
    let req = StreamChangesRequest {
        incremental_mode: "hybrid".into(),
        ..env.stream_request(&tables, l0)
    };
    let mut s = env.client.stream_changes(req).await.unwrap().into_inner();
    // The stream sees the DDL and creates the second instance; a later insert comes from it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut inserted = false;
    loop {
        let m = tokio::time::timeout_at(deadline.into(), s.message())
            .await
            .expect("messages in time")
            .unwrap()
            .unwrap();
        if !inserted && matches!(m.kind, Some(Msg::Progress(_))) {
            let instances = env
                .engine
                .run("shop", "SELECT capture_instance FROM cdc.change_tables")
                .unwrap();
            if instances[0].rows.len() == 4 {
                env.sql(
                    "shop",
                    "INSERT INTO dbo.t (id, v, w) VALUES (2, 20, N'new')",
                );
                inserted = true;
            }
        }
        let done = matches!(&m.kind, Some(Msg::Transaction(f)) if f.changes.iter().any(|c| c.values.get(2).is_some_and(|v| v.kind == Some(Kind::Text("new".into())))));
        seen.push(m);
        if done {
            break;
        }
    }
    let kinds: Vec<&str> = seen
        .iter()
        .filter_map(|m| match &m.kind {
            Some(Msg::Columns(_)) => Some("columns"),
            Some(Msg::Transaction(_)) => Some("transaction"),
            Some(Msg::SchemaChange(_)) => Some("schema"),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "columns",
            "transaction",
            "schema",
            "columns",
            "transaction",
            "columns",
            "transaction",
            "columns",
            "transaction"
        ]
    );
    let change = seen
        .iter()
        .find_map(|m| match &m.kind {
            Some(Msg::SchemaChange(c)) => Some(c),
            _ => None,
        })
        .unwrap();
    assert!(
        change.ddl_command.to_ascii_uppercase().contains("ADD"),
        "{}",
        change.ddl_command
    );
    let cols: Vec<_> = change
        .new_schema
        .as_ref()
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, vec!["id", "v", "w"]);
    let txs = fragments(&seen);
    // Within the DDL's transaction: the key and the added column of every row (a row changed
    // only in the new column before the new instance started is not in the old one).
    let backfill = &txs[1];
    assert_eq!(backfill.changes.len(), 2);
    assert!(backfill.changes.iter().all(|c| c.operation
        == dbsync_proto::v1::Operation::UpdateAfter as i32
        && c.values.len() == 2));
    let gap = &txs[2].changes[0];
    assert_eq!((int(&gap.values[0]), gap.values.len()), (3, 3));
    assert_eq!(
        gap.values[2].kind,
        Some(Kind::Text("gap".into())),
        "the added column is read from the row"
    );
    let columns: Vec<Vec<String>> = seen
        .iter()
        .filter_map(|m| match &m.kind {
            Some(Msg::Columns(c)) => Some(c.columns.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(columns[1], vec!["id", "w"]);
    assert_eq!(
        columns[2],
        vec!["id", "v", "w"],
        "old instance's rows after the DDL carry the new column"
    );
    let schema_at = seen
        .iter()
        .find_map(|m| match &m.kind {
            Some(Msg::SchemaChange(c)) => Some(c.lsn.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        schema_at == backfill.commit_lsn
            && schema_at < txs[2].commit_lsn
            && schema_at > txs[0].commit_lsn,
        "the change is placed at the DDL's LSN"
    );
    let last = *txs.last().unwrap();
    assert_eq!(
        last.changes[0].values[2].kind,
        Some(Kind::Text("new".into()))
    );
    drop(s);

    // A stream resumed past the switch retires the old instance dbsync created.
    let resumed = StreamChangesRequest {
        incremental_mode: "hybrid".into(),
        ..env.stream_request(&tables, last.commit_lsn.clone())
    };
    let mut s = env
        .client
        .stream_changes(resumed)
        .await
        .unwrap()
        .into_inner();
    let _ = s.message().await.unwrap().unwrap();
    let left = env
        .engine
        .run("shop", "SELECT capture_instance FROM cdc.change_tables")
        .unwrap();
    let names: Vec<String> = left[0].rows.iter().map(|r| format!("{:?}", r[0])).collect();
    assert_eq!(
        names.len(),
        3,
        "heartbeat, DDL history and the new instance: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("\"dbsync_dbo_t\"")),
        "{names:?}"
    );
    drop(s);

    // Removing dbsync removes everything it installed; later DDL still works.
    let removed = env.cleanup_source().await;
    assert!(
        removed
            .iter()
            .any(|r| r.contains("trigger dbsync_ddl_trigger")),
        "{removed:?}"
    );
    assert!(
        removed.iter().any(|r| r.contains("dbsync_ddl_history"))
            && removed.iter().any(|r| r.contains("dbsync_heartbeat")),
        "{removed:?}"
    );
    let left = env.engine.run("shop", "SELECT name FROM sys.triggers UNION ALL SELECT capture_instance FROM cdc.change_tables").unwrap();
    assert!(left[0].rows.is_empty(), "{:?}", left[0].rows);
    env.sql("shop", "ALTER TABLE dbo.t ADD z int NULL");
    let tables = env
        .engine
        .run(
            "shop",
            "SELECT name FROM sys.tables WHERE name LIKE 'dbsync%'",
        )
        .unwrap();
    assert!(tables[0].rows.is_empty(), "{:?}", tables[0].rows);
}

#[tokio::test]
async fn enable_cdc_respects_the_table_limit_and_cleanup_removes_only_dbsync_instances() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.mine (id int NOT NULL PRIMARY KEY); CREATE TABLE dbo.theirs (id int NOT NULL PRIMARY KEY);
         EXEC sys.sp_cdc_enable_db;
         EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'theirs', @role_name = NULL;",
    )
    .await;
    let tables = env.schema("shop").await;
    let err = enable(&mut env, &tables, "cdc-polling", 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("limit of 1"), "{}", err.message());
    let ok = enable(&mut env, &tables, "cdc-polling", 0).await.unwrap();
    let theirs = ok
        .tables
        .iter()
        .find(|t| t.table.as_ref().unwrap().name == "theirs")
        .unwrap();
    assert!(
        !theirs.created,
        "the existing instance covering all columns is reused"
    );
    assert_eq!(theirs.capture_instance, "dbo_theirs");
    let removed = env.cleanup_source().await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].contains("dbsync_dbo_mine"));
    let left = env
        .engine
        .run("shop", "SELECT capture_instance FROM cdc.change_tables")
        .unwrap();
    assert_eq!(left[0].rows.len(), 1);
}

#[tokio::test]
async fn chunk_reads_obey_the_rows_per_second_throttle() {
    let mut env = env("shop", "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY);").await;
    let values: Vec<String> = (0..1000).map(|i| format!("({i})")).collect();
    env.sql(
        "shop",
        &format!("INSERT INTO dbo.t (id) VALUES {}", values.join(", ")),
    );
    let table = env.table("shop", "t").await;
    let start = Instant::now();
    let mut s = env
        .client
        .read_chunk(ReadChunkRequest {
            source: Some(env.source.clone()),
            task_id: "throttled".into(),
            table: Some(table),
            chunk: Some(Default::default()),
            max_batch_rows: 100,
            throttle: Some(dbsync_proto::v1::Throttle {
                rows_per_second: 500.0,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    while let Some(b) = s.message().await.unwrap() {
        rows += b.rows.len();
    }
    assert_eq!(rows, 1000);
    // 500 rows of burst, then 500 more at 500 rows/s.
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn an_idle_source_keeps_progress_moving_and_agent_captured_changes_arrive() {
    use dbsync_sqlserver_sim::engine::cdc::CaptureMode;
    let mut env = env("shop", "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY);").await;
    let tables = env.schema("shop").await;
    enable(&mut env, &tables, "cdc-polling", 0).await.unwrap();
    let cdc = Cdc::of(&env.engine).unwrap();
    cdc.set_config(CdcConfig {
        mode: CaptureMode::Agent,
        agent_poll_override: Some(Duration::from_millis(50)),
        ..cdc.config()
    });
    let l0 = max_lsn(&mut env, "shop").await;
    let req = StreamChangesRequest {
        heartbeat_interval_ms: 100,
        ..env.stream_request(&tables, l0)
    };
    let mut s = env.client.stream_changes(req).await.unwrap().into_inner();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut progress: Vec<Vec<u8>> = Vec::new();
    // Idle: the capture job's idle mapping rows move the max LSN, and the stream reports it.
    while progress.len() < 3 {
        let m = tokio::time::timeout_at(deadline.into(), s.message())
            .await
            .expect("progress in time")
            .unwrap()
            .unwrap();
        match m.kind {
            Some(Msg::Progress(p)) => {
                if progress.last().is_none_or(|last| p.lsn > *last) {
                    progress.push(p.lsn);
                }
            }
            other => panic!("only progress while idle, got {other:?}"),
        }
    }
    env.sql("shop", "INSERT INTO dbo.t (id) VALUES (42)");
    let inserted = loop {
        let m = tokio::time::timeout_at(deadline.into(), s.message())
            .await
            .expect("the change in time")
            .unwrap()
            .unwrap();
        if let Some(Msg::Transaction(f)) = m.kind {
            break f;
        }
    };
    assert_eq!(int(&inserted.changes[0].values[0]), 42);
    // Progress said everything below its LSN was delivered: the new commit is at or above it.
    assert!(inserted.commit_lsn >= *progress.last().unwrap());
    assert!(inserted.commit_time_unix_micros > 0);
}

#[tokio::test]
async fn every_sample_table_is_read_completely_with_every_type() {
    let mut env = sample_env(40).await;
    let tables = env.schema("shop").await;
    assert!(tables.len() >= 10, "{} tables", tables.len());
    let mut checked = 0;
    for table in &tables {
        let name = table.table.as_ref().unwrap();
        let count = env
            .engine
            .run(
                "shop",
                &format!("SELECT COUNT_BIG(*) FROM [{}].[{}]", name.schema, name.name),
            )
            .unwrap();
        let expected = match &count[0].rows[0][0] {
            dbsync_sqlserver_sim::types::Value::BigInt(n) => *n as usize,
            other => panic!("{other:?}"),
        };
        let (_, rows, _) = env.read_all_chunks(table, 7, 5).await;
        assert_eq!(rows.len(), expected, "{}.{}", name.schema, name.name);
        assert!(rows.iter().all(|r| r.len() == table.columns.len()));
        checked += 1;
        // money arrives exact, as decimal with scale 4
        for (i, c) in table.columns.iter().enumerate() {
            if c.type_name == "money" {
                assert!(
                    rows.iter().all(|r| match &r[i].kind {
                        None => true,
                        Some(Kind::Decimal(d)) => d.scale == 4,
                        _ => false,
                    }),
                    "{}",
                    c.name
                );
            }
        }
    }
    assert_eq!(checked, tables.len());
}

/// A row image by column name (computed columns left out: CDC records them as NULL).
type Image = std::collections::BTreeMap<String, Value>;

fn key_of(image: &Image, keys: &[String]) -> Vec<u8> {
    use prost::Message;
    keys.iter()
        .flat_map(|k| {
            image
                .get(k)
                .cloned()
                .unwrap_or_default()
                .encode_to_vec()
                .into_iter()
                .chain([0xFF])
        })
        .collect()
}

async fn snapshot_images(
    env: &mut Env,
    table: &TableSchema,
) -> std::collections::BTreeMap<Vec<u8>, Image> {
    let (_, rows, _) = env.read_all_chunks(table, 500, 1000).await;
    rows.into_iter()
        .map(|r| {
            let image: Image = table
                .columns
                .iter()
                .zip(r)
                .filter(|(c, _)| c.computed_definition.is_empty())
                .map(|(c, v)| (c.name.clone(), v))
                .collect();
            (key_of(&image, &table.key_columns), image)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_change_stream_of_a_concurrent_workload_onto_the_snapshot_gives_the_source() {
    use dbsync_sqlserver_sim::workload::{run_workload, WorkloadConfig};
    let mut env = sample_env(60).await;
    let tables: Vec<TableSchema> = env
        .schema("shop")
        .await
        .into_iter()
        .filter(|t| !t.key_columns.is_empty())
        .collect();
    enable(&mut env, &tables, "cdc-polling", 0).await.unwrap();
    let l0 = max_lsn(&mut env, "shop").await;
    let mut state = Vec::new();
    for t in &tables {
        state.push(snapshot_images(&mut env, t).await);
    }
    let stats = run_workload(
        env.sim.addr,
        WorkloadConfig {
            password: env.source.password.clone(),
            max_transactions: Some(200),
            large_transaction_every: 25,
            large_transaction_rows: 300,
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        stats.key_updates > 0 && stats.lob_updates > 0 && stats.out_of_order_commits > 0,
        "{stats:?}"
    );
    let end = max_lsn(&mut env, "shop").await;
    let req = StreamChangesRequest {
        max_batch_rows: 128,
        ..env.stream_request(&tables, l0)
    };
    let messages = changes_until(&mut env, req, end).await;
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); tables.len()];
    let mut applied = 0;
    for m in &messages {
        match &m.kind {
            Some(Msg::Columns(c)) => columns[c.table_index as usize] = c.columns.clone(),
            Some(Msg::Transaction(f)) => {
                for c in &f.changes {
                    let ti = c.table_index as usize;
                    let table = &tables[ti];
                    let image: Image = columns[ti]
                        .iter()
                        .zip(&c.values)
                        .filter(|(n, _)| {
                            table
                                .columns
                                .iter()
                                .any(|col| &col.name == *n && col.computed_definition.is_empty())
                        })
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect();
                    let key = key_of(&image, &table.key_columns);
                    let op = Operation::try_from(c.operation).unwrap();
                    match op {
                        Operation::Delete => {
                            assert!(
                                state[ti].remove(&key).is_some(),
                                "delete of a missing row in {ti}"
                            );
                        }
                        Operation::Insert => {
                            assert!(
                                state[ti].insert(key, image).is_none(),
                                "insert of an existing row in {ti}"
                            );
                        }
                        Operation::UpdateAfter => {
                            let row = state[ti].get_mut(&key).expect("update of a missing row");
                            for (n, v) in image {
                                if v.kind != Some(Kind::Unchanged(true)) {
                                    row.insert(n, v);
                                }
                            }
                        }
                        Operation::UpdateBefore | Operation::Unspecified => {}
                    }
                    applied += 1;
                }
            }
            Some(Msg::NeedsResnapshot(r)) => panic!("unexpected resnapshot {r:?}"),
            _ => {}
        }
    }
    assert!(
        applied as u64 >= stats.row_changes(),
        "{applied} changes for {stats:?}"
    );
    for (ti, t) in tables.iter().enumerate() {
        let source = snapshot_images(&mut env, t).await;
        assert_eq!(state[ti].len(), source.len(), "row count of {:?}", t.table);
        assert!(
            state[ti] == source,
            "rows of {:?} differ after replay",
            t.table
        );
    }
}

#[tokio::test]
async fn hybrid_heartbeats_move_the_position_of_an_idle_source() {
    let mut env = env("shop", "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY);").await;
    let tables = env.schema("shop").await;
    enable(&mut env, &tables, "hybrid", 0).await.unwrap();
    let req = StreamChangesRequest {
        heartbeat_interval_ms: 100,
        incremental_mode: "hybrid".into(),
        ..env.stream_request(&tables, Vec::new())
    };
    let mut s = env.client.stream_changes(req).await.unwrap().into_inner();
    // No user change at all: only the heartbeat row's updates move the max LSN.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut progress = Vec::new();
    while progress.len() < 3 {
        let m = tokio::time::timeout_at(deadline.into(), s.message())
            .await
            .expect("progress in time")
            .unwrap()
            .unwrap();
        match m.kind {
            Some(Msg::Progress(p)) => progress.push(p.lsn),
            Some(Msg::Transaction(f)) => panic!("no table of the stream changed: {f:?}"),
            _ => {}
        }
    }
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "the position advances while idle: {progress:?}"
    );
    let beats = env
        .engine
        .run("shop", "SELECT beat FROM dbo.dbsync_heartbeat")
        .unwrap();
    assert_eq!(beats[0].rows.len(), 1);
}

/// The position of one committed insert into `dbo.t` (CDC on) under a cleanup retention of
/// `minutes`, with a dedicated connection to the source.
async fn committed_position_under_retention(
    minutes: u32,
) -> (
    Env,
    dbsync_core::Lsn,
    dbsync_capture::mssql::client::SqlClient,
) {
    use dbsync_capture::mssql::client::Pools;
    let mut env = env("shop", "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY);").await;
    let tables = env.schema("shop").await;
    enable(&mut env, &tables, "", 0).await.unwrap();
    env.sql("shop", "INSERT INTO dbo.t (id) VALUES (1)");
    let position =
        dbsync_core::Lsn::from_slice(&max_lsn(&mut env, "shop").await).expect("a max LSN");
    env.sql(
        "shop",
        &format!("EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = {minutes}"),
    );
    let client = Pools::default()
        .pool(&env.source, "shop")
        .unwrap()
        .dedicated()
        .await
        .unwrap();
    (env, position, client)
}

#[tokio::test]
async fn retention_headroom_reads_the_cleanup_retention_and_shrinks_as_the_position_ages() {
    use dbsync_capture::mssql::retention::{cleanup_retention, position_time, retention_headroom};
    let (_env, position, mut client) = committed_position_under_retention(2).await;

    let retention = cleanup_retention(&mut client)
        .await
        .unwrap()
        .expect("a cleanup job");
    assert_eq!(retention, Duration::from_secs(120));
    let (committed, now) = position_time(&mut client, position)
        .await
        .unwrap()
        .expect("the position has a commit time");
    let first = retention_headroom(committed, retention, now);
    assert!(first > 0.0 && first <= 120.0, "headroom {first}");
    // The server clock moves on; the position stays: the headroom shrinks by the time passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (again, later) = position_time(&mut client, position).await.unwrap().unwrap();
        assert_eq!(again, committed);
        if later > now {
            let second = retention_headroom(committed, retention, later);
            assert!(second < first, "{second} !< {first}");
            assert!((first - second - (later - now) as f64 / 1e7).abs() < 1e-6);
            break;
        }
        assert!(Instant::now() < deadline, "the server clock did not move");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn the_retention_headroom_gauge_reports_below_the_retention_and_decreases() {
    use dbsync_capture::mssql::retention::RetentionHeadroom;
    let values = gauges();
    let (_env, position, mut client) = committed_position_under_retention(1).await;
    let key = "dbsync_capture_retention_headroom_seconds{task=headroom-task,table=shop.dbo.t}";
    let read = |values: &Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>| {
        values.lock().unwrap().get(key).copied()
    };

    RetentionHeadroom::new("headroom-task".into(), vec!["shop.dbo.t".into()])
        .update(&mut client, position)
        .await;
    let first = read(values).unwrap_or_else(|| panic!("no {key} in {:?}", values.lock().unwrap()));
    assert!(first > 0.0 && first <= 60.0, "headroom {first}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        RetentionHeadroom::new("headroom-task".into(), vec!["shop.dbo.t".into()])
            .update(&mut client, position)
            .await;
        let now = read(values).unwrap();
        if now < first {
            break;
        }
        assert_eq!(now, first, "the headroom grew");
        assert!(Instant::now() < deadline, "the headroom did not decrease");
        tokio::task::yield_now().await;
    }
}
