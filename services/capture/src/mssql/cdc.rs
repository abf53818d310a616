//! Tails the CDC change tables of a set of tables as one stream of source transactions in
//! commit order ([`CdcStream`]).
//!
//! Each poll (every `poll_interval`, default 200 ms; the deadline is set before querying so
//! query time counts toward it):
//! 1. Read `sys.fn_cdc_get_max_lsn()`. NULL means the capture job has not run: report and
//!    retry. The window is `[lower, max]` where `lower` is the resume position's commit LSN
//!    (inside a partly delivered transaction) or the next LSN after it.
//! 2. Re-read `cdc.change_tables`: it gives each instance's validity start (the value
//!    `sys.fn_cdc_get_min_lsn` returns) and reveals new instances. For each table, the
//!    instance covering `lower` is the newest one starting at or below it. If none does, the
//!    changes from `lower` on are gone (retention cleanup, or CDC enabled later than the
//!    position): the table gets [`TableNeedsResnapshot`] and leaves the stream; the others
//!    continue. Nothing is ever skipped silently.
//! 3. With two instances (a schema change), the old one is read up to the new one's
//!    `start_lsn` (exclusive) and the new one from there: every change comes from exactly one.
//! 4. Each (table, instance) segment is a cursor over the change table `cdc.<ci>_CT` with
//!    `@from <= __$start_lsn <= @to` (`@to` never above the max LSN, so no capture scan is
//!    seen half-done), read in pages of at most `page_rows` rows with a keyset predicate on
//!    `(__$start_lsn, __$command_id, __$seqval, __$operation)`, so a huge transaction is never
//!    read whole. The change table, not the TVF, because only it has `__$command_id`
//!    (sqlserver-cdc.md §4.3: seqval alone can misorder a transaction's statements). Cursors
//!    are merged by that key, ties broken by table index; `RowChange.command_id` carries it.
//!    Retention: a window only starts from an instance whose `start_lsn` covers its lower
//!    bound; if cleanup raises that `start_lsn` above a window's lower bound while the window
//!    is read, the next poll sees it and the table gets a new snapshot.
//!    Within an update the before image (3) precedes the after image (4); a key-changing
//!    update arrives as delete (1) then insert (2) with the same seqval.
//! 5. Rows are grouped by commit LSN into [`TransactionFragment`]s capped by rows and bytes;
//!    the last fragment of a transaction has `last_fragment = true`. A table's
//!    [`ChangeTableColumns`] precede its first change from an instance. Commit times come from
//!    `cdc.lsn_time_mapping` (server local time, converted with the server's current offset).
//! 6. When the window is exhausted, everything up to `max` has been delivered: a
//!    [`Progress`] with `lsn = max + 1` ("everything below has been delivered") is sent when
//!    the position moved, and at least every heartbeat interval while idle, so lag reads true.
//!
//! Resume: `(from_lsn, from_seqval, from_operation)` is the last delivered change; with an
//! empty seqval, `from_lsn` is the commit LSN of the last complete transaction. Changes
//! strictly after it are sent. After a [`Progress`] with lsn `P`, resume with
//! `from_lsn = P - 1` and an empty seqval.
//!
//! Unchanged LOB columns of an update (NULL with their `__$update_mask` bit clear) become
//! `Value { unchanged: true }` so apply never overwrites them (sqlserver-cdc.md §7).
//!
//! Hybrid mode follows DDL through dbsync's history table ([`hybrid`]):
//! - At open each table's current schema is read from the source: after a restart the
//!   request's (the applier's plan) may predate changes announced before, and an old
//!   instance's rows need the columns added since. The request's schema is the fallback.
//! - A column change gets a new capture instance ([`CdcStream::open`], every poll). With two
//!   already (SQL Server's limit), the older one is retired as soon as the stream has passed
//!   the newer one's start, and the new one is created then, without a restart.
//! - Rows an instance records after a column change it predates get the added columns from
//!   the source row by key; a table without a key is re-snapshotted instead (the notice
//!   follows the current transaction), never filled with NULLs.
//! - ADD COLUMN sends every row's added columns at the DDL's LSN, paged by key.
//!
//! The retention-headroom gauge is refreshed by a timer task ([`retention::spawn_timer`]).
//!
//! Docs: <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-all-changes-capture-instance-transact-sql>

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_core::{Lsn, Position};
use dbsync_proto::v1::{
    change_message, value::Kind, ChangeMessage, ChangeTableColumns, Operation, Progress,
    ResnapshotCause, RowChange, SchemaChange, StreamChangesRequest, TableNeedsResnapshot, TableRef,
    TableSchema, TransactionFragment, Value,
};
use futures_util::TryStreamExt;
use tiberius::ColumnData;

use crate::error::{CaptureError, Result};
use crate::mssql::client::{Pools, SourcePool, SqlClient};
use crate::mssql::decode;
use crate::mssql::hybrid::{self, DdlEvent, HybridObjects};
use crate::mssql::inspect::{self, CaptureInstance, CapturedColumn};
use crate::mssql::retention::{self, RetentionHeadroom};
use crate::setup;
use crate::sql::{self, quote_ident};
use crate::throttle::TaskThrottle;

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);
pub const DEFAULT_FRAGMENT_ROWS: usize = 10_000;
pub const DEFAULT_FRAGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Rows buffered over all cursors of a window (each cursor gets a share, at least 64).
const WINDOW_ROW_BUDGET: usize = 20_000;
/// Transactions whose commit time one `cdc.lsn_time_mapping` query reads.
const COMMIT_TIME_PAGE: i64 = 1_000;

/// One capture instance of a table, as the stream reads it.
#[derive(Debug, Clone)]
pub struct InstanceState {
    pub name: String,
    pub start_lsn: Lsn,
    pub columns: Vec<CapturedColumn>,
    /// Per column: a LOB type whose unchanged value an update reports as NULL.
    pub lob: Vec<bool>,
}

/// A table of the stream.
#[derive(Debug, Clone)]
struct TableState {
    table: TableRef,
    schema: TableSchema,
    /// Sorted by start_lsn; at most two.
    instances: Vec<InstanceState>,
    /// The shape whose ChangeTableColumns were sent last: instance name and the number of
    /// schema changes after its start the values are translated over (hybrid mode).
    columns_sent: Option<(String, usize)>,
    /// Left the stream (needs a new snapshot).
    stopped: bool,
    /// Instances in `cdc.change_tables`, including ones the capture process has not started.
    listed_instances: usize,
    listed_names: Vec<String>,
    /// Hybrid mode: column-changing DDL events of the table (LSN order) that an instance still
    /// read predates, and how many of them were announced with a [`SchemaChange`].
    events: Vec<DdlEvent>,
    announced: usize,
    /// Hybrid mode: columns of the current source schema that the instance being read lacks
    /// (added after it started); their values are read from the source row.
    extra: Vec<dbsync_proto::v1::ColumnSchema>,
    /// The instance and lower bound the last window read from: if cleanup has since raised
    /// that instance's start above it, rows may have vanished while being read.
    last_read: Option<(String, Lsn)>,
    /// Hybrid mode: a column change waits for a capture instance slot (warned once).
    waiting_for_slot: bool,
}

/// One decoded change row of a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub commit_lsn: Lsn,
    pub seqval: Lsn,
    pub operation: i32,
    pub command_id: i32,
    pub table_index: u32,
    pub instance: usize,
    pub update_mask: Vec<u8>,
    pub values: Vec<Value>,
    pub bytes: u64,
}

impl ChangeRow {
    /// The merge key: `(commit LSN, command id, seqval, operation)`, then the table for a
    /// total order (sqlserver-cdc.md §4.3).
    pub fn key(&self) -> (Lsn, i32, Lsn, i32, u32) {
        (
            self.commit_lsn,
            self.command_id,
            self.seqval,
            self.operation,
            self.table_index,
        )
    }

    fn position(&self) -> Position {
        Position {
            commit_lsn: self.commit_lsn,
            seqval: self.seqval,
            operation: self.operation,
        }
    }
}

/// A keyset-paged read of one (table, instance) over `[lower, upper]`.
#[derive(Debug)]
struct Cursor {
    table: usize,
    instance: usize,
    lower: Lsn,
    upper: Lsn,
    /// Rows at or before this key are not wanted (already delivered or already buffered).
    after: Option<After>,
    buffer: VecDeque<ChangeRow>,
    exhausted: bool,
}

/// Where a cursor's next page starts.
#[derive(Debug, Clone, Copy)]
enum After {
    /// After the last buffered row: `(commit LSN, command id, seqval, operation)`.
    Row(Lsn, i32, Lsn, i32),
    /// A resume position inside a transaction (it carries no command id): rows after its
    /// `(seqval, operation)` within that transaction.
    Resume(Position),
}

/// An ADD COLUMN backfill in progress ([`CdcStream::start_backfill`]).
struct Backfill {
    table: usize,
    /// The DDL's commit LSN: the backfill's rows belong to its transaction.
    lsn: Lsn,
    /// The key columns, then the added ones (the rows' values in this order).
    columns: Vec<dbsync_proto::v1::ColumnSchema>,
    key_len: usize,
    /// The key of the last row sent: the next page starts after it.
    after: Option<Vec<Value>>,
    commit_time_ticks: Option<i64>,
    rows: u64,
}

/// The transaction being assembled.
struct FragmentBuilder {
    commit_lsn: Lsn,
    commit_time_ticks: Option<i64>,
    changes: Vec<RowChange>,
    bytes: u64,
    index: u32,
    last_position: Position,
}

/// Is bit `ordinal` (1-based) set in an update mask? Ordinal 1 is the least significant bit of
/// the last byte (sqlserver-cdc.md §2.6).
pub fn mask_bit(mask: &[u8], ordinal: usize) -> bool {
    if ordinal == 0 || mask.is_empty() {
        return false;
    }
    let byte_from_end = (ordinal - 1) / 8;
    if byte_from_end >= mask.len() {
        return false;
    }
    mask[mask.len() - 1 - byte_from_end] & (1 << ((ordinal - 1) % 8)) != 0
}

/// Marks LOB columns an update left untouched (NULL, mask bit clear) as unchanged.
pub fn mark_unchanged_lobs(operation: i32, mask: &[u8], lob: &[bool], values: &mut [Value]) {
    if operation != 3 && operation != 4 {
        return;
    }
    for (i, v) in values.iter_mut().enumerate() {
        if lob.get(i).copied().unwrap_or(false) && v.kind.is_none() && !mask_bit(mask, i + 1) {
            v.kind = Some(Kind::Unchanged(true));
        }
    }
}

fn is_lob(column: &CapturedColumn, schema: &TableSchema) -> bool {
    let t = column.type_name.to_ascii_lowercase();
    if matches!(t.as_str(), "text" | "ntext" | "image" | "xml") {
        return true;
    }
    matches!(t.as_str(), "varchar" | "nvarchar" | "varbinary")
        && schema
            .columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&column.name) && c.max_length == -1)
}

fn operation(op: i32) -> Operation {
    match op {
        1 => Operation::Delete,
        2 => Operation::Insert,
        3 => Operation::UpdateBefore,
        4 => Operation::UpdateAfter,
        _ => Operation::Unspecified,
    }
}

/// The page query of one instance (`@P1` rows, `@P2`/`@P3` the commit LSN range, then an
/// optional keyset bound). It reads the change table `cdc.<ci>_CT` because only it has
/// `__$command_id` (the TVFs do not return it; sqlserver-cdc.md §4.3), bounded by the max LSN
/// the poll read, so a reader never sees half of a capture scan. The order is the change
/// table's clustered key `(__$start_lsn, __$command_id, __$seqval, __$operation)`.
/// Keysets: after a row, `@P4..@P7` are its four key parts; on resume inside a transaction,
/// `@P4..@P6` are its commit LSN, seqval and operation.
pub fn changes_query(instance: &InstanceState, keyset: Option<KeysetKind>) -> String {
    let columns: String = instance
        .columns
        .iter()
        .map(|c| format!(", {}", sql::select_expression(&c.name, &c.type_name)))
        .collect();
    let table = quote_ident(&format!("{}_CT", instance.name));
    let keyset = match keyset {
        None => "",
        Some(KeysetKind::Row) => {
            " AND ([__$start_lsn] > @P4 OR ([__$start_lsn] = @P4 AND ([__$command_id] > @P5 OR ([__$command_id] = @P5 AND \
             ([__$seqval] > @P6 OR ([__$seqval] = @P6 AND [__$operation] > @P7))))))"
        }
        Some(KeysetKind::Resume) => {
            " AND ([__$start_lsn] > @P4 OR ([__$start_lsn] = @P4 AND ([__$seqval] > @P5 OR ([__$seqval] = @P5 AND [__$operation] > @P6))))"
        }
    };
    format!(
        "SELECT TOP (@P1) [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], [__$command_id]{columns} \
         FROM cdc.{table} WHERE [__$start_lsn] >= @P2 AND [__$start_lsn] <= @P3{keyset} \
         ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]"
    )
}

/// Which keyset bound a page query has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysetKind {
    Row,
    Resume,
}

/// The change stream of one request.
pub struct CdcStream {
    pool: Arc<SourcePool>,
    client: Option<SqlClient>,
    tables: Vec<TableState>,
    captured: BTreeMap<String, Vec<CapturedColumn>>,
    position: Position,
    pending: VecDeque<ChangeMessage>,
    cursors: Vec<Cursor>,
    window_max: Option<Lsn>,
    fragment: Option<FragmentBuilder>,
    commit_times: BTreeMap<Lsn, i64>,
    throttle: TaskThrottle,
    poll_interval: Duration,
    heartbeat_interval: Duration,
    max_rows: usize,
    max_bytes: u64,
    next_poll: Instant,
    last_progress: Option<(Lsn, Instant)>,
    tz_offset_minutes: i64,
    utc_now_ticks: i64,
    warned_null_max: bool,
    /// Hybrid mode: follow DDL by creating new capture instances, and write heartbeats.
    hybrid: bool,
    prefix: String,
    objects: HybridObjects,
    /// The DDL history table's capture instance and its start.
    history: Option<(String, Lsn)>,
    /// DDL events are read from here on (None: from the history instance's start).
    ddl_read_from: Option<Lsn>,
    warned_heartbeat: bool,
    /// Re-snapshot notices of tables that left the stream inside a transaction; sent once
    /// it is complete (apply takes them only between transactions); cause: added columns.
    due_resnapshots: Vec<(usize, Lsn, Lsn, String)>,
    /// The ADD COLUMN backfill being sent, a page at a time.
    backfill: Option<Backfill>,
    /// The change that waits for the backfill before it (its transaction follows the DDL).
    held: Option<ChangeRow>,
    /// The position for the retention-headroom timer ([`retention::spawn_timer`]); it ends
    /// when this sender is dropped with the stream.
    published: tokio::sync::watch::Sender<Lsn>,
}

impl CdcStream {
    /// Validates the request, connects and reads the capture instances. Fails when a table
    /// has no capture instance (run EnableCdc first) or the tables span several databases.
    pub async fn open(
        pools: &Pools,
        req: StreamChangesRequest,
        throttle: TaskThrottle,
    ) -> Result<CdcStream> {
        let source = req.source.as_ref().ok_or_else(|| {
            CaptureError::InvalidRequest("The request has no source connection".into())
        })?;
        if req.tables.is_empty() {
            return Err(CaptureError::InvalidRequest(
                "StreamChanges needs at least one table".into(),
            ));
        }
        let mut tables = Vec::with_capacity(req.tables.len());
        for schema in &req.tables {
            let table = schema.table.clone().ok_or_else(|| {
                CaptureError::InvalidRequest("A table schema has no table name".into())
            })?;
            tables.push(TableState {
                table,
                schema: schema.clone(),
                instances: Vec::new(),
                columns_sent: None,
                stopped: false,
                listed_instances: 0,
                listed_names: Vec::new(),
                events: Vec::new(),
                announced: 0,
                extra: Vec::new(),
                last_read: None,
                waiting_for_slot: false,
            });
        }
        let database = tables[0].table.database.clone();
        if let Some(other) = tables
            .iter()
            .find(|t| !t.table.database.eq_ignore_ascii_case(&database))
        {
            return Err(CaptureError::InvalidRequest(format!(
                "One change stream covers one database (LSNs are per database): {} is not in {database}; open one stream per database",
                sql::display_name(&other.table)
            )));
        }
        let from_lsn = if req.from_lsn.is_empty() {
            None
        } else {
            Some(Lsn::from_slice(&req.from_lsn).ok_or_else(|| {
                CaptureError::InvalidRequest(format!(
                    "from_lsn has {} bytes; an LSN has 10",
                    req.from_lsn.len()
                ))
            })?)
        };
        let pool = pools.pool(source, &database)?;
        let mut client = pool.dedicated().await?;
        let hybrid = req.incremental_mode.eq_ignore_ascii_case("hybrid");
        let prefix = if req.object_prefix.is_empty() {
            setup::DEFAULT_PREFIX.to_string()
        } else {
            req.object_prefix.clone()
        };
        if from_lsn.is_none() && hybrid && inspect::max_lsn(&mut client).await?.lsn.is_none() {
            // A fresh installation has captured nothing yet: one heartbeat gives "now" an LSN.
            inspect::batch(
                &mut client,
                "updating the heartbeat row",
                &HybridObjects::new(&prefix).heartbeat_sql(),
            )
            .await?;
        }
        let from_lsn = match from_lsn {
            Some(l) => l,
            // No position: start from now.
            None => inspect::max_lsn(&mut client).await?.lsn.ok_or_else(|| {
                CaptureError::Precondition(format!(
                    "CDC has not captured anything in {database} yet (sys.fn_cdc_get_max_lsn() is NULL): \
                     check that SQL Server Agent and the capture job run, or pass from_lsn"
                ))
            })?,
        };
        let position = if req.from_seqval.is_empty() {
            Position::end_of(from_lsn)
        } else {
            let seqval = Lsn::from_slice(&req.from_seqval).ok_or_else(|| {
                CaptureError::InvalidRequest(format!(
                    "from_seqval has {} bytes; an LSN has 10",
                    req.from_seqval.len()
                ))
            })?;
            Position {
                commit_lsn: from_lsn,
                seqval,
                operation: req.from_operation,
            }
        };
        let ms = |v: u32, d: Duration| {
            if v == 0 {
                d
            } else {
                Duration::from_millis(u64::from(v))
            }
        };
        let mut stream = CdcStream {
            pool,
            client: Some(client),
            tables,
            captured: BTreeMap::new(),
            position,
            pending: VecDeque::new(),
            cursors: Vec::new(),
            window_max: None,
            fragment: None,
            commit_times: BTreeMap::new(),
            throttle,
            poll_interval: ms(req.poll_interval_ms, DEFAULT_POLL_INTERVAL),
            heartbeat_interval: ms(req.heartbeat_interval_ms, DEFAULT_HEARTBEAT_INTERVAL),
            max_rows: if req.max_batch_rows == 0 {
                DEFAULT_FRAGMENT_ROWS
            } else {
                req.max_batch_rows as usize
            },
            max_bytes: if req.max_batch_bytes == 0 {
                DEFAULT_FRAGMENT_BYTES
            } else {
                req.max_batch_bytes
            },
            next_poll: Instant::now(),
            last_progress: None,
            tz_offset_minutes: 0,
            utc_now_ticks: 0,
            warned_null_max: false,
            hybrid,
            objects: HybridObjects::new(&prefix),
            prefix,
            history: None,
            ddl_read_from: None,
            warned_heartbeat: false,
            due_resnapshots: Vec::new(),
            backfill: None,
            held: None,
            published: tokio::sync::watch::Sender::new(position.commit_lsn),
        };
        let headroom = RetentionHeadroom::new(
            req.task_id.clone(),
            req.tables
                .iter()
                .filter_map(|t| t.table.as_ref())
                .map(sql::display_name)
                .collect(),
        );
        retention::spawn_timer(
            Arc::clone(&stream.pool),
            headroom,
            stream.published.subscribe(),
        );
        if stream.hybrid {
            stream.read_current_schemas().await;
        }
        stream.refresh_instances().await?;
        if stream.hybrid {
            stream.retire_old_instances().await?;
            // Events before the resume position were announced before; an instance still
            // read that predates them gets its rows translated to the new shape.
            if let Some(max) = inspect::max_lsn(stream.client().await?).await?.lsn {
                let lower = stream.lower_bound();
                stream.follow_ddl(lower, max).await?;
                stream.refresh_instances().await?;
            }
        }
        if let Some(t) = stream.tables.iter().find(|t| t.instances.is_empty()) {
            return Err(CaptureError::Precondition(format!(
                "Table {} has no CDC capture instance: run EnableCdc for it (sys.sp_cdc_enable_table) before streaming its changes",
                sql::display_name(&t.table)
            )));
        }
        Ok(stream)
    }

    /// Everything at or before this position has been delivered.
    pub fn position(&self) -> Position {
        self.position
    }

    fn set_position(&mut self, position: Position) {
        self.position = position;
        if *self.published.borrow() != position.commit_lsn {
            self.published.send_replace(position.commit_lsn);
        }
    }

    async fn client(&mut self) -> Result<&mut SqlClient> {
        if self.client.is_none() {
            self.client = Some(self.pool.dedicated().await?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs a query on the stream's connection; a broken connection is dropped so the next
    /// call reconnects.
    fn checked<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(CaptureError::Io { .. }) = &r {
            self.client = None;
        }
        r
    }

    /// Hybrid mode, at open: the request carries the applier's plan, which after a restart
    /// may predate schema changes the stream announced before; the columns an old instance
    /// lacks (extras, refetch, backfill) are those of the current source schema, so read it.
    /// The request's schema stays where the source cannot be read.
    async fn read_current_schemas(&mut self) {
        let selection = dbsync_proto::v1::ObjectSelection {
            databases: vec![],
            include: self
                .tables
                .iter()
                .map(|t| format!("{}.{}", t.table.schema, t.table.name))
                .collect(),
            exclude: vec![],
        };
        let database = self.tables[0].table.database.clone();
        let read = match self.client().await {
            Ok(client) => inspect::read_schema(client, &database, &selection).await,
            Err(e) => Err(e),
        };
        let schemas = match self.checked(read) {
            Ok((schemas, _)) => schemas,
            Err(e) => {
                tracing::warn!(error = %e, "reading the current schema of the stream's tables; using the request's");
                return;
            }
        };
        for t in &mut self.tables {
            let current = schemas.iter().find(|s| {
                s.table.as_ref().is_some_and(|r| {
                    r.schema.eq_ignore_ascii_case(&t.table.schema)
                        && r.name.eq_ignore_ascii_case(&t.table.name)
                })
            });
            if let Some(current) = current {
                t.schema = current.clone();
            }
        }
    }

    /// Re-reads `cdc.change_tables` (and the columns of instances not seen before).
    async fn refresh_instances(&mut self) -> Result<()> {
        let client = self.client().await?;
        let listed = inspect::capture_instances(client).await;
        let listed = self.checked(listed)?;
        if listed.iter().any(|i| !self.captured.contains_key(&i.name)) {
            let client = self.client().await?;
            let cols = inspect::captured_columns(client).await;
            self.captured = self.checked(cols)?;
        }
        let history_name = self.objects.history_instance(&self.prefix);
        self.history = listed
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(&history_name))
            .and_then(|i| Some((i.name.clone(), i.start_lsn?)));
        for t in &mut self.tables {
            let mut mine: Vec<&CaptureInstance> = listed
                .iter()
                .filter(|i| {
                    i.schema.eq_ignore_ascii_case(&t.table.schema)
                        && i.table.eq_ignore_ascii_case(&t.table.name)
                })
                .collect();
            // Creation order, not start LSN: a cleanup run on one instance alone can raise an
            // older instance's start above a newer one's.
            mine.sort_by_key(|i| (i.create_ticks, i.start_lsn, i.object_id));
            t.listed_instances = mine.len();
            t.listed_names = mine.iter().map(|i| i.name.clone()).collect();
            t.instances = mine
                .into_iter()
                // An instance without start_lsn has not been reached by the capture process.
                .filter_map(|i| {
                    let start_lsn = i.start_lsn?;
                    let columns = self.captured.get(&i.name).cloned().unwrap_or_default();
                    let lob = columns.iter().map(|c| is_lob(c, &t.schema)).collect();
                    Some(InstanceState {
                        name: i.name.clone(),
                        start_lsn,
                        columns,
                        lob,
                    })
                })
                .collect();
        }
        Ok(())
    }

    /// The next message of the stream; waits for the next poll when there is nothing to send.
    pub async fn next_message(&mut self) -> Result<ChangeMessage> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            if self.window_max.is_some() {
                self.advance_window().await?;
                continue;
            }
            tokio::time::sleep_until(self.next_poll.into()).await;
            self.next_poll = Instant::now() + self.poll_interval;
            self.start_window().await?;
        }
    }

    fn lower_bound(&self) -> Lsn {
        if self.position == Position::end_of(self.position.commit_lsn) {
            self.position.commit_lsn.increment()
        } else {
            self.position.commit_lsn
        }
    }

    fn resnapshot(&mut self, table: usize, requested: Lsn, min: Lsn, reason: String) {
        self.resnapshot_for(table, requested, min, reason, ResnapshotCause::Retention);
    }

    fn resnapshot_for(
        &mut self,
        table: usize,
        requested: Lsn,
        min: Lsn,
        reason: String,
        cause: ResnapshotCause,
    ) {
        let t = &mut self.tables[table];
        t.stopped = true;
        tracing::error!(table = %sql::display_name(&t.table), requested = %requested, min = %min, %reason,
            "changes are no longer available: the table needs a new snapshot");
        metrics::counter!("dbsync_capture_tables_resnapshot_total").increment(1);
        self.pending.push_back(ChangeMessage {
            kind: Some(change_message::Kind::NeedsResnapshot(
                TableNeedsResnapshot {
                    table_index: u32::try_from(table).unwrap_or(u32::MAX),
                    requested_lsn: requested.as_bytes().to_vec(),
                    min_lsn: min.as_bytes().to_vec(),
                    reason,
                    cause: cause.into(),
                },
            )),
        });
    }

    /// A re-snapshot for columns added to a table without a key: inside a transaction the table
    /// leaves the stream at once and its notice follows the transaction's last fragment.
    fn resnapshot_at_boundary(&mut self, table: usize, requested: Lsn, min: Lsn, reason: String) {
        if self.fragment.is_none() {
            self.resnapshot_for(table, requested, min, reason, ResnapshotCause::SchemaChange);
        } else {
            self.tables[table].stopped = true;
            self.due_resnapshots.push((table, requested, min, reason));
        }
    }

    /// Poll step 1-4: read the max LSN and the instances, and open the cursors of the window.
    async fn start_window(&mut self) -> Result<()> {
        self.throttle.query().await;
        let client = self.client().await?;
        let m = inspect::max_lsn(client).await;
        let m = self.checked(m)?;
        self.tz_offset_minutes = m.tz_offset_minutes;
        self.utc_now_ticks = m.utc_now_ticks;
        let Some(max) = m.lsn else {
            if !self.warned_null_max {
                tracing::warn!(source = %self.pool.describe(),
                    "sys.fn_cdc_get_max_lsn() is NULL: the CDC capture job has not run (is SQL Server Agent running?); retrying");
                self.warned_null_max = true;
            }
            return Ok(());
        };
        self.warned_null_max = false;
        metrics::gauge!("dbsync_capture_source_max_lsn").set(abbreviate(max) as f64);
        let lower = self.lower_bound();
        // Hybrid mode reads dbsync's DDL history on every poll: each event carries the commit
        // LSN of its DDL, and the sooner the new instance exists the shorter the stretch whose
        // rows are translated from the old shape.
        if self.hybrid && self.follow_ddl(lower, max).await? {
            self.refresh_instances().await?;
        }
        if lower > max {
            self.window_max = Some(max.max(self.position.commit_lsn));
            return Ok(());
        }
        self.refresh_instances().await?;
        self.prune_events();
        self.check_cleanup_race();
        let after = (self.position != Position::end_of(self.position.commit_lsn))
            .then_some(After::Resume(self.position));
        self.cursors.clear();
        for ti in 0..self.tables.len() {
            if self.tables[ti].stopped {
                continue;
            }
            let instances = &self.tables[ti].instances;
            let Some(first) = instances.iter().rposition(|i| i.start_lsn <= lower) else {
                let (min, reason) = match instances.first() {
                    Some(i) => (
                        i.start_lsn,
                        format!(
                            "capture instance {} starts at {} but changes from {lower} are needed \
                             (retention cleanup removed them, or CDC was enabled after that position)",
                            i.name, i.start_lsn
                        ),
                    ),
                    None => (Lsn::ZERO, "the table has no capture instance any more (CDC was disabled on it)".to_string()),
                };
                self.resnapshot(ti, lower, min, reason);
                continue;
            };
            self.tables[ti].last_read = Some((instances[first].name.clone(), lower));
            let instances = &self.tables[ti].instances;
            for ii in first..instances.len() {
                let seg_lower = lower.max(instances[ii].start_lsn);
                let seg_upper = match instances.get(ii + 1) {
                    Some(next) => max.min(next.start_lsn.decrement()),
                    None => max,
                };
                if seg_lower <= seg_upper {
                    self.cursors.push(Cursor {
                        table: ti,
                        instance: ii,
                        lower: seg_lower,
                        upper: seg_upper,
                        after,
                        buffer: VecDeque::new(),
                        exhausted: false,
                    });
                }
            }
        }
        self.window_max = Some(max);
        Ok(())
    }

    fn page_rows(&self) -> usize {
        let open = self.cursors.iter().filter(|c| !c.exhausted).count().max(1);
        (WINDOW_ROW_BUDGET / open).clamp(64, self.max_rows.max(64))
    }

    /// Fills the buffer of cursor `ci` with its next page.
    async fn fetch_page(&mut self, ci: usize) -> Result<()> {
        let page = self.page_rows();
        let (ti, ii) = (self.cursors[ci].table, self.cursors[ci].instance);
        let instance = self.tables[ti].instances[ii].clone();
        let after = self.cursors[ci].after;
        let (a_lsn, a_cmd, a_seq, a_op, keyset) = match after {
            None => (Lsn::ZERO, 0, Lsn::ZERO, 0, None),
            Some(After::Row(l, c, s, o)) => (l, c, s, o, Some(KeysetKind::Row)),
            Some(After::Resume(p)) => (
                p.commit_lsn,
                0,
                p.seqval,
                p.operation,
                Some(KeysetKind::Resume),
            ),
        };
        let from = if after.is_some() {
            a_lsn.max(self.cursors[ci].lower)
        } else {
            self.cursors[ci].lower
        };
        let upper = self.cursors[ci].upper;
        let query = changes_query(&instance, keyset);
        let top = ColumnData::I64(Some(i64::try_from(page).unwrap_or(i64::MAX)));
        let from_p = ColumnData::Binary(Some(from.as_bytes().to_vec().into()));
        let to_p = ColumnData::Binary(Some(upper.as_bytes().to_vec().into()));
        let a_lsn = ColumnData::Binary(Some(a_lsn.as_bytes().to_vec().into()));
        let a_cmd = ColumnData::I32(Some(a_cmd));
        let a_seq = ColumnData::Binary(Some(a_seq.as_bytes().to_vec().into()));
        let a_op = ColumnData::I32(Some(a_op));
        let mut params: Vec<&dyn tiberius::ToSql> = vec![&top, &from_p, &to_p];
        match keyset {
            Some(KeysetKind::Row) => {
                params.extend([&a_lsn as &dyn tiberius::ToSql, &a_cmd, &a_seq, &a_op])
            }
            Some(KeysetKind::Resume) => {
                params.extend([&a_lsn as &dyn tiberius::ToSql, &a_seq, &a_op])
            }
            None => {}
        }
        let context = format!("reading changes of capture instance {}", instance.name);
        self.throttle.query().await;
        self.client().await?;
        let result = async {
            let client = self.client.as_mut().ok_or_else(|| CaptureError::Io {
                context: context.clone(),
                detail: "not connected".into(),
            })?;
            let mut rows = client
                .query(query.as_str(), &params)
                .await
                .map_err(|e| CaptureError::from_tiberius(&context, e))?
                .into_row_stream();
            let mut out = VecDeque::with_capacity(page.min(1024));
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| CaptureError::from_tiberius(&context, e))?
            {
                out.push_back(decode_change(row, ti, ii, &instance)?);
            }
            Ok::<_, CaptureError>(out)
        }
        .await;
        let rows = match self.checked(result) {
            Ok(rows) => rows,
            // 208: the instance was disabled (its change table is gone).
            Err(e) if matches!(e.server_code(), Some(208) | Some(313)) => {
                let cursor_lower = from;
                self.cursors[ci].exhausted = true;
                self.cursors[ci].buffer.clear();
                let reason = format!("reading capture instance {} failed: {e}", instance.name);
                self.resnapshot(ti, cursor_lower, instance.start_lsn, reason);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let c = &mut self.cursors[ci];
        c.exhausted = rows.len() < page;
        if let Some(last) = rows.back() {
            c.after = Some(After::Row(
                last.commit_lsn,
                last.command_id,
                last.seqval,
                last.operation,
            ));
        }
        c.buffer = rows;
        Ok(())
    }

    /// Poll steps 4-6: merge the cursors until one message is ready or the window ends.
    async fn advance_window(&mut self) -> Result<()> {
        if self.backfill.is_some() {
            return self.backfill_page().await;
        }
        if let Some(row) = self.held.take() {
            self.add_change(row).await?;
            if !self.pending.is_empty() || self.backfill.is_some() {
                return Ok(());
            }
        }
        // First pages of cursors opened by start_window; cursors with nothing left are dropped
        // so the merge only looks at tables that have changes in the window.
        for ci in 0..self.cursors.len() {
            if self.cursors[ci].buffer.is_empty() && !self.cursors[ci].exhausted {
                self.fetch_page(ci).await?;
            }
        }
        self.drop_finished_cursors();
        while self.pending.is_empty() && self.backfill.is_none() {
            let best = self
                .cursors
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.buffer.front().map(|r| (r.key(), i)))
                .min();
            let Some((_, ci)) = best else {
                return self.finish_window().await;
            };
            let row = self.cursors[ci]
                .buffer
                .pop_front()
                .expect("head checked above");
            self.add_change(row).await?;
            if self.cursors[ci].buffer.is_empty() && !self.cursors[ci].exhausted {
                self.fetch_page(ci).await?;
            }
            self.drop_finished_cursors();
        }
        Ok(())
    }

    /// Removes cursors that have delivered everything, and those of tables that left the
    /// stream.
    fn drop_finished_cursors(&mut self) {
        let tables = &self.tables;
        self.cursors
            .retain(|c| !(tables[c.table].stopped || (c.exhausted && c.buffer.is_empty())));
    }

    async fn add_change(&mut self, mut row: ChangeRow) -> Result<()> {
        let ti = row.table_index as usize;
        if self.tables[ti].stopped {
            return Ok(());
        }
        if self
            .fragment
            .as_ref()
            .is_some_and(|f| f.commit_lsn != row.commit_lsn)
        {
            self.flush_fragment(true).await;
        }
        if self.fragment.is_none() {
            // A transaction starts: schema changes committed before it go first.
            self.announce_ddl(row.commit_lsn).await?;
            if self.backfill.is_some() {
                self.held = Some(row);
                return Ok(());
            }
            if self
                .fragment
                .as_ref()
                .is_some_and(|f| f.commit_lsn != row.commit_lsn)
            {
                self.flush_fragment(true).await;
            }
        }
        if self
            .fragment
            .as_ref()
            .is_some_and(|f| f.changes.len() >= self.max_rows || f.bytes >= self.max_bytes)
        {
            self.flush_fragment(false).await;
        }
        if self.tables[ti].stopped {
            return Ok(());
        }
        self.send_columns(ti, row.instance, row.commit_lsn).await?;
        if !self.tables[ti].extra.is_empty() {
            if !self.refetchable(ti, row.instance) {
                // Values of the added columns exist only in the table, and without a key its
                // rows cannot be read back: load the table again rather than lose them.
                let state = &self.tables[ti];
                let instance = &state.instances[row.instance];
                let added: Vec<&str> = state.extra.iter().map(|c| c.name.as_str()).collect();
                let reason = format!(
                    "columns {} were added to {} after its capture instance {} started, and the table has no key \
                     to read their values by, so the table is loaded again",
                    added.join(", "),
                    sql::display_name(&state.table),
                    instance.name
                );
                let min = instance.start_lsn;
                self.resnapshot_at_boundary(ti, row.commit_lsn, min, reason);
                return Ok(());
            }
            let extra = self.refetch(ti, &row).await?;
            row.values.extend(extra);
        }
        if self.fragment.is_none() {
            self.ensure_commit_time(row.commit_lsn).await?;
        }
        let commit_time_ticks = self.commit_times.get(&row.commit_lsn).copied();
        let next_index = self.fragment.as_ref().map(|f| f.index);
        let f = self.fragment.get_or_insert_with(|| FragmentBuilder {
            commit_lsn: row.commit_lsn,
            commit_time_ticks,
            changes: Vec::new(),
            bytes: 0,
            index: next_index.unwrap_or(0),
            last_position: row.position(),
        });
        f.bytes += row.bytes;
        f.last_position = row.position();
        f.changes.push(RowChange {
            table_index: row.table_index,
            operation: operation(row.operation).into(),
            seqval: row.seqval.as_bytes().to_vec(),
            command_id: row.command_id,
            update_mask: row.update_mask,
            values: row.values,
        });
        Ok(())
    }

    /// Hybrid mode: reads dbsync's DDL history up to `max` and gives tables whose columns
    /// changed a new capture instance ([`Self::cover_events`]); the stream switches to it at
    /// its start LSN. Events at or after `lower` are announced in stream order; earlier ones
    /// were announced before a restart. Returns whether the instances changed.
    async fn follow_ddl(&mut self, lower: Lsn, max: Lsn) -> Result<bool> {
        let Some((history, history_start)) = self.history.clone() else {
            return Ok(false);
        };
        let from = self
            .ddl_read_from
            .unwrap_or(history_start)
            .max(history_start);
        if from <= max {
            let client = self.client().await?;
            let events = hybrid::read_events(client, &history, from, max).await;
            let events = self.checked(events)?;
            self.ddl_read_from = Some(max.increment());
            for event in events {
                if !event.changes_columns() {
                    continue;
                }
                let Some(ti) = self.tables.iter().position(|t| {
                    !t.stopped
                        && t.table.schema.eq_ignore_ascii_case(&event.schema)
                        && t.table.name.eq_ignore_ascii_case(&event.table)
                }) else {
                    continue;
                };
                let state = &mut self.tables[ti];
                if state.events.iter().any(|e| e.lsn == event.lsn) {
                    continue;
                }
                if event.lsn < lower {
                    state.announced += 1;
                }
                state.events.push(event);
            }
        }
        self.cover_events().await
    }

    /// The capture instance dbsync creates for a column change at `lsn` (named after the LSN,
    /// so a restart sees it was created).
    fn instance_for(&self, ti: usize, lsn: Lsn) -> String {
        let t = &self.tables[ti].table;
        setup::capture_instance_name(
            &self.prefix,
            &t.schema,
            &format!("{}_{}", t.name, &lsn.to_hex()[12..]),
        )
    }

    /// Hybrid mode: a table whose newest column change no instance covers (none started after
    /// it, none created for it) gets one; it covers the earlier changes too. A table has at
    /// most two: when both exist, the older (dbsync's) is retired as soon as the stream has
    /// passed the newer one's start ([`Self::retire_passed`]) and the new one is created then,
    /// without a restart. Meanwhile rows get the added columns by key ([`Self::refetch`]); a
    /// table without a key is loaded again instead ([`Self::add_change`]).
    async fn cover_events(&mut self) -> Result<bool> {
        let mut changed = false;
        for ti in 0..self.tables.len() {
            let state = &self.tables[ti];
            let Some(newest) = state.events.last().filter(|_| !state.stopped) else {
                continue;
            };
            let (lsn, command) = (newest.lsn, newest.command.clone());
            let name = self.instance_for(ti, lsn);
            let state = &self.tables[ti];
            let covered = state
                .listed_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&name))
                || state.instances.iter().any(|i| i.start_lsn > lsn);
            if covered {
                continue;
            }
            let table_name = sql::display_name(&state.table);
            if state.listed_instances >= 2 && !self.retire_passed(ti).await? {
                if !self.tables[ti].waiting_for_slot {
                    tracing::warn!(table = %table_name, command = %command,
                        "schema change on a table that has two capture instances: the new one is created once the stream \
                         has passed the newer one; until then the new columns are read from the table by key");
                    self.tables[ti].waiting_for_slot = true;
                }
                continue;
            }
            let statement = setup::enable_table_statement(&self.tables[ti].table, &name);
            tracing::info!(table = %table_name, command = %command, lsn = %lsn, capture_instance = %name,
                "schema change: creating a new capture instance");
            let client = self.client().await?;
            let r = inspect::batch(
                client,
                &format!("creating capture instance {name} for {table_name}"),
                &statement,
            )
            .await;
            self.checked(r)?;
            let state = &mut self.tables[ti];
            state.listed_instances += 1;
            state.listed_names.push(name);
            state.waiting_for_slot = false;
            changed = true;
        }
        Ok(changed)
    }

    /// Hybrid mode: announces (with a [`SchemaChange`]) every schema change committed at or
    /// before `upto`, so apply alters the target before any later change.
    async fn announce_ddl(&mut self, upto: Lsn) -> Result<()> {
        loop {
            // The oldest unannounced event over all tables: announcements go in LSN order.
            let next = (0..self.tables.len())
                .filter(|ti| !self.tables[*ti].stopped)
                .filter_map(|ti| {
                    self.tables[ti]
                        .events
                        .get(self.tables[ti].announced)
                        .map(|e| (e.lsn, ti))
                })
                .filter(|(lsn, _)| *lsn <= upto)
                .min();
            let Some((lsn, ti)) = next else { return Ok(()) };
            if self.fragment.as_ref().is_some_and(|f| f.commit_lsn < lsn) {
                self.flush_fragment(true).await;
            }
            let event = &self.tables[ti].events[self.tables[ti].announced];
            let (command, added) = (event.command.clone(), event.added.clone());
            self.tables[ti].announced += 1;
            self.schema_change(ti, lsn, command).await?;
            if !added.is_empty() {
                self.start_backfill(ti, lsn, &added).await?;
                if self.backfill.is_some() {
                    // Its pages go first; the caller comes back here afterwards.
                    return Ok(());
                }
            }
        }
    }

    /// Sends the column list of the rows that follow, when it changed: the instance's
    /// captured columns, renamed as later DDL renamed them, plus the columns added after the
    /// instance started (read from the source row, [`Self::refetch`]). Rows of an old
    /// instance written after a DDL thus arrive in the new shape.
    async fn send_columns(&mut self, ti: usize, instance: usize, commit_lsn: Lsn) -> Result<()> {
        let inst = &self.tables[ti].instances[instance];
        let after_ddl: Vec<&DdlEvent> = self.tables[ti]
            .events
            .iter()
            .filter(|e| e.lsn >= inst.start_lsn && e.lsn <= commit_lsn)
            .collect();
        let shape = (inst.name.clone(), after_ddl.len());
        let renames: Vec<(String, String)> = after_ddl
            .iter()
            .filter_map(|e| e.renamed_column.clone())
            .collect();
        if self.tables[ti].columns_sent.as_ref() == Some(&shape) {
            return Ok(());
        }
        let mut columns: Vec<String> = inst.columns.iter().map(|c| c.name.clone()).collect();
        for (old, new) in &renames {
            columns
                .iter_mut()
                .filter(|c| c.eq_ignore_ascii_case(old))
                .for_each(|c| *c = new.clone());
        }
        let switching = self.tables[ti]
            .columns_sent
            .as_ref()
            .is_some_and(|(name, _)| *name != shape.0);
        let announced_by_ddl = self.tables[ti]
            .events
            .iter()
            .any(|e| e.lsn <= inst.start_lsn);
        let (name, start_lsn) = (inst.name.clone(), inst.start_lsn);
        if switching && !announced_by_ddl {
            // A new instance without a DDL event (created by someone else, or cdc-polling).
            self.schema_change(ti, start_lsn, String::new()).await?;
        }
        let extra: Vec<dbsync_proto::v1::ColumnSchema> = if shape.1 == 0 {
            Vec::new()
        } else {
            self.tables[ti]
                .schema
                .columns
                .iter()
                .filter(|c| {
                    c.computed_definition.is_empty()
                        && !columns.iter().any(|n| n.eq_ignore_ascii_case(&c.name))
                })
                .cloned()
                .collect()
        };
        columns.extend(extra.iter().map(|c| c.name.clone()));
        self.tables[ti].extra = extra;
        self.pending.push_back(ChangeMessage {
            kind: Some(change_message::Kind::Columns(ChangeTableColumns {
                table_index: u32::try_from(ti).unwrap_or(u32::MAX),
                capture_instance: name,
                columns,
                start_lsn: start_lsn.as_bytes().to_vec(),
            })),
        });
        self.tables[ti].columns_sent = Some(shape);
        Ok(())
    }

    /// Values of the columns an old instance lacks, read from the source row by its key: the
    /// row's current values, which later changes in the stream overwrite in order, so the
    /// target converges. Deletes and before images get NULLs (only their key is used); an
    /// after image whose row is gone, or a table without a key, leaves them unchanged (an
    /// insert writes NULL).
    async fn refetch(&mut self, ti: usize, row: &ChangeRow) -> Result<Vec<Value>> {
        let state = &self.tables[ti];
        let unknown = |op: i32| {
            let kind = (op == 4).then_some(Kind::Unchanged(true));
            vec![Value { kind }; state.extra.len()]
        };
        if row.operation != 2 && row.operation != 4 {
            return Ok(vec![Value::default(); state.extra.len()]);
        }
        let names: Vec<&str> = state.instances[row.instance]
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let mut params = sql::Params::default();
        let mut conditions = Vec::new();
        for key in &state.schema.key_columns {
            let column = state
                .schema
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(key));
            let position = names.iter().position(|n| n.eq_ignore_ascii_case(key));
            let (Some(column), Some(position)) = (column, position) else {
                return Ok(unknown(row.operation));
            };
            conditions.push(format!(
                "{} = {}",
                quote_ident(key),
                params.typed(&row.values[position], column)?
            ));
        }
        if conditions.is_empty() {
            return Ok(unknown(row.operation));
        }
        let select: Vec<String> = state
            .extra
            .iter()
            .map(|c| sql::select_expression(&c.name, &c.type_name))
            .collect();
        let query = format!(
            "SELECT {} FROM {} WHERE {}",
            select.join(", "),
            sql::table_name(&state.table),
            conditions.join(" AND ")
        );
        let context = format!("reading new columns of {}", sql::display_name(&state.table));
        let fallback = unknown(row.operation);
        let client = self.client().await?;
        let rows = inspect::query_rows(client, &context, &query, &params.values()).await;
        let rows = self.checked(rows)?;
        Ok(match rows.into_iter().next() {
            Some(r) => r.into_iter().map(decode::to_value).collect(),
            None => fallback,
        })
    }

    /// Can rows of the table read from `instance` be found in the table by key (the key
    /// columns are known and captured)?
    fn refetchable(&self, ti: usize, instance: usize) -> bool {
        let state = &self.tables[ti];
        let captured = &state.instances[instance].columns;
        !state.schema.key_columns.is_empty()
            && state.schema.key_columns.iter().all(|k| {
                captured.iter().any(|c| c.name.eq_ignore_ascii_case(k))
                    && state
                        .schema
                        .columns
                        .iter()
                        .any(|c| c.name.eq_ignore_ascii_case(k))
            })
    }

    /// Hybrid mode: after a column was added, rows may change only in it before the new
    /// capture instance starts, and the old instance does not record those changes. So every
    /// row's key and added columns are read from the table and sent as updates within the
    /// DDL's own transaction (commit LSN `lsn`, which holds no change of a stream table unless
    /// the DDL shared a user transaction with them, whose rows then follow). The values are
    /// read after the new instance started, and later changes in the stream overwrite them
    /// in order, so the target converges. The rows are read in key order a page at a time
    /// (keyset, at most `max_rows` per page, [`Self::backfill_page`]) and each page is sent
    /// before the next is read, so memory stays bounded whatever the table's size. Tables
    /// without a key cannot be addressed this way: a change that needs an added column's
    /// value loads them again ([`Self::add_change`]).
    async fn start_backfill(&mut self, ti: usize, lsn: Lsn, added: &[String]) -> Result<()> {
        let schema = &self.tables[ti].schema;
        let key: Vec<dbsync_proto::v1::ColumnSchema> = schema
            .key_columns
            .iter()
            .filter_map(|k| {
                schema
                    .columns
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(k))
                    .cloned()
            })
            .collect();
        let new: Vec<dbsync_proto::v1::ColumnSchema> = schema
            .columns
            .iter()
            .filter(|c| {
                c.computed_definition.is_empty()
                    && added.iter().any(|a| a.eq_ignore_ascii_case(&c.name))
            })
            .cloned()
            .collect();
        if key.is_empty() || key.len() != schema.key_columns.len() || new.is_empty() {
            return Ok(());
        }
        let key_len = key.len();
        let columns: Vec<dbsync_proto::v1::ColumnSchema> = key.into_iter().chain(new).collect();
        tracing::info!(table = %sql::display_name(&self.tables[ti].table), columns = ?added, "schema change: sending the added columns of every row");
        self.pending.push_back(ChangeMessage {
            kind: Some(change_message::Kind::Columns(ChangeTableColumns {
                table_index: u32::try_from(ti).unwrap_or(u32::MAX),
                capture_instance: String::new(),
                columns: columns.iter().map(|c| c.name.clone()).collect(),
                start_lsn: lsn.as_bytes().to_vec(),
            })),
        });
        self.tables[ti].columns_sent = None;
        self.ensure_commit_time(lsn).await?;
        let commit_time_ticks = self.commit_times.get(&lsn).copied();
        self.backfill = Some(Backfill {
            table: ti,
            lsn,
            columns,
            key_len,
            after: None,
            commit_time_ticks,
            rows: 0,
        });
        Ok(())
    }

    /// Reads and sends the backfill's next page (the rows after the last key sent).
    async fn backfill_page(&mut self) -> Result<()> {
        let Some(b) = self.backfill.as_mut() else {
            return Ok(());
        };
        let (ti, lsn, commit_time_ticks) = (b.table, b.lsn, b.commit_time_ticks);
        let page = self.max_rows.max(1);
        let table = self.tables[ti].table.clone();
        let mut params = sql::Params::default();
        let top = params.raw(ColumnData::I64(Some(
            i64::try_from(page).unwrap_or(i64::MAX),
        )));
        let keys: Vec<&dbsync_proto::v1::ColumnSchema> = b.columns[..b.key_len].iter().collect();
        let after = match &b.after {
            Some(last) => format!(
                " WHERE {}",
                sql::key_predicate(&keys, last, sql::Side::After, &mut params)?
            ),
            None => String::new(),
        };
        let select: Vec<String> = b
            .columns
            .iter()
            .map(|c| sql::select_expression(&c.name, &c.type_name))
            .collect();
        let query = format!(
            "SELECT TOP ({top}) {} FROM {}{after}{}",
            select.join(", "),
            sql::table_name(&table),
            sql::order_by(&keys)
        );
        let key_len = b.key_len;
        let context = format!("reading the added columns of {}", sql::display_name(&table));
        self.throttle.query().await;
        let client = self.client().await?;
        let rows = inspect::query_rows(client, &context, &query, &params.values()).await;
        let rows = self.checked(rows)?;
        let read = rows.len();
        let position = Position {
            commit_lsn: lsn,
            seqval: Lsn::ZERO,
            operation: 0,
        };
        let mut last_key = None;
        for row in rows {
            if self
                .fragment
                .as_ref()
                .is_some_and(|f| f.changes.len() >= self.max_rows || f.bytes >= self.max_bytes)
            {
                self.flush_fragment(false).await;
            }
            let values: Vec<Value> = row.into_iter().map(decode::to_value).collect();
            let bytes = values
                .iter()
                .map(|v| decode::value_size(v) as u64)
                .sum::<u64>()
                + 40;
            last_key = Some(values[..key_len].to_vec());
            let next_index = self.fragment.as_ref().map(|f| f.index);
            let f = self.fragment.get_or_insert_with(|| FragmentBuilder {
                commit_lsn: lsn,
                commit_time_ticks,
                changes: Vec::new(),
                bytes: 0,
                index: next_index.unwrap_or(0),
                last_position: position,
            });
            f.bytes += bytes;
            f.changes.push(RowChange {
                table_index: u32::try_from(ti).unwrap_or(u32::MAX),
                operation: Operation::UpdateAfter.into(),
                seqval: lsn.as_bytes().to_vec(),
                command_id: 0,
                update_mask: Vec::new(),
                values,
            });
        }
        if read == page
            && self
                .fragment
                .as_ref()
                .is_some_and(|f| f.changes.len() >= self.max_rows || f.bytes >= self.max_bytes)
        {
            // A full page is on its way before the next one is read.
            self.flush_fragment(false).await;
        }
        let b = self.backfill.as_mut().expect("checked above");
        b.rows += read as u64;
        b.after = last_key.or(b.after.take());
        if read < page {
            tracing::info!(table = %sql::display_name(&table), rows = b.rows, "schema change: added columns sent");
            self.backfill = None;
        }
        Ok(())
    }

    /// The change table is read directly (not through the TVF, which raises 313 when its range
    /// is gone), so a cleanup that ran while the last window was read is detected here: the
    /// instance's start LSN passed the window's lower bound.
    fn check_cleanup_race(&mut self) {
        for ti in 0..self.tables.len() {
            let Some((name, lower)) = self.tables[ti].last_read.take() else {
                continue;
            };
            if self.tables[ti].stopped {
                continue;
            }
            let moved = self.tables[ti]
                .instances
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.start_lsn)
                .filter(|s| *s > lower);
            if let Some(start) = moved {
                let reason = format!(
                    "retention cleanup moved capture instance {name} to {start} while changes from {lower} were being read"
                );
                self.resnapshot(ti, lower, start, reason);
            }
        }
    }

    /// Drops DDL events that no instance still read predates.
    fn prune_events(&mut self) {
        for t in &mut self.tables {
            let Some(oldest) = t.instances.first().map(|i| i.start_lsn) else {
                continue;
            };
            let gone = t
                .events
                .iter()
                .take(t.announced)
                .take_while(|e| e.lsn < oldest)
                .count();
            t.events.drain(..gone);
            t.announced -= gone;
        }
    }

    /// Hybrid mode, at open: the resume position is the applier's durable checkpoint, so an
    /// older instance that dbsync created and that ends below it is no longer needed. Dropping
    /// it frees the second slot for the next schema change (a table has at most two).
    async fn retire_old_instances(&mut self) -> Result<()> {
        let mut retired = false;
        for ti in 0..self.tables.len() {
            retired |= self.retire_passed(ti).await?;
        }
        if retired {
            self.refresh_instances().await?;
        }
        Ok(())
    }

    /// Drops the table's older instances (dbsync's only) once the position has passed the
    /// newest one's start: the stream never reads them again. Mid-stream (only when a column
    /// change needs the slot) the applier may not have committed that far yet; if it restarts
    /// from below, the table finds no instance covering its position and is loaded again,
    /// loudly, never skipped. Returns whether one was dropped.
    async fn retire_passed(&mut self, ti: usize) -> Result<bool> {
        let prefix = self.prefix.to_ascii_lowercase();
        let instances = self.tables[ti].instances.clone();
        let Some(newest) = instances.last() else {
            return Ok(false);
        };
        if instances.len() < 2 || self.position.commit_lsn < newest.start_lsn {
            return Ok(false);
        }
        let mut retired = false;
        for old in &instances[..instances.len() - 1] {
            if !old.name.to_ascii_lowercase().starts_with(&prefix) {
                continue;
            }
            let t = self.tables[ti].table.clone();
            let statement = setup::disable_table_statement(&t.schema, &t.name, &old.name);
            tracing::info!(table = %sql::display_name(&t), capture_instance = %old.name, "retiring a capture instance the stream has passed");
            let client = self.client().await?;
            let r = inspect::batch(
                client,
                &format!("disabling capture instance {}", old.name),
                &statement,
            )
            .await;
            self.checked(r)?;
            let state = &mut self.tables[ti];
            state.instances.retain(|i| i.name != old.name);
            state.listed_names.retain(|n| *n != old.name);
            state.listed_instances = state.listed_instances.saturating_sub(1);
            retired = true;
        }
        Ok(retired)
    }

    /// Announces a schema change of a table (or its switch to a newer capture instance) with
    /// its current schema read from the source.
    async fn schema_change(&mut self, ti: usize, lsn: Lsn, ddl_command: String) -> Result<()> {
        let table = self.tables[ti].table.clone();
        let selection = dbsync_proto::v1::ObjectSelection {
            databases: vec![],
            include: vec![format!("{}.{}", table.schema, table.name)],
            exclude: vec![],
        };
        let client = self.client().await?;
        let read = inspect::read_schema(client, &table.database, &selection).await;
        let (schemas, _) = self.checked(read)?;
        let new_schema = schemas.into_iter().next();
        if let Some(s) = &new_schema {
            self.tables[ti].schema = s.clone();
        }
        // The column list is sent again after the change (apply re-reads the table).
        self.tables[ti].columns_sent = None;
        self.pending.push_back(ChangeMessage {
            kind: Some(change_message::Kind::SchemaChange(SchemaChange {
                table_index: u32::try_from(ti).unwrap_or(u32::MAX),
                lsn: lsn.as_bytes().to_vec(),
                ddl_command,
                new_schema,
            })),
        });
        Ok(())
    }

    /// Commit times come from `cdc.lsn_time_mapping`, read a page of transactions at a time
    /// (one query per [`COMMIT_TIME_PAGE`] transactions, not one per row).
    async fn ensure_commit_time(&mut self, commit_lsn: Lsn) -> Result<()> {
        if self.commit_times.contains_key(&commit_lsn) {
            return Ok(());
        }
        let to = self.window_max.unwrap_or(commit_lsn).max(commit_lsn);
        let client = self.client().await?;
        let times = inspect::commit_times(client, commit_lsn, to, COMMIT_TIME_PAGE).await;
        let times = self.checked(times)?;
        self.commit_times.clear();
        self.commit_times.extend(times);
        Ok(())
    }

    /// Sends the transaction being assembled; a non-final fragment leaves a builder for the
    /// rest of the same transaction.
    async fn flush_fragment(&mut self, last: bool) {
        let Some(f) = self.fragment.take() else {
            return;
        };
        self.throttle
            .rows_and_bytes(f.changes.len() as u64, f.bytes)
            .await;
        metrics::counter!("dbsync_capture_changes_read_total").increment(f.changes.len() as u64);
        let commit_time_unix_micros = f
            .commit_time_ticks
            .map(|t| decode::ticks_to_unix_micros(t - self.tz_offset_minutes * 600_000_000))
            .unwrap_or(0);
        self.set_position(if last {
            Position::end_of(f.commit_lsn)
        } else {
            f.last_position
        });
        if !last {
            self.fragment = Some(FragmentBuilder {
                commit_lsn: f.commit_lsn,
                commit_time_ticks: f.commit_time_ticks,
                changes: Vec::new(),
                bytes: 0,
                index: f.index + 1,
                last_position: f.last_position,
            });
        }
        self.pending.push_back(ChangeMessage {
            kind: Some(change_message::Kind::Transaction(TransactionFragment {
                commit_lsn: f.commit_lsn.as_bytes().to_vec(),
                commit_time_unix_micros,
                changes: f.changes,
                last_fragment: last,
                fragment_index: f.index,
            })),
        });
        if last {
            for (table, requested, min, reason) in std::mem::take(&mut self.due_resnapshots) {
                self.resnapshot_for(table, requested, min, reason, ResnapshotCause::SchemaChange);
            }
        }
    }

    /// Poll step 6: the window is delivered; report progress.
    async fn finish_window(&mut self) -> Result<()> {
        self.flush_fragment(true).await;
        let Some(max) = self.window_max else {
            return Ok(());
        };
        self.announce_ddl(max).await?;
        if self.backfill.is_some() {
            // advance_window sends its pages, then comes back here.
            return Ok(());
        }
        self.window_max = None;
        self.flush_fragment(true).await;
        self.cursors.clear();
        self.commit_times.clear();
        if max > self.position.commit_lsn
            || self.position != Position::end_of(self.position.commit_lsn)
        {
            self.set_position(Position::end_of(max.max(self.position.commit_lsn)));
        }
        let now = Instant::now();
        let due = match self.last_progress {
            None => true,
            Some((lsn, at)) => {
                lsn < self.position.commit_lsn || now.duration_since(at) >= self.heartbeat_interval
            }
        };
        if due && self.hybrid {
            self.heartbeat().await;
        }
        if due {
            self.last_progress = Some((self.position.commit_lsn, now));
            self.pending.push_back(ChangeMessage {
                kind: Some(change_message::Kind::Progress(Progress {
                    lsn: self.position.commit_lsn.increment().as_bytes().to_vec(),
                    source_time_unix_micros: if self.utc_now_ticks == 0 {
                        0
                    } else {
                        decode::ticks_to_unix_micros(self.utc_now_ticks)
                    },
                })),
            });
        }
        Ok(())
    }
}

impl CdcStream {
    /// Hybrid mode: touch the heartbeat row so the capture job records a transaction and the
    /// high-water mark keeps moving on an idle source. Failures are logged once, not fatal.
    async fn heartbeat(&mut self) {
        let statement = self.objects.heartbeat_sql();
        let result = match self.client().await {
            Ok(client) => inspect::batch(client, "updating the heartbeat row", &statement).await,
            Err(e) => Err(e),
        };
        if let Err(e) = self.checked(result) {
            if !self.warned_heartbeat {
                tracing::warn!(error = %e, "heartbeat update failed (run EnableCdc in hybrid mode to create the heartbeat table)");
                self.warned_heartbeat = true;
            }
        }
    }
}

/// The 8 high bytes of an LSN as an ordered number (for gauges).
pub fn abbreviate(lsn: Lsn) -> u64 {
    u64::try_from(lsn.to_u128() >> 16).unwrap_or(u64::MAX)
}

/// Decodes one change row: start LSN, seqval, operation, mask, command id, then the columns.
fn decode_change(
    row: tiberius::Row,
    table: usize,
    instance_index: usize,
    instance: &InstanceState,
) -> Result<ChangeRow> {
    let mut cells = row.into_iter();
    let mut next = |what: &str| {
        cells.next().ok_or_else(|| CaptureError::Decode {
            column: what.to_string(),
            detail: "missing in the change row".into(),
        })
    };
    let lsn = |c: ColumnData<'static>, what: &str| match c {
        ColumnData::Binary(Some(b)) => Lsn::from_slice(&b).ok_or_else(|| CaptureError::Decode {
            column: what.to_string(),
            detail: format!("{} bytes, expected 10", b.len()),
        }),
        other => Err(CaptureError::Decode {
            column: what.to_string(),
            detail: format!("expected binary(10), got {other:?}"),
        }),
    };
    let commit_lsn = lsn(next("__$start_lsn")?, "__$start_lsn")?;
    let seqval = lsn(next("__$seqval")?, "__$seqval")?;
    let operation = match next("__$operation")? {
        ColumnData::I32(Some(v)) => v,
        ColumnData::I64(Some(v)) => i32::try_from(v).unwrap_or(0),
        ColumnData::I16(Some(v)) => i32::from(v),
        ColumnData::U8(Some(v)) => i32::from(v),
        other => {
            return Err(CaptureError::Decode {
                column: "__$operation".into(),
                detail: format!("got {other:?}"),
            })
        }
    };
    let update_mask = match next("__$update_mask")? {
        ColumnData::Binary(Some(b)) => b.into_owned(),
        _ => Vec::new(),
    };
    let command_id = match next("__$command_id")? {
        ColumnData::I32(Some(v)) => v,
        ColumnData::I64(Some(v)) => i32::try_from(v).unwrap_or(i32::MAX),
        ColumnData::I16(Some(v)) => i32::from(v),
        ColumnData::U8(Some(v)) => i32::from(v),
        // NULL before the KB 3030352 fix: seqval orders alone.
        _ => 0,
    };
    let mut values: Vec<Value> = cells.map(decode::to_value).collect();
    if values.len() != instance.columns.len() {
        return Err(CaptureError::Decode {
            column: instance.name.clone(),
            detail: format!(
                "{} captured columns expected, {} returned",
                instance.columns.len(),
                values.len()
            ),
        });
    }
    mark_unchanged_lobs(operation, &update_mask, &instance.lob, &mut values);
    let bytes = values
        .iter()
        .map(|v| decode::value_size(v) as u64)
        .sum::<u64>()
        + 40;
    Ok(ChangeRow {
        commit_lsn,
        seqval,
        operation,
        command_id,
        table_index: u32::try_from(table).unwrap_or(u32::MAX),
        instance: instance_index,
        update_mask,
        values,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_bits_count_from_the_last_byte() {
        // 10 captured columns, insert: 0x03FF
        let all = [0x03, 0xFF];
        assert!((1..=10).all(|o| mask_bit(&all, o)));
        assert!(!mask_bit(&all, 11));
        // only column 2 and column 9 changed
        let m = [0x01, 0x02];
        assert!(mask_bit(&m, 2) && mask_bit(&m, 9));
        assert!(!mask_bit(&m, 1) && !mask_bit(&m, 10));
        assert!(!mask_bit(&[], 1));
    }

    #[test]
    fn unchanged_lobs_are_marked_only_in_updates_with_a_clear_bit() {
        let lob = [false, true, true];
        let mut vals = vec![decode::int(1), Value::default(), Value::default()];
        // column 3 changed (set to NULL), column 2 untouched
        mark_unchanged_lobs(4, &[0b100], &lob, &mut vals);
        assert_eq!(vals[1].kind, Some(Kind::Unchanged(true)));
        assert_eq!(vals[2].kind, None);
        let mut del = vec![decode::int(1), Value::default(), Value::default()];
        mark_unchanged_lobs(1, &[0], &lob, &mut del);
        assert!(del
            .iter()
            .all(|v| !matches!(v.kind, Some(Kind::Unchanged(_)))));
    }

    #[test]
    fn change_query_pages_the_change_table_in_command_order() {
        let inst = InstanceState {
            name: "dbo_orders".into(),
            start_lsn: Lsn::ZERO,
            columns: vec![
                CapturedColumn {
                    name: "id".into(),
                    ordinal: 1,
                    type_name: "int".into(),
                    is_computed: false,
                },
                CapturedColumn {
                    name: "total".into(),
                    ordinal: 2,
                    type_name: "money".into(),
                    is_computed: false,
                },
            ],
            lob: vec![false, false],
        };
        assert_eq!(
            changes_query(&inst, None),
            "SELECT TOP (@P1) [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], [__$command_id], [id], \
             CAST([total] AS decimal(19,4)) AS [total] \
             FROM cdc.[dbo_orders_CT] WHERE [__$start_lsn] >= @P2 AND [__$start_lsn] <= @P3 \
             ORDER BY [__$start_lsn], [__$command_id], [__$seqval], [__$operation]"
        );
        assert!(changes_query(&inst, Some(KeysetKind::Row)).contains(
            "[__$start_lsn] <= @P3 AND ([__$start_lsn] > @P4 OR ([__$start_lsn] = @P4 AND ([__$command_id] > @P5 OR \
             ([__$command_id] = @P5 AND ([__$seqval] > @P6 OR ([__$seqval] = @P6 AND [__$operation] > @P7)))))) ORDER BY"
        ));
        assert!(changes_query(&inst, Some(KeysetKind::Resume)).contains(
            "AND ([__$start_lsn] > @P4 OR ([__$start_lsn] = @P4 AND ([__$seqval] > @P5 OR ([__$seqval] = @P5 AND [__$operation] > @P6)))) ORDER BY"
        ));
    }

    fn row(commit: u128, seq: u128, op: i32, table: u32) -> ChangeRow {
        ChangeRow {
            commit_lsn: Lsn::from_u128(commit),
            seqval: Lsn::from_u128(seq),
            operation: op,
            command_id: 1,
            table_index: table,
            instance: 0,
            update_mask: vec![],
            values: vec![],
            bytes: 10,
        }
    }

    #[test]
    fn merge_key_orders_interleaved_transactions_by_commit_then_seqval_then_operation() {
        // T1 began first (seqvals 1, 3) but committed at 20; T2 (seqval 2) committed at 10.
        // A key-changing update in T1: delete (1) and insert (2) share seqval 3.
        let mut rows = [
            row(20, 3, 2, 0),
            row(20, 1, 4, 1),
            row(10, 2, 2, 0),
            row(20, 3, 1, 0),
            row(20, 1, 3, 1),
        ];
        rows.sort_by_key(|r| r.key());
        let order: Vec<(u128, u128, i32)> = rows
            .iter()
            .map(|r| (r.commit_lsn.to_u128(), r.seqval.to_u128(), r.operation))
            .collect();
        assert_eq!(
            order,
            vec![(10, 2, 2), (20, 1, 3), (20, 1, 4), (20, 3, 1), (20, 3, 2)]
        );
    }

    #[test]
    fn the_command_id_orders_before_the_seqval() {
        // Statement 2's row got a lower seqval than statement 1's (the KB 3030352 case).
        let mut first = row(20, 5, 2, 0);
        let mut second = row(20, 4, 1, 0);
        first.command_id = 1;
        second.command_id = 2;
        let mut rows = [second.clone(), first.clone()];
        rows.sort_by_key(|r| r.key());
        assert_eq!(rows, [first, second]);
    }
}
