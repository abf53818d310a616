//! Verification of one table: counts, partition sums, narrowing, re-checks and repair.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use dbsync_apply::capture::CaptureClient;
use dbsync_apply::pg::catalog::ResolvedTable;
use dbsync_apply::plan::TableTarget;
use dbsync_apply::ApplyError;
use dbsync_proto::v1::{
    CanonicalColumn, ChecksumChunksRequest, Chunk, KeyBound, PlanChunksRequest, ReadChunkRequest,
    ReadRowsRequest, TablePlan, TableSchema, Value,
};
use dbsync_typemap::render_literal;
use futures::{StreamExt, TryStreamExt};
use rand::{rngs::StdRng, SeedableRng};
use tokio_postgres::Client;

use crate::canon::{bucket_of, parse_digest, Aggregate, Digest16, RowHasher, Shape};
use crate::error::{Result, VerifyError};
use crate::report::{DiffKind, Difference, TableReport};
use crate::{Mode, Phase, VerifyProgress, VerifyRequest};

pub(crate) struct Context<'a> {
    pub request: &'a VerifyRequest,
    pub capture: CaptureClient,
    pub pg: Vec<Client>,
}

/// SQL Server key types whose order PostgreSQL's mapped type keeps exactly, so a key range
/// selects the same rows on both sides.
const ORDER_SAFE_KEY_TYPES: &[&str] = &[
    "tinyint",
    "smallint",
    "int",
    "bigint",
    "decimal",
    "numeric",
    "money",
    "smallmoney",
    "date",
    "bit",
];

/// How a table is split so that both sides compare the same rows.
enum Partitions {
    /// Capture's key ranges; partition i is chunk i.
    Ranges(Vec<Chunk>),
    /// Buckets of the key digest; the source is read through all of `chunks`.
    Buckets { count: u32, chunks: Vec<Chunk> },
}

/// A row that differs, before details.
#[derive(Clone, Debug)]
struct Candidate {
    kind: DiffKind,
    key_digest: Digest16,
    partition: u32,
    /// Source key values (rows the source has).
    key: Option<Vec<Value>>,
    /// Digest of the source row (None: the source has no such row).
    source_row: Option<Digest16>,
    render: String,
}

struct SourceEntry {
    row: Digest16,
    count: u32,
    partition: u32,
    key: Vec<Value>,
}

struct Table<'a> {
    ctx: &'a Context<'a>,
    schema: TableSchema,
    name: String,
    where_filter: String,
    shape: Shape,
    /// `shape` as capture's `ChecksumChunks` takes it.
    wire: (Vec<CanonicalColumn>, Vec<u32>),
    partitions: Partitions,
}

pub(crate) async fn verify_table(
    ctx: &Context<'_>,
    plan: &TablePlan,
    index: usize,
    progress: &mut impl FnMut(VerifyProgress),
) -> Result<TableReport> {
    let request = ctx.request;
    let target = TableTarget::from_plan(plan)?;
    let name = target.source_name.clone();
    let resolved = ResolvedTable::load(&ctx.pg[0], target)
        .await
        .map_err(|e| match e {
            ApplyError::Target { object, source, .. } => VerifyError::InvalidRequest {
                object,
                detail: format!(
                    "the target table cannot be read ({source}); run the task's schema sync first"
                ),
            },
            other => other.into(),
        })?;
    let shape = Shape::from_resolved(&resolved);
    let schema = resolved.target.source.clone();
    let mut report = TableReport {
        source: name.clone(),
        source_ref: schema.table.clone().unwrap_or_default(),
        target: shape.qualified.clone(),
        equal: true,
        ..Default::default()
    };
    // Known once the chunks are planned; read by every tick.
    let rows_total = AtomicU64::new(0);
    let mut tick = |phase: Phase, done: u64, total: u64, rows: u64, differences: u64| {
        progress(VerifyProgress {
            table: name.clone(),
            table_index: index,
            tables_total: request.tables.len(),
            phase,
            partitions_done: done,
            partitions_total: total,
            rows_verified: rows,
            rows_total: rows_total.load(Ordering::Relaxed),
            differences,
        })
    };
    tick(Phase::Counting, 0, 0, 0, 0);

    let chunks = ctx
        .capture
        .clone()
        .plan_chunks(PlanChunksRequest {
            source: Some(request.source.clone()),
            table: Some(schema.clone()),
            target_rows: request.chunk_rows,
            where_filter: resolved.target.where_filter.clone(),
        })
        .await
        .map_err(|s| VerifyError::capture(&name, "planning chunks", s))?
        .into_inner()
        .chunks;
    let planned_rows: u64 = chunks.iter().map(|c| c.estimated_rows).sum();
    report.target_rows = count_target(&ctx.pg[0], &shape.qualified).await?;

    let order_safe = shape.keyed
        && shape.key.iter().all(|k| {
            let c = &schema.columns[shape.columns[*k].source_index];
            ORDER_SAFE_KEY_TYPES.contains(&c.type_name.to_ascii_lowercase().as_str())
        });
    let partitions = if order_safe {
        report.partitioning = "key ranges".into();
        Partitions::Ranges(chunks)
    } else {
        report.partitioning = if shape.keyed {
            "key buckets"
        } else {
            "row buckets"
        }
        .into();
        if !shape.keyed {
            report.notes.push("no primary key or unique index: rows are matched whole (a changed row shows as missing + extra) and are not repaired".into());
        }
        let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX).max(1);
        Partitions::Buckets { count, chunks }
    };
    let wire = shape.wire();
    let table = Table {
        ctx,
        schema,
        name: name.clone(),
        where_filter: resolved.target.where_filter.clone(),
        shape,
        wire,
        partitions,
    };
    let total = table.partition_count();
    report.partitions_total = u64::from(total);
    let selected = select_partitions(total, &request.mode);
    report.partitions_compared = selected.len() as u64;
    rows_total.store(
        match &table.partitions {
            Partitions::Ranges(chunks) => selected
                .iter()
                .map(|p| chunks[*p as usize].estimated_rows)
                .sum(),
            Partitions::Buckets { .. } => planned_rows,
        },
        Ordering::Relaxed,
    );

    // 1. Sums per partition on both sides.
    // Progress counts source reads: one per selected range, or every chunk for buckets.
    let reads = match &table.partitions {
        Partitions::Ranges(_) => selected.len(),
        Partitions::Buckets { chunks, .. } => chunks.len(),
    } as u64;
    tick(Phase::Checksumming, 0, reads, 0, 0);
    let (sums, scanned_rows) = table
        .compare_sums(&selected, &mut |done, rows| {
            tick(Phase::Checksumming, done, reads, rows, 0)
        })
        .await?;
    report.rows_compared = sums.iter().map(|(_, source, _)| source.rows).sum();
    report.source_rows = match scanned_rows {
        Some(rows) if selected.len() as u32 == total => rows,
        _ => planned_rows,
    };
    let mismatched: Vec<u32> = sums
        .iter()
        .filter(|(_, s, t)| s != t)
        .map(|(p, _, _)| *p)
        .collect();
    report.partitions_mismatched = mismatched.len() as u64;
    metrics::counter!("dbsync_verify_rows_total", "table" => name.clone())
        .increment(report.rows_compared);

    // 2. Differing rows of the mismatched partitions.
    let mut candidates = Vec::new();
    if !mismatched.is_empty() {
        tick(
            Phase::Narrowing,
            0,
            mismatched.len() as u64,
            report.rows_compared,
            0,
        );
        candidates = table.narrow(&mismatched).await?;
    }

    // 3. Changes in flight: re-check after the delay plus the lag; keep what still differs.
    // A row is confirmed when it still differs after a whole wait during which its source row
    // did not change (apply had the time to deliver it); a row whose source keeps changing
    // is re-checked again, and left unconfirmed when it never settles.
    if let Mode::Incremental {
        recheck_delay,
        attempts,
        lag,
    } = &request.mode
    {
        let wait = *recheck_delay + *lag;
        let mut pending = if *attempts > 0 {
            std::mem::take(&mut candidates)
        } else {
            Vec::new()
        };
        let mut attempt = 0;
        while !pending.is_empty() && attempt < *attempts {
            attempt += 1;
            tick(
                Phase::Rechecking,
                u64::from(attempt),
                u64::from(*attempts),
                report.rows_compared,
                pending.len() as u64,
            );
            tokio::time::sleep(wait).await;
            let parts: Vec<u32> = pending
                .iter()
                .map(|c| c.partition)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let before: HashMap<Digest16, Option<Digest16>> = pending
                .iter()
                .map(|c| (c.key_digest, c.source_row))
                .collect();
            let mut moving = Vec::new();
            for c in table.narrow(&parts).await? {
                match before.get(&c.key_digest) {
                    // Differs now but not before: a newer change in flight, not ours to judge.
                    None => {}
                    Some(previous) if *previous == c.source_row => candidates.push(c),
                    Some(_) => moving.push(c),
                }
            }
            pending = moving;
        }
        if attempt > 0 {
            report.notes.push(format!(
                "{attempt} re-check(s) after {:.1} s each for changes in flight",
                wait.as_secs_f64()
            ));
        }
        if !pending.is_empty() {
            report.notes.push(format!(
                "{} row(s) changed on the source at every re-check and could not be confirmed; verify again when the load is lower",
                pending.len()
            ));
        }
    }

    // 4. Details: which columns differ.
    let columns = table.differing_columns(&candidates).await?;
    report.differences_total = candidates.len() as u64;
    for c in candidates.iter().take(request.max_differences) {
        report.differences.push(Difference {
            kind: c.kind,
            key: c.render.clone(),
            columns: columns.get(&c.key_digest).cloned().unwrap_or_default(),
        });
        metrics::counter!("dbsync_verify_mismatches_total", "table" => name.clone(), "kind" => c.kind.as_str()).increment(1);
    }

    // 5. Repair.
    if request.repair && !candidates.is_empty() {
        tick(
            Phase::Repairing,
            0,
            candidates.len() as u64,
            report.rows_compared,
            candidates.len() as u64,
        );
        if !table.shape.keyed {
            report
                .notes
                .push("not repaired: the table has no key to address rows by".into());
        } else if candidates.len() > request.max_differences {
            report.notes.push(format!(
                "not repaired: {} differences exceed the cap of {}; re-run the table's full sync instead",
                candidates.len(),
                request.max_differences
            ));
        } else {
            report.repaired = table.repair(&candidates).await?;
            metrics::counter!("dbsync_verify_repaired_rows_total", "table" => name.clone())
                .increment(report.repaired);
        }
    }

    let sampled = matches!(request.mode, Mode::Sampled { .. });
    report.equal = candidates.is_empty() && (!sampled || report.source_rows == report.target_rows);
    if sampled && report.source_rows != report.target_rows {
        report
            .notes
            .push("row counts differ outside the sampled chunks".into());
    }
    tracing::info!(table = %name, equal = report.equal, rows = report.rows_compared, differences = report.differences_total, repaired = report.repaired, "table verified");
    tick(
        Phase::Done,
        u64::from(total),
        u64::from(total),
        report.rows_compared,
        candidates.len() as u64,
    );
    Ok(report)
}

/// The partitions to compare: all, or a seeded random share (at least one).
fn select_partitions(total: u32, mode: &Mode) -> Vec<u32> {
    match mode {
        Mode::Sampled { percent, seed } => {
            let amount =
                ((f64::from(total) * percent / 100.0).ceil() as usize).clamp(1, total as usize);
            let mut rng = StdRng::seed_from_u64(*seed);
            let mut picked: Vec<u32> = rand::seq::index::sample(&mut rng, total as usize, amount)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            picked.sort_unstable();
            picked
        }
        _ => (0..total).collect(),
    }
}

async fn count_target(client: &Client, qualified: &str) -> Result<u64> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
        .await
        .map_err(|e| VerifyError::target(qualified, "counting rows", e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

fn parse_sum(text: &str) -> i128 {
    text.parse().unwrap_or(i128::MIN)
}

impl Table<'_> {
    fn partition_count(&self) -> u32 {
        match &self.partitions {
            Partitions::Ranges(chunks) => u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            Partitions::Buckets { count, .. } => *count,
        }
    }

    fn pg(&self, i: usize) -> &Client {
        &self.ctx.pg[i % self.ctx.pg.len()]
    }

    /// The target predicate selecting a partition's rows.
    fn predicate(&self, partitions: &[u32]) -> Result<String> {
        match &self.partitions {
            Partitions::Ranges(chunks) => {
                let mut ors = Vec::new();
                for p in partitions {
                    ors.push(self.range_predicate(&chunks[*p as usize])?);
                }
                Ok(format!("({})", ors.join(" OR ")))
            }
            Partitions::Buckets { count, .. } => {
                let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
                Ok(format!(
                    "{} IN ({})",
                    self.shape.bucket_sql(*count),
                    list.join(", ")
                ))
            }
        }
    }

    /// `(k…) > (lower…) AND (k…) <= (upper…)` with typed literals.
    fn range_predicate(&self, chunk: &Chunk) -> Result<String> {
        let keys: Vec<&str> = self
            .shape
            .key
            .iter()
            .map(|k| self.shape.columns[*k].quoted.as_str())
            .collect();
        let tuple = format!("({})", keys.join(", "));
        let literal = |bound: &KeyBound| -> Result<String> {
            let mut parts = Vec::new();
            for (k, v) in self.shape.key.iter().zip(&bound.values) {
                let ty = &self.shape.columns[*k].ty;
                parts.push(
                    render_literal(v, ty).map_err(|e| VerifyError::InvalidRequest {
                        object: self.name.clone(),
                        detail: format!(
                            "a chunk bound cannot be written as a PostgreSQL literal: {e}"
                        ),
                    })?,
                );
            }
            Ok(format!("({})", parts.join(", ")))
        };
        let mut conds = vec!["true".to_string()];
        if let Some(lower) = &chunk.lower {
            conds.push(format!("{tuple} > {}", literal(lower)?));
        }
        if let Some(upper) = &chunk.upper {
            conds.push(format!("{tuple} <= {}", literal(upper)?));
        }
        Ok(format!("({})", conds.join(" AND ")))
    }

    /// Sums computed by capture next to the source (only the sums cross gRPC): per chunk, or
    /// with `buckets`, per bucket of the key digest.
    async fn source_sums(&self, chunk: &Chunk, buckets: u32) -> Result<HashMap<u32, Aggregate>> {
        let request = self.ctx.request;
        let (columns, key) = self.wire.clone();
        let response = self
            .ctx
            .capture
            .clone()
            .checksum_chunks(ChecksumChunksRequest {
                source: Some(request.source.clone()),
                task_id: request.task_id.clone(),
                table: Some(self.schema.clone()),
                chunks: vec![chunk.clone()],
                throttle: Some(request.throttle),
                where_filter: self.where_filter.clone(),
                columns,
                key,
                buckets,
            })
            .await
            .map_err(|s| VerifyError::capture(&self.name, "summing a chunk", s))?
            .into_inner();
        let mut out = HashMap::with_capacity(response.chunks.len());
        for c in response.chunks {
            let sums = Aggregate::from_sums_bytes(c.rows, &c.high_sum, &c.low_sum).ok_or_else(|| VerifyError::Capture {
                table: self.name.clone(),
                action: "summing a chunk",
                code: tonic::Code::Internal,
                message: "the answer has no digest sums (is the capture service older than this verifier?)".into(),
            })?;
            out.insert(c.index, sums);
        }
        Ok(out)
    }

    /// The source sums of one key range.
    async fn range_source_sums(&self, chunk: &Chunk) -> Result<Aggregate> {
        if self.ctx.request.source_checksums {
            return Ok(self
                .source_sums(chunk, 0)
                .await?
                .into_values()
                .next()
                .unwrap_or_default());
        }
        let mut hasher = RowHasher::new(&self.shape);
        let mut sums = Aggregate::default();
        self.read_source(chunk, |values| sums.add(&hasher.digests(values).1))
            .await?;
        Ok(sums)
    }

    /// The source sums per key-digest bucket of the rows of one chunk.
    async fn bucket_source_sums(
        &self,
        chunk: &Chunk,
        buckets: u32,
    ) -> Result<HashMap<u32, Aggregate>> {
        if self.ctx.request.source_checksums {
            return self.source_sums(chunk, buckets).await;
        }
        let mut hasher = RowHasher::new(&self.shape);
        let mut out: HashMap<u32, Aggregate> = HashMap::new();
        self.read_source(chunk, |values| {
            let (key, row) = hasher.digests(values);
            out.entry(bucket_of(&key, buckets)).or_default().add(&row);
        })
        .await?;
        Ok(out)
    }

    /// Streams the source rows of `chunk` to `f`.
    async fn read_source(&self, chunk: &Chunk, mut f: impl FnMut(&[Value])) -> Result<u64> {
        let request = self.ctx.request;
        let mut stream = self
            .ctx
            .capture
            .clone()
            .read_chunk(ReadChunkRequest {
                source: Some(request.source.clone()),
                task_id: request.task_id.clone(),
                table: Some(self.schema.clone()),
                chunk: Some(chunk.clone()),
                where_filter: self.where_filter.clone(),
                max_batch_rows: 0,
                max_batch_bytes: 0,
                throttle: Some(request.throttle),
                packed_rows: false,
            })
            .await
            .map_err(|s| VerifyError::capture(&self.name, "reading a chunk", s))?
            .into_inner();
        let mut rows = 0;
        while let Some(batch) = stream
            .message()
            .await
            .map_err(|s| VerifyError::capture(&self.name, "reading a chunk", s))?
        {
            for row in &batch.rows {
                f(&row.values);
            }
            rows += batch.rows.len() as u64;
        }
        Ok(rows)
    }

    /// Sums of the given partitions on the target (partitions without rows are absent).
    async fn target_sums(
        &self,
        client: &Client,
        partitions: &[u32],
    ) -> Result<HashMap<u32, Aggregate>> {
        let digest = self.shape.row_digest_sql();
        // OFFSET 0 keeps PostgreSQL from pulling the subquery up: pulled up, each use of `h`
        // (and `b`) would compute the row's digest again.
        let sums =
            "count(*)::int8, COALESCE(sum(('x' || substr(h, 1, 16))::bit(64)::int8), 0)::text, \
                    COALESCE(sum(('x' || substr(h, 17, 16))::bit(64)::int8), 0)::text";
        let (sql, ranges) = match &self.partitions {
            Partitions::Ranges(_) => (
                format!("SELECT 0::int8, {sums} FROM (SELECT {digest} AS h FROM {} WHERE {} OFFSET 0) s", self.shape.qualified, self.predicate(partitions)?),
                true,
            ),
            Partitions::Buckets { count, .. } => (
                format!(
                    "SELECT b, {sums} FROM (SELECT {} AS b, {digest} AS h FROM {} OFFSET 0) s WHERE b IN ({}) GROUP BY b",
                    self.shape.bucket_sql(*count),
                    self.shape.qualified,
                    partitions.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
                false,
            ),
        };
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(|e| VerifyError::target(&self.shape.qualified, "summing rows", e))?;
        let mut out = HashMap::new();
        for row in rows {
            let partition = if ranges {
                partitions[0]
            } else {
                u32::try_from(row.get::<_, i64>(0)).unwrap_or(u32::MAX)
            };
            let agg = Aggregate {
                rows: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                high: parse_sum(row.get(2)),
                low: parse_sum(row.get(3)),
            };
            out.insert(partition, agg);
        }
        Ok(out)
    }

    /// `(partition, source sums, target sums)` of every selected partition, and the number of
    /// source rows read when every row was read.
    async fn compare_sums(
        &self,
        selected: &[u32],
        tick: &mut impl FnMut(u64, u64),
    ) -> Result<(Vec<(u32, Aggregate, Aggregate)>, Option<u64>)> {
        match &self.partitions {
            Partitions::Ranges(chunks) => {
                let parallel = self.ctx.request.parallel.max(1);
                // Collected first: a lazily mapped iterator makes the future lose `Send`.
                let reads: Vec<_> = selected
                    .iter()
                    .copied()
                    .enumerate()
                    .map(|(i, p)| async move {
                        let one = [p];
                        let (source, target) = tokio::join!(
                            self.range_source_sums(&chunks[p as usize]),
                            self.target_sums(self.pg(i), &one)
                        );
                        Ok::<_, VerifyError>((p, source?, target?.remove(&p).unwrap_or_default()))
                    })
                    .collect();
                let mut results = futures::stream::iter(reads).buffer_unordered(parallel);
                let mut out = Vec::with_capacity(selected.len());
                let mut rows = 0;
                while let Some(r) = results.try_next().await? {
                    rows += r.1.rows;
                    out.push(r);
                    tick(out.len() as u64, rows);
                }
                out.sort_by_key(|r| r.0);
                Ok((out, Some(rows)))
            }
            Partitions::Buckets { count, chunks } => {
                let wanted: HashSet<u32> = selected.iter().copied().collect();
                let mut source: HashMap<u32, Aggregate> = HashMap::new();
                let parallel = self.ctx.request.parallel.max(1);
                let read = async {
                    let reads: Vec<_> = chunks
                        .iter()
                        .map(|chunk| self.bucket_source_sums(chunk, *count))
                        .collect();
                    let mut results = futures::stream::iter(reads).buffer_unordered(parallel);
                    let (mut rows, mut done) = (0, 0);
                    while let Some(sums) = results.try_next().await? {
                        for (b, s) in sums {
                            rows += s.rows;
                            if wanted.contains(&b) {
                                source.entry(b).or_default().merge(&s);
                            }
                        }
                        done += 1;
                        tick(done, rows);
                    }
                    Ok::<_, VerifyError>(rows)
                };
                let (rows, target) = tokio::join!(read, self.target_sums(self.pg(0), selected));
                let (rows, mut target) = (rows?, target?);
                let out = selected
                    .iter()
                    .map(|p| {
                        (
                            *p,
                            source.remove(p).unwrap_or_default(),
                            target.remove(p).unwrap_or_default(),
                        )
                    })
                    .collect();
                Ok((out, Some(rows)))
            }
        }
    }

    /// The differing rows of the given partitions.
    async fn narrow(&self, partitions: &[u32]) -> Result<Vec<Candidate>> {
        let mut out = Vec::new();
        match &self.partitions {
            Partitions::Ranges(chunks) => {
                for p in partitions {
                    out.extend(
                        self.narrow_scan(std::slice::from_ref(&chunks[*p as usize]), &[*p], |_| {
                            Some(*p)
                        })
                        .await?,
                    );
                }
            }
            Partitions::Buckets { count, chunks } => {
                // A few buckets per pass keeps the source map near a few chunks' worth of keys.
                for group in partitions.chunks(4) {
                    let wanted: HashSet<u32> = group.iter().copied().collect();
                    let count = *count;
                    out.extend(
                        self.narrow_scan(chunks, group, |key| {
                            let b = bucket_of(key, count);
                            wanted.contains(&b).then_some(b)
                        })
                        .await?,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Reads the source rows of `chunks` that `partition_of` accepts into a map by key digest,
    /// then streams the target rows of `partitions` against it.
    async fn narrow_scan(
        &self,
        chunks: &[Chunk],
        partitions: &[u32],
        partition_of: impl Fn(&Digest16) -> Option<u32>,
    ) -> Result<Vec<Candidate>> {
        let mut map: HashMap<Digest16, SourceEntry> = HashMap::new();
        let mut hasher = RowHasher::new(&self.shape);
        for chunk in chunks {
            self.read_source(chunk, |values| {
                let (key, row) = hasher.digests(values);
                if let Some(partition) = partition_of(&key) {
                    map.entry(key)
                        .and_modify(|e| e.count += 1)
                        .or_insert_with(|| SourceEntry {
                            row,
                            count: 1,
                            partition,
                            key: hasher.key_values(values),
                        });
                }
            })
            .await?;
        }
        let sql = format!(
            "SELECT {}, {}, {} FROM {} WHERE {}",
            self.shape.key_digest_sql(),
            self.shape.row_digest_sql(),
            self.shape.render_key_sql(),
            self.shape.qualified,
            self.predicate(partitions)?
        );
        let context = |e| VerifyError::target(&self.shape.qualified, "reading rows to compare", e);
        let stream = self
            .pg(0)
            .query_raw(sql.as_str(), Vec::<String>::new())
            .await
            .map_err(context)?;
        futures::pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(context)? {
            let (Some(key), Some(digest)) = (parse_digest(row.get(0)), parse_digest(row.get(1)))
            else {
                continue;
            };
            let render: String = row.get(2);
            match map.get_mut(&key) {
                None => out.push(Candidate {
                    kind: DiffKind::Extra,
                    key_digest: key,
                    partition: partition_of(&key).unwrap_or(partitions[0]),
                    key: None,
                    source_row: None,
                    render: truncate(render),
                }),
                Some(entry) => {
                    if entry.row != digest {
                        out.push(Candidate {
                            kind: DiffKind::Different,
                            key_digest: key,
                            partition: entry.partition,
                            key: Some(entry.key.clone()),
                            source_row: Some(entry.row),
                            render: truncate(render),
                        });
                    }
                    entry.count -= 1;
                    if entry.count == 0 {
                        map.remove(&key);
                    }
                }
            }
        }
        for (key, entry) in map {
            for _ in 0..entry.count {
                out.push(Candidate {
                    kind: DiffKind::Missing,
                    key_digest: key,
                    partition: entry.partition,
                    render: truncate(self.shape.render_key(&entry.key)),
                    key: Some(entry.key.clone()),
                    source_row: Some(entry.row),
                });
            }
        }
        out.sort_by(|a, b| a.render.cmp(&b.render));
        Ok(out)
    }

    /// Current source rows of the candidates the source has, by key digest.
    async fn source_rows(
        &self,
        candidates: &[&Candidate],
    ) -> Result<HashMap<Digest16, Vec<Value>>> {
        let keys: Vec<KeyBound> = candidates
            .iter()
            .filter_map(|c| c.key.clone())
            .map(|values| KeyBound { values })
            .collect();
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let mut stream = self
            .ctx
            .capture
            .clone()
            .read_rows(ReadRowsRequest {
                source: Some(self.ctx.request.source.clone()),
                table: Some(self.schema.clone()),
                keys,
                task_id: self.ctx.request.task_id.clone(),
                throttle: Some(self.ctx.request.throttle),
            })
            .await
            .map_err(|s| VerifyError::capture(&self.name, "reading rows by key", s))?
            .into_inner();
        let mut hasher = RowHasher::new(&self.shape);
        while let Some(batch) = stream
            .message()
            .await
            .map_err(|s| VerifyError::capture(&self.name, "reading rows by key", s))?
        {
            for row in batch.rows {
                let (key, _) = hasher.digests(&row.values);
                out.insert(key, row.values);
            }
        }
        Ok(out)
    }

    /// Source names of the differing columns of each `different` candidate.
    async fn differing_columns(
        &self,
        candidates: &[Candidate],
    ) -> Result<HashMap<Digest16, Vec<String>>> {
        let different: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.kind == DiffKind::Different)
            .take(self.ctx.request.max_differences)
            .collect();
        let mut out = HashMap::new();
        if different.is_empty() {
            return Ok(out);
        }
        let source = self.source_rows(&different).await?;
        let forms: Vec<String> = self
            .shape
            .columns
            .iter()
            .map(|c| dbsync_typemap::pg_canonical_sql(&c.quoted, &c.ty))
            .collect();
        let partitions: Vec<u32> = different
            .iter()
            .map(|c| c.partition)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let digests: Vec<String> = different
            .iter()
            .map(|c| hex::encode(c.key_digest))
            .collect();
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {} AND {} = ANY($1::text[])",
            self.shape.key_digest_sql(),
            forms.join(", "),
            self.shape.qualified,
            self.predicate(&partitions)?,
            self.shape.key_digest_sql()
        );
        let rows =
            self.pg(0).query(&sql, &[&digests]).await.map_err(|e| {
                VerifyError::target(&self.shape.qualified, "reading differing rows", e)
            })?;
        let mut hasher = RowHasher::new(&self.shape);
        for row in rows {
            let Some(key) = parse_digest(row.get(0)) else {
                continue;
            };
            let Some(values) = source.get(&key) else {
                continue;
            };
            let source_forms = hasher.column_forms(values);
            let names = self
                .shape
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    row.get::<_, &str>(i + 1).as_bytes() != source_forms[*i].as_slice()
                })
                .map(|(_, c)| c.source_name.clone())
                .collect();
            out.insert(key, names);
        }
        Ok(out)
    }

    /// Deletes the target rows of every candidate and inserts the source's current rows, in
    /// one transaction. Returns the rows deleted as extra plus the rows written.
    async fn repair(&self, candidates: &[Candidate]) -> Result<u64> {
        let with_source: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.kind != DiffKind::Extra)
            .collect();
        let source = self.source_rows(&with_source).await?;
        let target = &self.ctx.request.target;
        // Triggers and FK checks off for this session, as apply writes; plain when not allowed.
        let mut client = match dbsync_apply::pg::connect(target).await {
            Ok(c) => c,
            Err(ApplyError::ReplicationRoleDenied { .. }) => {
                dbsync_apply::pg::connect_plain(target).await?
            }
            Err(e) => return Err(e.into()),
        };
        let qualified = &self.shape.qualified;
        let tx = client
            .transaction()
            .await
            .map_err(|e| VerifyError::target(qualified, "starting the repair", e))?;
        let partitions: Vec<u32> = candidates
            .iter()
            .map(|c| c.partition)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let digests: Vec<String> = candidates
            .iter()
            .map(|c| hex::encode(c.key_digest))
            .collect();
        let deleted = tx
            .execute(
                &format!(
                    "DELETE FROM {qualified} WHERE {} AND {} = ANY($1::text[])",
                    self.predicate(&partitions)?,
                    self.shape.key_digest_sql()
                ),
                &[&digests],
            )
            .await
            .map_err(|e| VerifyError::target(qualified, "deleting differing rows", e))?;
        let columns: Vec<&str> = self
            .shape
            .columns
            .iter()
            .map(|c| c.quoted.as_str())
            .collect();
        let rows: Vec<&Vec<Value>> = source.values().collect();
        // OVERRIDING SYSTEM VALUE: identity columns keep the source's values, as in full sync.
        for batch in rows.chunks(500) {
            let mut tuples = Vec::with_capacity(batch.len());
            for values in batch {
                let mut literals = Vec::with_capacity(self.shape.columns.len());
                for c in &self.shape.columns {
                    let value = values.get(c.source_index).cloned().unwrap_or_default();
                    literals.push(render_literal(&value, &c.ty).map_err(|e| {
                        VerifyError::InvalidRequest {
                            object: format!("{}.{}", self.name, c.source_name),
                            detail: format!("the source value cannot be written: {e}"),
                        }
                    })?);
                }
                tuples.push(format!("({})", literals.join(", ")));
            }
            tx.batch_execute(&format!(
                "INSERT INTO {qualified} ({}) OVERRIDING SYSTEM VALUE VALUES {}",
                columns.join(", "),
                tuples.join(", ")
            ))
            .await
            .map_err(|e| VerifyError::target(qualified, "re-copying rows", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| VerifyError::target(qualified, "committing the repair", e))?;
        let extra = candidates
            .iter()
            .filter(|c| c.kind == DiffKind::Extra)
            .count() as u64;
        Ok(extra.min(deleted) + source.len() as u64)
    }
}

/// Keys of a table without key are whole rows: keep the report readable.
fn truncate(mut s: String) -> String {
    const MAX: usize = 300;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
