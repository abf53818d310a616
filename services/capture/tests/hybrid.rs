//! Hybrid mode's change stream against the SQL Server stand-in over real TDS: column changes
//! while a table has two capture instances, the paged ADD COLUMN backfill, the schema a
//! restarted stream works with, the retention-headroom timer and ReadSchema hiding dbsync's
//! own tables. The stream is driven directly ([`CdcStream`]) where a test must control when
//! it reads; setup goes through the gRPC service.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dbsync_capture::mssql::cdc::CdcStream;
use dbsync_capture::mssql::client::Pools;
use dbsync_capture::throttle::TaskThrottle;
use dbsync_proto::v1::{
    change_message::Kind as Msg, value::Kind, ChangeMessage, EnableCdcRequest, GetMaxLsnRequest,
    ObjectSelection, Operation, ReadSchemaRequest, StreamChangesRequest, TableSchema,
    TransactionFragment,
};

mod common;
use common::{env, gauges, Env};

impl Env {
    fn sql(&self, sql: &str) {
        self.engine
            .run("shop", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let results = self
            .engine
            .run("shop", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        results[0]
            .rows
            .iter()
            .map(|r| r.iter().map(|v| format!("{v:?}")).collect())
            .collect()
    }

    async fn schema(&mut self) -> Vec<TableSchema> {
        let selection = ObjectSelection {
            databases: vec!["shop".into()],
            ..Default::default()
        };
        let req = ReadSchemaRequest {
            source: Some(self.source.clone()),
            selection: Some(selection),
        };
        self.client
            .read_schema(req)
            .await
            .unwrap()
            .into_inner()
            .tables
    }

    async fn enable_hybrid(&mut self, tables: &[TableSchema], prefix: &str) {
        self.client
            .enable_cdc(EnableCdcRequest {
                source: Some(self.source.clone()),
                tables: tables.iter().map(|t| t.table.clone().unwrap()).collect(),
                incremental_mode: "hybrid".into(),
                object_prefix: prefix.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn max_lsn(&mut self) -> Vec<u8> {
        let req = GetMaxLsnRequest {
            source: Some(self.source.clone()),
            database: "shop".into(),
            ..Default::default()
        };
        self.client.get_max_lsn(req).await.unwrap().into_inner().lsn
    }

    fn request(&self, tables: &[TableSchema], from_lsn: Vec<u8>) -> StreamChangesRequest {
        StreamChangesRequest {
            source: Some(self.source.clone()),
            task_id: "hybrid".into(),
            tables: tables.to_vec(),
            from_lsn,
            poll_interval_ms: 20,
            heartbeat_interval_ms: 100,
            incremental_mode: "hybrid".into(),
            ..Default::default()
        }
    }

    /// The capture instances of `table` in `cdc.change_tables`.
    fn instances(&self, table: &str) -> Vec<String> {
        self.rows(&format!(
            "SELECT capture_instance FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.{table}') ORDER BY create_date"
        ))
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }
}

async fn open(pools: &Pools, req: StreamChangesRequest) -> CdcStream {
    CdcStream::open(pools, req, TaskThrottle::unlimited())
        .await
        .expect("stream opens")
}

/// Messages until a Progress beyond `until` (a max LSN read after the writes).
async fn read_until(stream: &mut CdcStream, until: &[u8]) -> Vec<ChangeMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    loop {
        let m = tokio::time::timeout_at(deadline.into(), stream.next_message())
            .await
            .expect("messages in time")
            .unwrap();
        let done = matches!(&m.kind, Some(Msg::Progress(p)) if p.lsn.as_slice() > until);
        out.push(m);
        if done {
            return out;
        }
    }
}

fn int(v: &dbsync_proto::v1::Value) -> i64 {
    match v.kind {
        Some(Kind::Int(i)) => i,
        ref other => panic!("not an int: {other:?}"),
    }
}

/// Table contents as the target would hold them after applying the stream's messages by
/// column name: a keyed model (first column is the key) enough for these tests.
#[derive(Default)]
struct Replica {
    rows: BTreeMap<i64, BTreeMap<String, Option<Kind>>>,
    columns: Vec<String>,
}

impl Replica {
    fn apply(&mut self, messages: &[ChangeMessage], table_index: u32) {
        for m in messages {
            match &m.kind {
                Some(Msg::Columns(c)) if c.table_index == table_index => {
                    self.columns = c.columns.clone()
                }
                Some(Msg::Transaction(f)) => self.apply_fragment(f, table_index),
                _ => {}
            }
        }
    }

    fn apply_fragment(&mut self, f: &TransactionFragment, table_index: u32) {
        for c in f.changes.iter().filter(|c| c.table_index == table_index) {
            let id = int(&c.values[0]);
            if c.operation == Operation::Delete as i32 {
                self.rows.remove(&id);
            } else if c.operation == Operation::Insert as i32
                || c.operation == Operation::UpdateAfter as i32
            {
                let row = self.rows.entry(id).or_default();
                for (name, v) in self.columns.iter().zip(&c.values) {
                    if v.kind != Some(Kind::Unchanged(true)) {
                        row.insert(name.clone(), v.kind.clone());
                    }
                }
            }
        }
    }

    fn value(&self, id: i64, column: &str) -> Option<Kind> {
        self.rows
            .get(&id)
            .and_then(|r| r.get(column).cloned())
            .flatten()
    }
}

#[tokio::test]
async fn read_schema_never_lists_dbsyncs_own_tables_whatever_their_prefix() {
    let mut env = env("shop", "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY); CREATE TABLE dbo.u (id int NOT NULL PRIMARY KEY);").await;
    let tables = env.schema().await;
    env.enable_hybrid(&tables[..1], "").await;
    env.enable_hybrid(&tables[1..], "acme_").await;
    let installed = env.rows("SELECT name FROM sys.tables WHERE name IN ('dbsync_heartbeat', 'dbsync_ddl_history', 'acme_heartbeat', 'acme_ddl_history')");
    assert_eq!(
        installed.len(),
        4,
        "both installations exist: {installed:?}"
    );
    let mut names: Vec<String> = env
        .schema()
        .await
        .iter()
        .map(|t| t.table.as_ref().unwrap().name.clone())
        .collect();
    names.sort();
    assert_eq!(names, vec!["t", "u"]);
}

#[tokio::test]
async fn the_retention_headroom_gauge_is_refreshed_on_a_timer_while_the_stream_is_not_read() {
    let values = gauges();
    let mut env = env("shop", "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY);").await;
    let tables = env.schema().await;
    env.enable_hybrid(&tables, "").await;
    env.sql("INSERT INTO dbo.t (id) VALUES (1)");
    env.sql("EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = 1");
    let from = env.max_lsn().await;
    let pools = Pools::default();
    let req = StreamChangesRequest {
        task_id: "timer-task".into(),
        ..env.request(&tables, from)
    };
    // Opened and never read: as when the applier does not take messages, or a long window is
    // being read. Only the timer can move the gauge.
    let stream = open(&pools, req).await;
    let key = "dbsync_capture_retention_headroom_seconds{task=timer-task,table=shop.dbo.t}";
    let read = || values.lock().unwrap().get(key).copied();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(v) = read() {
            break v;
        }
        assert!(Instant::now() < deadline, "no {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(first > 0.0 && first <= 60.0, "headroom {first}");
    loop {
        let now = read().unwrap();
        if now < first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gauge was not refreshed while the stream was idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stream);
}

#[tokio::test]
async fn an_added_column_backfill_reads_the_table_in_key_pages_as_it_sends_them() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.big (id int NOT NULL PRIMARY KEY, v int NULL);",
    )
    .await;
    let tables = env.schema().await;
    env.enable_hybrid(&tables, "").await;
    let values: Vec<String> = (1..=3000).map(|i| format!("({i}, {i})")).collect();
    for chunk in values.chunks(500) {
        env.sql(&format!(
            "INSERT INTO dbo.big (id, v) VALUES {}",
            chunk.join(", ")
        ));
    }
    let from = env.max_lsn().await;
    env.sql("ALTER TABLE dbo.big ADD w int NOT NULL DEFAULT 7");
    let pools = Pools::default();
    let mut stream = open(
        &pools,
        StreamChangesRequest {
            max_batch_rows: 500,
            ..env.request(&tables, from)
        },
    )
    .await;
    // Up to the first fragment of the backfill: only its first page has been read so far.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ddl_lsn = loop {
        let m = tokio::time::timeout_at(deadline.into(), stream.next_message())
            .await
            .expect("the backfill in time")
            .unwrap();
        let at = match (
            &m.kind,
            seen.iter().find_map(|m: &ChangeMessage| match &m.kind {
                Some(Msg::SchemaChange(c)) => Some(c.lsn.clone()),
                _ => None,
            }),
        ) {
            (Some(Msg::Transaction(f)), Some(ddl)) if f.commit_lsn == ddl => Some(ddl),
            _ => None,
        };
        seen.push(m);
        if let Some(at) = at {
            break at;
        }
    };
    // Rows the later pages would have covered are deleted now: a backfill read whole before
    // sending would still carry them.
    env.sql("DELETE FROM dbo.big WHERE id > 2000");
    let until = env.max_lsn().await;
    seen.extend(read_until(&mut stream, &until).await);

    let backfill: Vec<&TransactionFragment> = seen
        .iter()
        .filter_map(|m| match &m.kind {
            Some(Msg::Transaction(f)) if f.commit_lsn == ddl_lsn => Some(f),
            _ => None,
        })
        .collect();
    assert!(
        backfill.iter().all(|f| f.changes.len() <= 500),
        "fragments stay within max_batch_rows"
    );
    assert_eq!(backfill.iter().filter(|f| f.last_fragment).count(), 1);
    let ids: Vec<i64> = backfill
        .iter()
        .flat_map(|f| f.changes.iter().map(|c| int(&c.values[0])))
        .collect();
    // Every row once, in key order; the rows deleted after the first page never came: each
    // page was read when the one before had been taken.
    assert!(
        ids.windows(2).all(|w| w[0] + 1 == w[1]),
        "rows skipped or repeated"
    );
    assert_eq!(
        (ids.first(), ids.last()),
        (Some(&1), Some(&2000)),
        "{} backfill rows",
        ids.len()
    );
    assert!(backfill
        .iter()
        .flat_map(|f| &f.changes)
        .all(|c| c.values.len() == 2 && int(&c.values[1]) == 7));
    let deletes = seen
        .iter()
        .filter_map(|m| match &m.kind {
            Some(Msg::Transaction(f)) => Some(
                f.changes
                    .iter()
                    .filter(|c| c.operation == Operation::Delete as i32)
                    .count(),
            ),
            _ => None,
        })
        .sum::<usize>();
    assert_eq!(deletes, 1000);
}

#[tokio::test]
async fn a_reopened_stream_gives_old_instance_rows_the_columns_added_before_its_position() {
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, v int NULL);",
    )
    .await;
    let before_ddl = env.schema().await;
    env.enable_hybrid(&before_ddl, "").await;
    let l0 = env.max_lsn().await;
    env.sql("INSERT INTO dbo.t (id, v) VALUES (1, 10)");
    env.sql("ALTER TABLE dbo.t ADD w nvarchar(20) NULL");
    // Both written before dbsync's new instance exists: the old instance has them without w.
    env.sql("INSERT INTO dbo.t (id, v, w) VALUES (3, 30, N'gap one')");
    env.sql("INSERT INTO dbo.t (id, v, w) VALUES (4, 40, N'gap two')");
    let pools = Pools::default();
    let mut first = open(&pools, env.request(&before_ddl, l0)).await;
    // Up to the transaction of row 3, then the stream goes away (a restart).
    let deadline = Instant::now() + Duration::from_secs(30);
    let resume = loop {
        let m = tokio::time::timeout_at(deadline.into(), first.next_message())
            .await
            .expect("row 3 in time")
            .unwrap();
        if let Some(Msg::Transaction(f)) = &m.kind {
            if f.last_fragment
                && f.changes
                    .iter()
                    .any(|c| c.operation == Operation::Insert as i32 && int(&c.values[0]) == 3)
            {
                break f.commit_lsn.clone();
            }
        }
    };
    drop(first);
    assert_eq!(
        env.instances("t").len(),
        2,
        "the old instance is still needed"
    );

    // The applier's plan still has the shape from before the DDL.
    let until = env.max_lsn().await;
    let mut second = open(&pools, env.request(&before_ddl, resume)).await;
    let seen = read_until(&mut second, &until).await;
    let mut replica = Replica::default();
    replica.apply(&seen, 0);
    assert_eq!(replica.columns, vec!["id", "v", "w"], "{seen:?}");
    assert_eq!(
        replica.value(4, "w"),
        Some(Kind::Text("gap two".into())),
        "{seen:?}"
    );
    assert!(
        !replica.rows.contains_key(&3),
        "row 3 was delivered before the restart: {seen:?}"
    );
}

#[tokio::test]
async fn a_second_column_change_gets_its_instance_once_the_older_one_is_retired_without_a_restart()
{
    let mut env = env(
        "shop",
        "CREATE TABLE dbo.k (id int NOT NULL PRIMARY KEY, v int NULL);
         CREATE TABLE dbo.h (id int NOT NULL, v int NULL);",
    )
    .await;
    let tables = env.schema().await;
    let (ki, hi) = {
        let index = |name: &str| {
            tables
                .iter()
                .position(|t| t.table.as_ref().unwrap().name == name)
                .unwrap() as u32
        };
        (index("k"), index("h"))
    };
    env.enable_hybrid(&tables, "").await;
    let l0 = env.max_lsn().await;
    env.sql("INSERT INTO dbo.k (id, v) VALUES (1, 1), (2, 2)");
    env.sql("INSERT INTO dbo.h (id, v) VALUES (1, 1), (2, 2)");
    env.sql("ALTER TABLE dbo.k ADD c1 int NULL");
    env.sql("ALTER TABLE dbo.h ADD c1 int NULL");
    env.sql("UPDATE dbo.k SET c1 = 10 WHERE id = 1");
    // Opening reads the DDL history and creates the second instances at once; nothing is
    // read from the stream yet, so it has not passed them.
    let pools = Pools::default();
    let mut stream = open(&pools, env.request(&tables, l0)).await;
    assert_eq!(env.instances("k").len(), 2);
    assert_eq!(env.instances("h").len(), 2);
    env.sql("INSERT INTO dbo.k (id, v, c1) VALUES (3, 3, 30)");
    env.sql("ALTER TABLE dbo.k ADD c2 nvarchar(20) NULL");
    env.sql("ALTER TABLE dbo.h ADD c2 nvarchar(20) NULL");
    env.sql("INSERT INTO dbo.k (id, v, c1, c2) VALUES (4, 4, 40, N'four')");
    env.sql("UPDATE dbo.k SET c2 = N'two', v = 22 WHERE id = 2");
    env.sql("INSERT INTO dbo.h (id, v, c1, c2) VALUES (3, 3, 30, N'three')");

    // The stream passes the newer instances, retires the first ones and creates the
    // instances for the second change, without a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let m = tokio::time::timeout_at(deadline.into(), stream.next_message())
            .await
            .expect("the new instance in time")
            .unwrap();
        seen.push(m);
        let k = env.instances("k");
        if k.len() == 2
            && !k.iter().any(|n| n.contains("\"dbsync_dbo_k\""))
            && seen
                .iter()
                .any(|m| matches!(m.kind, Some(Msg::Progress(_))))
        {
            break;
        }
    }
    env.sql("INSERT INTO dbo.k (id, v, c1, c2) VALUES (5, 5, 50, N'five')");
    env.sql("UPDATE dbo.k SET c2 = N'one' WHERE id = 1");
    let until = env.max_lsn().await;
    seen.extend(read_until(&mut stream, &until).await);

    // The keyed table: every row as on the source, through both changes.
    let mut k = Replica::default();
    k.apply(&seen, ki);
    assert_eq!(k.columns, vec!["id", "v", "c1", "c2"]);
    let text = |s: &str| Some(Kind::Text(s.into()));
    let expected = [
        (1, 1, Some(Kind::Int(10)), text("one")),
        (2, 22, None, text("two")),
        (3, 3, Some(Kind::Int(30)), None),
        (4, 4, Some(Kind::Int(40)), text("four")),
        (5, 5, Some(Kind::Int(50)), text("five")),
    ];
    assert_eq!(env.rows("SELECT id FROM dbo.k").len(), expected.len());
    assert_eq!(k.rows.len(), expected.len());
    for (id, v, c1, c2) in expected {
        let got = (k.value(id, "v"), k.value(id, "c1"), k.value(id, "c2"));
        assert_eq!(got, (Some(Kind::Int(v)), c1, c2), "row {id}");
        let source = env.rows(&format!("SELECT v FROM dbo.k WHERE id = {id} AND ISNULL(c1, -1) = {} AND ISNULL(c2, N'-') = N'{}'",
            match &got.1 { Some(Kind::Int(i)) => *i, _ => -1 },
            match &got.2 { Some(Kind::Text(t)) => t.as_str(), _ => "-" }));
        assert_eq!(source.len(), 1, "row {id} differs from the source");
    }
    // The table without a key cannot read the second column's values back: it is loaded
    // again, with a reason, and leaves the stream.
    let notice = seen
        .iter()
        .find_map(|m| match &m.kind {
            Some(Msg::NeedsResnapshot(n)) if n.table_index == hi => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no re-snapshot of dbo.h in {seen:?}"));
    assert!(
        notice.reason.contains("no key") && notice.reason.contains("c2"),
        "{}",
        notice.reason
    );
    let notice_at = seen
        .iter()
        .position(|m| matches!(&m.kind, Some(Msg::NeedsResnapshot(n)) if n.table_index == hi))
        .unwrap();
    let schema_at = seen
        .iter()
        .position(|m| matches!(&m.kind, Some(Msg::SchemaChange(c)) if c.table_index == hi && c.ddl_command.contains("c2")))
        .expect("the heap's second change is announced");
    assert!(schema_at < notice_at, "the reload sees the new shape");
    let inside = seen[..notice_at].iter().rev().find_map(|m| match &m.kind {
        Some(Msg::Transaction(f)) => Some(f.last_fragment),
        _ => None,
    });
    assert_ne!(inside, Some(false), "the notice comes between transactions");
}
