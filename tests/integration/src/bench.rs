//! The benchmarks behind `make bench` (`dbsync-bench`). Each prints its rate next to a ceiling
//! measured in the same run on the same machine.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::BytesMut;
use dbsync_proto::v1 as pb;
use dbsync_proto::v1::{value::Kind, ColumnSchema, Value};
use dbsync_sqlserver_sim::types::Value as SimValue;
use dbsync_typemap::{
    begin_row, copy_header, copy_trailer, decimal_from_parts, encode_value, map_column,
    MappingOptions, PgColumnType,
};
use futures_util::{SinkExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::harness::standin::prepare_database;
use crate::harness::{measure_lag, CdcTiming, EnvOptions, StandIn, TestEnv};

/// The benchmark database and table on the source.
pub const BENCH_DB: &str = "bench";
/// Seven columns: bigint key, int, text (varchar(100)), numeric(12,2), datetime2, bit, nvarchar(200).
pub const BENCH_DDL: &str = "CREATE TABLE dbo.bench7 (id bigint NOT NULL PRIMARY KEY, qty int NOT NULL, label varchar(100) NULL, \
     amount numeric(12, 2) NULL, created datetime2(7) NULL, flag bit NULL, name nvarchar(200) NULL)";
const COLUMNS: [(&str, &str, i32, i32, i32); 7] = [
    ("id", "bigint", 8, 19, 0),
    ("qty", "int", 4, 10, 0),
    ("label", "varchar", 100, 0, 0),
    ("amount", "numeric", 9, 12, 2),
    ("created", "datetime2", 8, 27, 7),
    ("flag", "bit", 1, 1, 0),
    ("name", "nvarchar", 400, 0, 0),
];

const DAYS_2024: i32 = 738_885;
const TICKS_PER_DAY: u64 = 864_000_000_000;

/// Row `i` of the benchmark table as the stand-in stores it.
pub fn sim_row(i: i64) -> Vec<SimValue> {
    vec![
        SimValue::BigInt(i),
        SimValue::Int((i * 7 % 100_000) as i32),
        SimValue::String(Arc::from(format!("label {i}"))),
        SimValue::Decimal(i128::from(i * 37 % 10_000_000_000), 2),
        SimValue::DateTime2 {
            days: DAYS_2024 + (i % 1000) as i32,
            ticks: (i as u64 * 12_345_671) % TICKS_PER_DAY,
        },
        SimValue::Bit(i % 2 == 0),
        SimValue::String(Arc::from(format!(
            "name {i} · a customer with a longer display name"
        ))),
    ]
}

/// The same row as the wire values dbsync streams.
pub fn wire_row(i: i64) -> Vec<Value> {
    let v = |k: Kind| Value { kind: Some(k) };
    let days = i64::from(DAYS_2024 + (i % 1000) as i32);
    vec![
        v(Kind::Int(i)),
        v(Kind::Int(i * 7 % 100_000)),
        v(Kind::Text(format!("label {i}"))),
        v(Kind::Decimal(decimal_from_parts(
            i128::from(i * 37 % 10_000_000_000),
            2,
        ))),
        v(Kind::Datetime(
            days * TICKS_PER_DAY as i64 + ((i as u64 * 12_345_671) % TICKS_PER_DAY) as i64,
        )),
        v(Kind::Bool(i % 2 == 0)),
        v(Kind::Text(format!(
            "name {i} · a customer with a longer display name"
        ))),
    ]
}

fn pg_types() -> anyhow::Result<Vec<PgColumnType>> {
    COLUMNS
        .iter()
        .map(|(name, ty, len, p, s)| {
            let c = ColumnSchema {
                name: (*name).into(),
                type_name: (*ty).into(),
                max_length: *len,
                precision: *p,
                scale: *s,
                ..Default::default()
            };
            map_column(&c, &MappingOptions::default()).map_err(|e| anyhow!("map {name}: {e}"))
        })
        .collect()
}

fn pg_table_ddl(table: &str) -> anyhow::Result<String> {
    let types = pg_types()?;
    let cols: Vec<String> = COLUMNS
        .iter()
        .zip(&types)
        .map(|((n, ..), t)| format!("{n} {}", t.ddl()))
        .collect();
    Ok(format!(
        "CREATE TABLE {table} ({}, PRIMARY KEY (id))",
        cols.join(", ")
    ))
}

/// Creates database `bench` with `rows` rows in dbo.bench7, prepared for dbsync.
pub async fn load_source(standin: &StandIn, rows: u64) -> anyhow::Result<()> {
    standin.run("master", &format!("CREATE DATABASE {BENCH_DB}"))?;
    standin.run(BENCH_DB, BENCH_DDL)?;
    let engine = standin.engine.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let batch = 50_000i64;
        for lo in (0..rows as i64).step_by(batch as usize) {
            let hi = (lo + batch).min(rows as i64);
            engine
                .insert_rows(BENCH_DB, "dbo", "bench7", (lo..hi).map(sim_row).collect())
                .map_err(|e| anyhow!("load bench rows: {e:?}"))?;
        }
        prepare_database(&engine, BENCH_DB)
    })
    .await??;
    Ok(())
}

/// Binary COPY of rows `range` into `table` (one COPY, 8 MB flushes): the ceiling.
pub async fn raw_copy(
    pg: &tokio_postgres::Client,
    table: &str,
    range: std::ops::Range<i64>,
    wire: impl Fn(i64) -> Vec<Value>,
) -> anyhow::Result<u64> {
    let types = pg_types()?;
    let sink = pg
        .copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
        .await?;
    futures_util::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(9 << 20);
    copy_header(&mut buf);
    for i in range {
        let row = wire(i);
        begin_row(&mut buf, row.len() as u16);
        for (value, ty) in row.iter().zip(&types) {
            encode_value(value, ty, &mut buf)?;
        }
        if buf.len() > 8 << 20 {
            sink.send(buf.split().freeze()).await?;
        }
    }
    copy_trailer(&mut buf);
    sink.send(buf.split().freeze()).await?;
    Ok(sink.finish().await?)
}

/// Runs `transactions` source transactions on dbo.bench7 of database `bench` (rows `0..base`
/// loaded), one every `every`: each inserts `per_txn` new rows, updates `per_txn` existing
/// rows, and deletes a fifth of the rows it inserted (inside the same transaction). Stops early
/// when `stop` is cancelled; returns the row changes committed.
pub async fn drive_bench_changes(
    standin: &StandIn,
    base: u64,
    transactions: u64,
    per_txn: u64,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut client = standin.connect(BENCH_DB).await?;
    let mut ticker = tokio::time::interval(every);
    let mut next_id = 10_000_000_000i64;
    let mut changes = 0;
    for t in 0..transactions {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let mut sql = String::from("BEGIN TRANSACTION; INSERT INTO dbo.bench7 VALUES ");
        for k in 0..per_txn as i64 {
            let i = next_id + k;
            if k > 0 {
                sql.push(',');
            }
            write!(
                sql,
                "({i}, {}, 'label {i}', {}.25, '2024-05-01T10:00:00.1234567', 1, N'name {i}')",
                i % 977,
                i % 1000
            )?;
        }
        let lo = (t * per_txn) % base.max(1);
        let deleted = per_txn / 5;
        write!(
            sql,
            "; UPDATE dbo.bench7 SET qty = qty + 1, label = 'changed {t}' WHERE id >= {lo} AND id < {};              DELETE FROM dbo.bench7 WHERE id >= {next_id} AND id < {}; COMMIT;",
            lo + per_txn,
            next_id + deleted as i64
        )?;
        client.simple_query(sql).await?.into_results().await?;
        next_id += per_txn as i64;
        changes += per_txn + per_txn.min(base) + deleted;
    }
    Ok(changes)
}

/// The task file of a benchmark-table task.
pub fn bench_task(
    env: &TestEnv,
    name: &str,
    full: bool,
    incremental: bool,
    chunk_rows: u64,
) -> String {
    format!(
        "{}sync: {{ schema: true, full: {full}, incremental: {incremental} }}\n\
         incremental: {{ mode: cdc-polling, poll_interval_ms: 100 }}\n\
         objects: {{ databases: [{BENCH_DB}] }}\nchunk_rows: {chunk_rows}\nparallel_chunks: 4\n",
        env.task_base(name)
    )
}

/// Sizes and options of a run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub rows: u64,
    /// Offered change rate of the incremental benchmark.
    pub rate: u64,
    pub seconds: u64,
    /// Directory of the service binaries (per-service memory); `None`: services in-process.
    pub binaries: Option<PathBuf>,
    /// Chunks loaded at once by the full-sync benchmark.
    pub parallel_chunks: u32,
    /// Run (d) verify after the full-sync benchmark.
    pub verify: bool,
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// (a) full sync through capture and apply vs raw binary COPY; returns the report text.
pub async fn bench_full(o: &BenchOptions) -> anyhow::Result<String> {
    let env = TestEnv::start(EnvOptions {
        sample_rows: None,
        appliers: 1,
        cdc: CdcTiming::AtCommit,
        service_binaries: o.binaries.clone(),
        ..Default::default()
    })
    .await?;
    load_source(&env.standin, o.rows).await?;
    let pg = env.target().await?;

    // Ceiling: the same rows from memory straight into an identical table.
    pg.batch_execute(&format!(
        "CREATE SCHEMA ceiling; {}",
        pg_table_ddl("ceiling.bench7")?
    ))
    .await?;
    let started = Instant::now();
    raw_copy(&pg, "ceiling.bench7", 0..o.rows as i64, wire_row).await?;
    let ceiling = started.elapsed();
    pg.batch_execute("DROP SCHEMA ceiling CASCADE").await?;

    let spec = format!(
        "{}sync: {{ schema: true, full: true, incremental: false }}\nobjects: {{ databases: [{BENCH_DB}] }}\nchunk_rows: 100000\nparallel_chunks: {}\n",
        env.task_base("bench-full"),
        o.parallel_chunks.max(1)
    );
    let cpu_before = CpuSample::take(&env);
    let started = Instant::now();
    let task = env.run_task(&spec).await?;
    let status = env
        .wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(3600))
        .await?;
    let elapsed = started.elapsed();
    let cpu = CpuSample::take(&env).since(&cpu_before);
    let copied: i64 = pg
        .query_one("SELECT count(*) FROM dbo.bench7", &[])
        .await?
        .get(0);
    if copied as u64 != o.rows {
        return Err(anyhow!("full sync copied {copied} rows of {}", o.rows));
    }
    let bytes = status.tables.iter().map(|t| t.bytes_done).sum::<u64>();
    let dbsync_rate = rate(o.rows, elapsed);
    let ceiling_rate = rate(o.rows, ceiling);
    let mut out = String::new();
    writeln!(out, "(a) full sync of {} rows x 7 columns (bigint, int, varchar(100), numeric(12,2), datetime2(7), bit, nvarchar(200))", o.rows)?;
    writeln!(
        out,
        "    dbsync (stand-in → capture → apply → PG)  {:>10.0} rows/s  {:>7.1} MB/s  {:.1} s",
        dbsync_rate,
        mb(bytes) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "    ceiling: raw binary COPY from memory       {:>10.0} rows/s  {:.1} s",
        ceiling_rate,
        ceiling.as_secs_f64()
    )?;
    writeln!(
        out,
        "    ratio {:.0}% of ceiling (target ≥ 60%)",
        100.0 * dbsync_rate / ceiling_rate
    )?;
    writeln!(out, "{}", cpu.report(elapsed))?;
    writeln!(out, "{}", memory_report(&env))?;
    if o.rows > 0 && o.verify {
        writeln!(out, "{}", bench_verify_on(&env, &task, o.rows).await?)?;
    }
    Ok(out)
}

/// CPU seconds per component of a run: where the time goes, nearly independent of what else
/// the machine does (wall-clock rates are not).
struct CpuSample(Vec<(&'static str, f64)>);

impl CpuSample {
    fn take(env: &TestEnv) -> CpuSample {
        use crate::harness::cpu;
        let service = |s: &crate::harness::service::Service| s.pid().map_or(0.0, cpu::tree_seconds);
        CpuSample(vec![
            // The stand-in runs inside this process.
            (
                "stand-in",
                cpu::process_seconds(std::process::id()).unwrap_or(0.0),
            ),
            ("capture", service(&env.capture)),
            ("apply", env.appliers.iter().map(service).sum()),
            (
                "PostgreSQL",
                env.pg.postmaster_pid().map_or(0.0, cpu::tree_seconds),
            ),
            ("coordinator", service(&env.coordinator)),
        ])
    }

    fn since(&self, before: &CpuSample) -> CpuSample {
        CpuSample(
            self.0
                .iter()
                .zip(&before.0)
                .map(|((name, now), (_, then))| (*name, now - then))
                .collect(),
        )
    }

    fn report(&self, wall: Duration) -> String {
        let total: f64 = self.0.iter().map(|(_, s)| s).sum();
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(name, s)| format!("{name} {s:.1}"))
            .collect();
        format!(
            "    CPU seconds: {}; total {total:.1} in {:.1} s wall ({:.1} cores busy)",
            parts.join(", "),
            wall.as_secs_f64(),
            total / wall.as_secs_f64().max(1e-9)
        )
    }
}

fn memory_report(env: &TestEnv) -> String {
    let services = std::iter::once(&env.coordinator)
        .chain(std::iter::once(&env.capture))
        .chain(env.appliers.iter());
    let per: Vec<String> = services
        .filter_map(|s| {
            s.peak_rss_bytes()
                .map(|b| format!("{} {:.0} MB", s.name, mb(b)))
        })
        .collect();
    if per.is_empty() {
        let own = crate::harness::service::peak_rss_of("/proc/self/status")
            .map(mb)
            .unwrap_or(0.0);
        format!("    peak memory: services in-process; whole process (incl. stand-in data) {own:.0} MB — run `make bench` for per-service numbers")
    } else {
        format!("    peak memory per service (VmHWM): {}", per.join(", "))
    }
}

/// (d) verify on an already synced table vs count(*) + full scan of both sides.
async fn bench_verify_on(env: &TestEnv, task: &str, rows: u64) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut client = env.client().await?;
    let started = Instant::now();
    let verify = client
        .verify_task(pb::VerifyTaskRequest {
            task_id: task.into(),
            mode: "full".into(),
            ..Default::default()
        })
        .await;
    let verify_time = started.elapsed();
    // Ceiling: count(*) and a full scan of each side.
    let started = Instant::now();
    let mut source = env.standin.connect(BENCH_DB).await?;
    source
        .simple_query("SELECT count(*) FROM dbo.bench7")
        .await?
        .into_row()
        .await?;
    let mut stream = source
        .simple_query("SELECT * FROM dbo.bench7")
        .await?
        .into_row_stream();
    let mut scanned = 0u64;
    while stream.try_next().await?.is_some() {
        scanned += 1;
    }
    drop(stream);
    let pg = env.target().await?;
    pg.query_one("SELECT count(*) FROM dbo.bench7", &[]).await?;
    let copy = pg
        .copy_out("COPY dbo.bench7 TO STDOUT (FORMAT binary)")
        .await?;
    futures_util::pin_mut!(copy);
    while copy.try_next().await?.is_some() {}
    let scan_time = started.elapsed();
    writeln!(out, "(d) verify of {rows} rows")?;
    match verify {
        Ok(report) => {
            let report = report.into_inner();
            writeln!(out, "    dbsync verify                              {:>10.0} rows/s  {:.1} s  result: {}", rate(rows, verify_time), verify_time.as_secs_f64(), if report.equal { "equal" } else { "DIFFERENT" })?;
        }
        Err(status) => writeln!(
            out,
            "    dbsync verify: not available ({})",
            status.message()
        )?,
    }
    write!(out, "    ceiling: count(*) + full scan of both sides {:>9.0} rows/s  {:.1} s ({scanned} source rows scanned)", rate(rows, scan_time), scan_time.as_secs_f64())?;
    Ok(out)
}

/// (b) the stand-in alone: SELECT of `rows` x 7 columns to tiberius, and row changes/s with CDC on.
pub async fn bench_standin(o: &BenchOptions) -> anyhow::Result<String> {
    let standin = StandIn::start(None, CdcTiming::Job(Duration::from_millis(500))).await?;
    load_source(&standin, o.rows).await?;
    let mut client = standin.connect(BENCH_DB).await?;
    let started = Instant::now();
    let mut stream = client
        .simple_query("SELECT id, qty, label, amount, created, flag, name FROM dbo.bench7")
        .await?
        .into_row_stream();
    let mut n = 0u64;
    while stream.try_next().await?.is_some() {
        n += 1;
    }
    drop(stream);
    let select_time = started.elapsed();

    // Row changes with CDC on: multi-row INSERTs then range UPDATEs into a tracked table.
    standin.run(BENCH_DB, "EXEC sys.sp_cdc_enable_db")?;
    standin.run(BENCH_DB, &BENCH_DDL.replace("bench7", "changes7"))?;
    standin.run(BENCH_DB, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'changes7', @role_name = NULL")?;
    let changes = (o.rows / 5).max(2_000);
    let started = Instant::now();
    let per_statement = 500u64;
    let mut id = 0u64;
    while id < changes {
        let mut sql = String::from("BEGIN TRANSACTION; INSERT INTO dbo.changes7 VALUES ");
        for i in id..(id + per_statement).min(changes) {
            if i > id {
                sql.push(',');
            }
            write!(
                sql,
                "({i}, {}, 'label {i}', {}.25, '2024-05-01T10:00:00.1234567', 1, N'name {i}')",
                i % 977,
                i % 1000
            )?;
        }
        sql.push_str("; COMMIT;");
        client.simple_query(sql).await?.into_results().await?;
        id += per_statement;
    }
    for lo in (0..changes).step_by(5_000) {
        client
            .simple_query(format!("UPDATE dbo.changes7 SET qty = qty + 1, label = 'changed' WHERE id >= {lo} AND id < {}", lo + 5_000))
            .await?
            .into_results()
            .await?;
    }
    // Committed is not enough: the clock stops when the capture job has written every change.
    standin_capture_caught_up(&standin, BENCH_DB).await?;
    let change_time = started.elapsed();
    let mut out = String::new();
    writeln!(out, "(b) SQL Server stand-in")?;
    writeln!(
        out,
        "    SELECT {n} rows x 7 columns to tiberius   {:>10.0} rows/s (target 250k+)",
        rate(n, select_time)
    )?;
    write!(out, "    row changes accepted with CDC on, over TDS {:>9.0} changes/s (target 50k+; {} inserts + {} updates, committed and captured)", rate(2 * changes, change_time), changes, changes)?;
    standin.shutdown();
    Ok(out)
}

/// Waits until the stand-in's capture job has written every committed transaction of
/// `database` to its change tables.
async fn standin_capture_caught_up(standin: &StandIn, database: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while standin.cdc.pending_transactions(database) > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stand-in's capture job did not catch up within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// (c) incremental: sustained applied changes/s and lag at a fixed offered rate, vs a staged
/// COPY + merge of the same row changes.
pub async fn bench_incremental(o: &BenchOptions) -> anyhow::Result<String> {
    let env = TestEnv::start(EnvOptions {
        sample_rows: None,
        appliers: 1,
        cdc: CdcTiming::Job(Duration::from_millis(100)),
        service_binaries: o.binaries.clone(),
        ..Default::default()
    })
    .await?;
    let base = (o.rows / 10).max(1_000);
    load_source(&env.standin, base).await?;
    let spec = format!(
        "{}sync: {{ schema: true, full: true, incremental: true }}\nincremental: {{ mode: cdc-polling, poll_interval_ms: 100 }}\nobjects: {{ databases: [{BENCH_DB}] }}\n",
        env.task_base("bench-incremental")
    );
    let task = env.run_task(&spec).await?;
    env.wait_phases(
        &task,
        &[pb::TablePhase::Streaming],
        Duration::from_secs(600),
    )
    .await?;
    let applied_before: u64 = env
        .status(&task)
        .await?
        .tables
        .iter()
        .map(|t| t.changes_applied)
        .sum();

    // Offered load: every 20 ms one transaction of rate/50 changes (half inserts, half updates).
    let per_txn = (o.rate / 50).max(2);
    let txns = o.seconds * 50;
    let stop = CancellationToken::new();
    let lag_stop = stop.clone();
    let mut client = env.standin.connect(BENCH_DB).await?;
    let driver = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut next_id = base as i64;
        let mut offered = 0u64;
        let started = Instant::now();
        for t in 0..txns {
            ticker.tick().await;
            let inserts = per_txn / 2;
            let mut sql = String::from("BEGIN TRANSACTION; INSERT INTO dbo.bench7 VALUES ");
            for k in 0..inserts {
                let i = next_id + k as i64;
                if k > 0 {
                    sql.push(',');
                }
                write!(
                    sql,
                    "({i}, {}, 'label {i}', {}.25, '2024-05-01T10:00:00.1234567', 1, N'name {i}')",
                    i % 977,
                    i % 1000
                )?;
            }
            next_id += inserts as i64;
            let lo = (t * (per_txn - inserts)) % base;
            write!(
                sql,
                "; UPDATE dbo.bench7 SET qty = qty + 1 WHERE id >= {lo} AND id < {}; COMMIT;",
                lo + (per_txn - inserts)
            )?;
            client.simple_query(sql).await?.into_results().await?;
            offered += per_txn;
        }
        let offered_time = started.elapsed();
        lag_stop.cancel();
        anyhow::Ok((offered, offered_time))
    };
    let lag = measure_lag(
        &env,
        &task,
        BENCH_DB,
        Duration::from_millis(20),
        Duration::from_secs(120),
        stop.clone(),
    );
    let started = Instant::now();
    let (driven, lag) = tokio::join!(driver, lag);
    let (offered, offered_time) = driven?;
    env.wait_caught_up(&task, BENCH_DB, Duration::from_secs(300))
        .await?;
    let apply_time = started.elapsed();
    let applied: u64 = env
        .status(&task)
        .await?
        .tables
        .iter()
        .map(|t| t.changes_applied)
        .sum::<u64>()
        - applied_before;

    // Ceiling: the same row images via staged binary COPY + one merge.
    let pg = env.target().await?;
    pg.batch_execute(&format!(
        "CREATE SCHEMA ceiling; {}; {}",
        pg_table_ddl("ceiling.bench7")?,
        pg_table_ddl("ceiling.stage")?.replace(", PRIMARY KEY (id)", "")
    ))
    .await?;
    raw_copy(&pg, "ceiling.bench7", 0..base as i64, wire_row).await?;
    let started = Instant::now();
    raw_copy(&pg, "ceiling.stage", 0..offered as i64, |i| {
        wire_row(i % (base as i64 + offered as i64 / 2))
    })
    .await?;
    pg.batch_execute(
        "INSERT INTO ceiling.bench7 SELECT DISTINCT ON (id) * FROM ceiling.stage ORDER BY id \
         ON CONFLICT (id) DO UPDATE SET qty = EXCLUDED.qty, label = EXCLUDED.label, amount = EXCLUDED.amount, \
         created = EXCLUDED.created, flag = EXCLUDED.flag, name = EXCLUDED.name",
    )
    .await?;
    let ceiling_time = started.elapsed();
    pg.batch_execute("DROP SCHEMA ceiling CASCADE").await?;

    let mut out = String::new();
    writeln!(out, "(c) incremental (cdc-polling), offered {} changes/s for {} s ({offered} changes in {:.1} s)", o.rate, o.seconds, offered_time.as_secs_f64())?;
    writeln!(out, "    dbsync applied                             {:>10.0} changes/s ({applied} changes reported)", rate(offered, apply_time))?;
    writeln!(
        out,
        "    end-to-end lag (commit → applied)          {}",
        lag.summary()
    )?;
    write!(
        out,
        "    ceiling: staged binary COPY + merge        {:>10.0} changes/s",
        rate(offered, ceiling_time)
    )?;
    Ok(out)
}
