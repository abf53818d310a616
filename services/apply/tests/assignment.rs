//! `run_assignment` end to end against a real PostgreSQL, with an in-process capture service
//! that serves scripted chunks and change messages over real gRPC (the capture + SQL Server
//! stand-in suites live in tests/integration). Proves the orchestration: schema, parallel
//! full sync, resume at the first unfinished chunk, hand-off to the stream, catch-up,
//! schema changes and re-snapshots.

mod common;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dbsync_apply::{run_assignment, ApplyError, ProgressBoard, RunOptions};
use dbsync_core::error::{Classify, ErrorClass};
use dbsync_core::lsn::Lsn;
use dbsync_proto::v1::capture_service_server::{CaptureService, CaptureServiceServer};
use dbsync_proto::v1::change_message::Kind as MessageKind;
use dbsync_proto::v1::*;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

type Rows = Arc<Mutex<HashMap<String, Vec<Row>>>>;
type ChangeReceiver = mpsc::Receiver<Result<ChangeMessage, Status>>;

/// Serves rows from memory: 3 chunks per table (chunk i holds the rows with id % 3 == i), a
/// fixed max LSN, and change messages the test pushes.
#[derive(Clone)]
struct FakeCapture {
    rows: Rows,
    max_lsn: Arc<Mutex<u128>>,
    /// Chunk indexes that fail once with UNAVAILABLE (a capture crash mid-load).
    fail_chunks: Arc<Mutex<Vec<u32>>>,
    changes: Arc<Mutex<Option<ChangeReceiver>>>,
    stream_requests: Arc<Mutex<Vec<StreamChangesRequest>>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn key_of(t: &Option<TableSchema>) -> String {
    t.as_ref()
        .and_then(|t| t.table.as_ref())
        .map(|r| r.name.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl CaptureService for FakeCapture {
    async fn get_source_info(
        &self,
        _: Request<GetSourceInfoRequest>,
    ) -> Result<Response<SourceInfo>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn read_schema(
        &self,
        _: Request<ReadSchemaRequest>,
    ) -> Result<Response<ReadSchemaResponse>, Status> {
        // Lists nothing: a re-snapshot reloads the table in the shape the stream gave it.
        Ok(Response::new(ReadSchemaResponse::default()))
    }
    async fn precheck(
        &self,
        _: Request<SourcePrecheckRequest>,
    ) -> Result<Response<PrecheckReport>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn get_max_lsn(
        &self,
        _: Request<GetMaxLsnRequest>,
    ) -> Result<Response<GetMaxLsnResponse>, Status> {
        let lsn = *self.max_lsn.lock().unwrap();
        Ok(Response::new(GetMaxLsnResponse {
            lsn: Lsn::from_u128(lsn).0.to_vec(),
            source_time_unix_micros: 0,
        }))
    }
    async fn enable_cdc(
        &self,
        _: Request<EnableCdcRequest>,
    ) -> Result<Response<EnableCdcResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn cleanup_source(
        &self,
        _: Request<CleanupSourceRequest>,
    ) -> Result<Response<CleanupSourceResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn plan_chunks(
        &self,
        _: Request<PlanChunksRequest>,
    ) -> Result<Response<PlanChunksResponse>, Status> {
        Ok(Response::new(PlanChunksResponse {
            chunks: (0..3)
                .map(|index| Chunk {
                    index,
                    estimated_rows: 100,
                    ..Default::default()
                })
                .collect(),
        }))
    }
    type ReadChunkStream = BoxStream<RowBatch>;
    async fn read_chunk(
        &self,
        req: Request<ReadChunkRequest>,
    ) -> Result<Response<Self::ReadChunkStream>, Status> {
        let req = req.into_inner();
        let index = req.chunk.as_ref().map_or(0, |c| c.index);
        {
            let mut fail = self.fail_chunks.lock().unwrap();
            if let Some(p) = fail.iter().position(|i| *i == index) {
                fail.remove(p);
                return Err(Status::unavailable("capture restarted"));
            }
        }
        let rows: Vec<Row> = self.rows.lock().unwrap()[&key_of(&req.table)]
            .iter()
            .filter(|r| matches!(r.values[0].kind, Some(value::Kind::Int(id)) if id.rem_euclid(3) as u32 == index))
            .cloned()
            .collect();
        let batches: Vec<Result<RowBatch, Status>> = rows
            .chunks(7)
            .map(|c| {
                Ok(RowBatch {
                    rows: c.to_vec(),
                    ..Default::default()
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }
    type StreamChangesStream = BoxStream<ChangeMessage>;
    async fn stream_changes(
        &self,
        req: Request<StreamChangesRequest>,
    ) -> Result<Response<Self::StreamChangesStream>, Status> {
        self.stream_requests.lock().unwrap().push(req.into_inner());
        let rx = self
            .changes
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Status::unavailable("no stream scripted"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    type ReadRowsStream = BoxStream<RowBatch>;
    async fn read_rows(
        &self,
        _: Request<ReadRowsRequest>,
    ) -> Result<Response<Self::ReadRowsStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn checksum_chunks(
        &self,
        _: Request<ChecksumChunksRequest>,
    ) -> Result<Response<ChecksumChunksResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

impl FakeCapture {
    async fn start() -> (FakeCapture, String) {
        let fake = FakeCapture {
            rows: Arc::default(),
            max_lsn: Arc::new(Mutex::new(100)),
            fail_chunks: Arc::default(),
            changes: Arc::default(),
            stream_requests: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = CaptureServiceServer::new(fake.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (fake, addr.to_string())
    }

    /// A new change stream; returns its sender.
    fn script_stream(&self) -> mpsc::Sender<Result<ChangeMessage, Status>> {
        let (tx, rx) = mpsc::channel(64);
        *self.changes.lock().unwrap() = Some(rx);
        tx
    }
}

fn item_row(id: i64, name: &str, qty: i64) -> Row {
    Row {
        values: vec![int(id), text(name), null(), int(qty)],
    }
}

fn assignment(
    target: &TargetConnection,
    capture: &str,
    plans: Vec<TablePlan>,
    incremental: bool,
) -> Assignment {
    Assignment {
        task_id: TASK.into(),
        generation: 1,
        target: Some(target.clone()),
        capture_address: capture.into(),
        schema_sync: true,
        full_sync: true,
        incremental_sync: incremental,
        start_lsn: Lsn::from_u128(50).0.to_vec(),
        tables: plans,
        conflict_mode: "precheck".into(),
        parallel_chunks: 2,
        group_id: "g1".into(),
        ..Default::default()
    }
}

/// Polls `check` until it holds or 20 s pass.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn msg(kind: MessageKind) -> Result<ChangeMessage, Status> {
    Ok(ChangeMessage { kind: Some(kind) })
}

fn txn(commit: u128, changes: Vec<RowChange>) -> MessageKind {
    MessageKind::Transaction(TransactionFragment {
        commit_lsn: Lsn::from_u128(commit).0.to_vec(),
        commit_time_unix_micros: 1_700_000_000_000_000,
        changes,
        last_fragment: true,
        fragment_index: 0,
    })
}

fn change(op: Operation, seq: u128, row: Row) -> RowChange {
    RowChange {
        table_index: 0,
        operation: op as i32,
        seqval: Lsn::from_u128(seq).0.to_vec(),
        values: row.values,
        ..Default::default()
    }
}

async fn stored_lsn(client: &tokio_postgres::Client) -> Option<Lsn> {
    client
        .query_opt(
            "SELECT commit_lsn FROM dbsync.stream_position WHERE group_id = 'g1'",
            &[],
        )
        .await
        .unwrap()
        .and_then(|r| Lsn::from_slice(r.get(0)))
}

#[tokio::test]
async fn full_sync_resumes_at_the_first_unfinished_chunk_after_a_capture_failure() {
    let (target, client) = fresh_db("resume").await;
    let (fake, addr) = FakeCapture::start().await;
    fake.rows.lock().unwrap().insert(
        "Items".into(),
        (0..300).map(|i| item_row(i, "n", i)).collect(),
    );
    fake.fail_chunks.lock().unwrap().push(2);
    let board = Arc::new(ProgressBoard::default());
    let options = RunOptions {
        max_parallel_chunks: 1,
        auth_token: None,
    };
    let a = assignment(&target, &addr, vec![items_plan()], false);
    let err = run_assignment(a.clone(), &options, board.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Connection, "{err}");
    let done: i64 = client
        .query_one("SELECT count(*) FROM dbsync.chunks WHERE done", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, 2);
    assert_eq!(items(&client).await.len(), 200);
    run_assignment(a, &options, board.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(items(&client).await.len(), 300);
    let p = board.get("shop.dbo.Items").unwrap();
    assert_eq!(
        (p.phase, p.rows_done, p.chunks_done, p.chunks_total),
        (TablePhase::Done as i32, 300, 3, 3)
    );
}

#[tokio::test]
async fn full_sync_hands_off_to_the_stream_which_catches_up_then_streams() {
    let (target, client) = fresh_db("handoff").await;
    let (fake, addr) = FakeCapture::start().await;
    fake.rows.lock().unwrap().insert(
        "Items".into(),
        (0..90).map(|i| item_row(i, "snap", i)).collect(),
    );
    let tx = fake.script_stream();
    let board = Arc::new(ProgressBoard::default());
    let shutdown = CancellationToken::new();
    let a = assignment(&target, &addr, vec![items_plan()], true);
    let run = tokio::spawn({
        let (board, shutdown) = (board.clone(), shutdown.clone());
        async move { run_assignment(a, &RunOptions::default(), board, shutdown).await }
    });
    // Inside the snapshot window (≤ 100): row 5 is already in the snapshot; replaying its
    // insert and update converges. After it: strict apply.
    tx.send(msg(txn(
        80,
        vec![change(Operation::Insert, 1, item_row(5, "snap", 5))],
    )))
    .await
    .unwrap();
    tx.send(msg(txn(
        120,
        vec![
            change(Operation::Insert, 2, item_row(1000, "new", 1)),
            change(Operation::UpdateBefore, 3, item_row(6, "snap", 6)),
            change(Operation::UpdateAfter, 3, item_row(6, "upd", 60)),
            change(Operation::Delete, 4, item_row(7, "snap", 7)),
        ],
    )))
    .await
    .unwrap();
    tx.send(msg(MessageKind::Progress(Progress {
        lsn: Lsn::from_u128(130).0.to_vec(),
        source_time_unix_micros: 1,
    })))
    .await
    .unwrap();
    eventually("the position to pass the last transaction", || async {
        stored_lsn(&client).await == Some(Lsn::from_u128(129))
    })
    .await;
    let rows = items(&client).await;
    assert_eq!(rows.len(), 90);
    assert!(
        rows.contains(&"1000|new|NULL|1".to_string())
            && rows.contains(&"6|upd|NULL|60".to_string())
    );
    assert!(!rows.iter().any(|r| r.starts_with("7|")));
    let request = fake.stream_requests.lock().unwrap()[0].clone();
    assert_eq!(
        Lsn::from_slice(&request.from_lsn),
        Some(Lsn::from_u128(50)),
        "starts from L0"
    );
    eventually("the table to report streaming", || async {
        board
            .get("shop.dbo.Items")
            .is_some_and(|p| p.phase == TablePhase::Streaming as i32 && p.changes_applied == 4)
    })
    .await;
    shutdown.cancel();
    assert!(matches!(run.await.unwrap(), Err(ApplyError::Cancelled)));
}

#[tokio::test]
async fn schema_changes_and_resnapshots_are_followed_while_streaming() {
    let (target, client) = fresh_db("ddl_resnap").await;
    let (fake, addr) = FakeCapture::start().await;
    fake.rows.lock().unwrap().insert(
        "Items".into(),
        (0..30).map(|i| item_row(i, "snap", i)).collect(),
    );
    let tx = fake.script_stream();
    let board = Arc::new(ProgressBoard::default());
    let shutdown = CancellationToken::new();
    let a = assignment(&target, &addr, vec![items_plan()], true);
    let run = tokio::spawn({
        let (board, shutdown) = (board.clone(), shutdown.clone());
        async move { run_assignment(a, &RunOptions::default(), board, shutdown).await }
    });
    // A column is added on the source; later changes carry it.
    let mut schema = items_plan().source.unwrap();
    schema
        .columns
        .push(col("email", "varchar", 100, 0, 0, true));
    tx.send(msg(MessageKind::SchemaChange(SchemaChange {
        table_index: 0,
        lsn: Lsn::from_u128(110).0.to_vec(),
        ddl_command: "ALTER TABLE dbo.Items ADD email varchar(100)".into(),
        new_schema: Some(schema),
    })))
    .await
    .unwrap();
    tx.send(msg(MessageKind::Columns(ChangeTableColumns {
        table_index: 0,
        capture_instance: "dbo_Items_2".into(),
        columns: vec![
            "id".into(),
            "name".into(),
            "note".into(),
            "qty".into(),
            "email".into(),
        ],
        start_lsn: Lsn::from_u128(110).0.to_vec(),
    })))
    .await
    .unwrap();
    let mut with_email = item_row(500, "mail", 1);
    with_email.values.push(text("a@b.c"));
    tx.send(msg(txn(
        120,
        vec![change(Operation::Insert, 1, with_email)],
    )))
    .await
    .unwrap();
    eventually("the change with the new column", || async {
        stored_lsn(&client).await == Some(Lsn::from_u128(120))
    })
    .await;
    let email: String = client
        .query_one("SELECT email FROM dbo.items WHERE id = 500", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, "a@b.c");

    // Retention cleanup passed the position: the table is loaded again from the source, and
    // followed by a side stream of its own from the max LSN read before the reload (300).
    fake.rows.lock().unwrap().insert(
        "Items".into(),
        (100..110)
            .map(|i| {
                let mut r = item_row(i, "again", i);
                r.values.push(null());
                r
            })
            .collect(),
    );
    *fake.max_lsn.lock().unwrap() = 300;
    let side = fake.script_stream();
    tx.send(msg(MessageKind::NeedsResnapshot(TableNeedsResnapshot {
        table_index: 0,
        requested_lsn: Lsn::from_u128(120).0.to_vec(),
        min_lsn: Lsn::from_u128(200).0.to_vec(),
        reason: "change data below 0x..C8 was cleaned up".into(),
        cause: ResnapshotCause::Retention.into(),
    })))
    .await
    .unwrap();
    eventually("the side stream", || async {
        fake.stream_requests.lock().unwrap().len() == 2
    })
    .await;
    let reopened = fake.script_stream();
    {
        let requests = fake.stream_requests.lock().unwrap();
        assert_eq!(requests[1].tables.len(), 1);
        assert_eq!(requests[1].from_lsn, Lsn::from_u128(300).0.to_vec());
    }
    // A side change waits until the main stream has committed past it.
    let mut side_row = item_row(200, "side", 2);
    side_row.values.push(null());
    side.send(msg(txn(320, vec![change(Operation::Insert, 1, side_row)])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!items(&client).await.iter().any(|r| r.contains("|side|")));
    // The main stream skips the table meanwhile (capture would not send it; this checks that
    // apply would not apply it twice).
    let mut skipped = item_row(999, "main while re-snapshotting", 1);
    skipped.values.push(null());
    tx.send(msg(txn(350, vec![change(Operation::Insert, 1, skipped)])))
        .await
        .unwrap();
    tx.send(msg(MessageKind::Progress(Progress {
        lsn: Lsn::from_u128(400).0.to_vec(),
        ..Default::default()
    })))
    .await
    .unwrap();
    side.send(msg(MessageKind::Progress(Progress {
        lsn: Lsn::from_u128(400).0.to_vec(),
        ..Default::default()
    })))
    .await
    .unwrap();
    // Caught up: the table rejoins and the main stream is reopened with it from 399.
    eventually("the main stream reopened", || async {
        fake.stream_requests.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(
        fake.stream_requests.lock().unwrap()[2].from_lsn,
        Lsn::from_u128(399).0.to_vec()
    );
    let mut after = item_row(300, "after", 3);
    after.values.push(null());
    reopened
        .send(msg(txn(450, vec![change(Operation::Insert, 1, after)])))
        .await
        .unwrap();
    eventually("the change after the rejoin", || async {
        stored_lsn(&client).await == Some(Lsn::from_u128(450))
    })
    .await;
    let rows = items(&client).await;
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.contains("|again|")).count(), 10);
    assert!(rows.iter().any(|r| r.contains("|side|")), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("|after|")), "{rows:?}");
    let records: i64 = client
        .query_one("SELECT count(*) FROM dbsync.resnapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(records, 0);
    shutdown.cancel();
    let _ = run.await.unwrap();
}

#[tokio::test]
async fn a_value_postgresql_cannot_store_fails_its_table_with_a_definite_error() {
    let (target, _client) = fresh_db("bad_value").await;
    let (fake, addr) = FakeCapture::start().await;
    fake.rows.lock().unwrap().insert(
        "Items".into(),
        vec![item_row(1, "ok", 1), item_row(2, "nul\0here", 2)],
    );
    let board = Arc::new(ProgressBoard::default());
    let a = assignment(&target, &addr, vec![items_plan()], false);
    let err = run_assignment(
        a,
        &RunOptions::default(),
        board.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Definite, "{err}");
    let p = board.get("shop.dbo.Items").unwrap();
    assert_eq!(p.phase, TablePhase::Failed as i32);
    assert_eq!(p.error_class, "definite");
    assert!(
        p.error.contains("dbo.items") && p.error.contains("name"),
        "{}",
        p.error
    );
}

#[tokio::test]
async fn deferred_foreign_keys_are_created_after_a_full_load_without_the_replication_role() {
    let (target, client) = fresh_db("deferred_fk").await;
    let (fake, addr) = FakeCapture::start().await;
    // orders(id, item_id → items.id); rows arrive children first, which only works without
    // the FK during the load.
    let mut orders = table_plan(
        "Orders",
        vec![
            col("id", "int", 4, 10, 0, false),
            col("item_id", "int", 4, 10, 0, true),
        ],
        &["id"],
    );
    orders
        .source
        .as_mut()
        .unwrap()
        .foreign_keys
        .push(ForeignKeySchema {
            name: "FK_Orders_Items".into(),
            columns: vec!["item_id".into()],
            referenced_table: items_plan().source.unwrap().table,
            referenced_columns: vec!["id".into()],
            ..Default::default()
        });
    fake.rows.lock().unwrap().insert(
        "Orders".into(),
        (0..30)
            .map(|i| Row {
                values: vec![int(i), int(i)],
            })
            .collect(),
    );
    fake.rows.lock().unwrap().insert(
        "Items".into(),
        (0..30).map(|i| item_row(i, "n", i)).collect(),
    );
    let mut a = assignment(&target, &addr, vec![orders, items_plan()], false);
    a.defer_foreign_keys = true;
    run_assignment(
        a,
        &RunOptions::default(),
        Arc::new(ProgressBoard::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let validated: bool = client
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_orders_items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(validated);
    let orders: i64 = client
        .query_one("SELECT count(*) FROM dbo.orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 30);
    assert!(
        client
            .execute("INSERT INTO dbo.orders VALUES (100, 999)", &[])
            .await
            .is_err(),
        "the FK is enforced"
    );
}
