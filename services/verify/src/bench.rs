//! Benchmark hook: verification throughput (source rows hashed by capture, and for comparison
//! hashed here after crossing gRPC) next to the plain work of reading both sides.

use std::time::Instant;

use futures::TryStreamExt;

use crate::error::{Result, VerifyError};
use crate::{verify, VerifyRequest};

/// What [`measure`] found.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub rows: u64,
    pub verify_seconds: f64,
    pub verify_rows_per_second: f64,
    /// The same verification with every source row streamed over gRPC and hashed in the
    /// verifier (`source_checksums: false`, how verify worked before capture hashed rows).
    pub verify_rows_over_grpc_seconds: f64,
    /// `SELECT count(*)` plus a full scan of the target table.
    pub target_scan_seconds: f64,
    /// Every row of every chunk streamed from capture (`ReadChunk`), not hashed.
    pub source_scan_seconds: f64,
    pub equal: bool,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |s: f64| if s > 0.0 { self.rows as f64 / s } else { 0.0 };
        write!(
            f,
            "verify: {} rows in {:.2} s = {:.0} rows/s (equal: {}; with rows hashed after crossing gRPC: {:.2} s = {:.0} rows/s); count(*) + full scan: target {:.2} s = {:.0} rows/s, source via capture {:.2} s = {:.0} rows/s",
            self.rows,
            self.verify_seconds,
            self.verify_rows_per_second,
            self.equal,
            self.verify_rows_over_grpc_seconds,
            rate(self.verify_rows_over_grpc_seconds),
            self.target_scan_seconds,
            rate(self.target_scan_seconds),
            self.source_scan_seconds,
            rate(self.source_scan_seconds)
        )
    }
}

/// Verifies the request's first table, then times a count plus a full scan of each side.
pub async fn measure(request: VerifyRequest) -> Result<BenchResult> {
    let plan = request
        .tables
        .first()
        .cloned()
        .ok_or_else(|| VerifyError::InvalidRequest {
            object: "benchmark".into(),
            detail: "the request names no table".into(),
        })?;
    let started = Instant::now();
    let report = verify(request.clone(), |_| {}).await?;
    let verify_seconds = started.elapsed().as_secs_f64();
    let rows = report.tables.first().map(|t| t.rows_compared).unwrap_or(0);
    let started = Instant::now();
    let over_grpc = verify(
        VerifyRequest {
            source_checksums: false,
            ..request.clone()
        },
        |_| {},
    )
    .await?;
    let verify_rows_over_grpc_seconds = started.elapsed().as_secs_f64();
    if over_grpc.equal != report.equal {
        return Err(VerifyError::InvalidRequest {
            object: "benchmark".into(),
            detail: "the two ways of hashing source rows disagree".into(),
        });
    }

    let target = dbsync_apply::pg::connect_plain(&request.target).await?;
    let resolved = dbsync_apply::plan::TableTarget::from_plan(&plan)?;
    let qualified = resolved.qualified.clone();
    let started = Instant::now();
    let err = |e| VerifyError::target(&qualified, "scanning for the benchmark", e);
    target
        .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
        .await
        .map_err(err)?;
    let stream = target
        .query_raw(
            &format!("SELECT * FROM {qualified}") as &str,
            Vec::<String>::new(),
        )
        .await
        .map_err(err)?;
    futures::pin_mut!(stream);
    while stream.try_next().await.map_err(err)?.is_some() {}
    let target_scan_seconds = started.elapsed().as_secs_f64();

    let mut capture =
        dbsync_apply::capture::connect(&request.capture_address, request.capture_token.as_ref())
            .await?;
    let schema = plan.source.clone().unwrap_or_default();
    let name = resolved.source_name.clone();
    let started = Instant::now();
    let chunks = capture
        .plan_chunks(dbsync_proto::v1::PlanChunksRequest {
            source: Some(request.source.clone()),
            table: Some(schema.clone()),
            target_rows: request.chunk_rows,
            where_filter: plan.where_filter.clone(),
        })
        .await
        .map_err(|s| VerifyError::capture(&name, "planning chunks", s))?
        .into_inner()
        .chunks;
    for chunk in chunks {
        let mut stream = capture
            .read_chunk(dbsync_proto::v1::ReadChunkRequest {
                source: Some(request.source.clone()),
                task_id: request.task_id.clone(),
                table: Some(schema.clone()),
                chunk: Some(chunk),
                where_filter: plan.where_filter.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| VerifyError::capture(&name, "reading a chunk", s))?
            .into_inner();
        while stream
            .message()
            .await
            .map_err(|s| VerifyError::capture(&name, "reading a chunk", s))?
            .is_some()
        {}
    }
    let source_scan_seconds = started.elapsed().as_secs_f64();
    Ok(BenchResult {
        rows,
        verify_seconds,
        verify_rows_per_second: if verify_seconds > 0.0 {
            rows as f64 / verify_seconds
        } else {
            0.0
        },
        verify_rows_over_grpc_seconds,
        target_scan_seconds,
        source_scan_seconds,
        equal: report.equal,
    })
}
