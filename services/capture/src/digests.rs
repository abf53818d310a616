//! Verification sums next to the source (`ChecksumChunks` with columns): each row is hashed
//! here over the canonical forms of the target's column types (`dbsync_typemap::digest`), and
//! only the count and digest sums per chunk, or per bucket of the key digest, cross gRPC.
//! Reads take the task's full-sync throttle, like chunk reads.

use dbsync_proto::v1::{ChecksumChunksRequest, ChunkChecksum, TableSchema, Value};
use dbsync_typemap::digest::{bucket_of, canonical_type, kind_from_column, Aggregate, RowDigester};
use futures_util::TryStreamExt;

use crate::error::{CaptureError, Result};
use crate::mssql::client::Pools;
use crate::mssql::{decode, inspect};
use crate::sql::{self, Params};
use crate::throttle::TaskThrottle;

/// Rows between throttle waits (one wait per row would dominate the loop).
const THROTTLE_EVERY: u64 = 1000;

/// The digester the request describes, checked against the table.
fn digester(req: &ChecksumChunksRequest, table: &TableSchema, name: &str) -> Result<RowDigester> {
    let mut columns = Vec::with_capacity(req.columns.len());
    for c in &req.columns {
        let source = table.columns.get(c.source_index as usize).ok_or_else(|| {
            CaptureError::InvalidRequest(format!(
                "Column {} of the checksum request is not a column of {name}",
                c.source_index
            ))
        })?;
        let kind = kind_from_column(c).ok_or_else(|| {
            CaptureError::InvalidRequest(format!(
                "Target type {:?} of column {} of {name} is unknown",
                c.pg_type, source.name
            ))
        })?;
        columns.push((c.source_index as usize, canonical_type(source, kind)));
    }
    let mut key = Vec::with_capacity(req.key.len());
    for k in &req.key {
        if *k as usize >= columns.len() {
            return Err(CaptureError::InvalidRequest(format!(
                "Key column {k} of the checksum request for {name} is not one of its columns"
            )));
        }
        key.push(*k as usize);
    }
    Ok(RowDigester::new(columns, key))
}

fn checksum(index: u32, sums: &Aggregate) -> ChunkChecksum {
    let (high_sum, low_sum) = sums.sums_bytes();
    ChunkChecksum {
        index,
        rows: sums.rows,
        checksum: Vec::new(),
        high_sum,
        low_sum,
    }
}

/// Count and digest sums of every chunk, or with `buckets`, of every non-empty bucket over all
/// chunks. Each chunk is one query, under SNAPSHOT isolation when the database allows it.
pub async fn digest_sums(
    pools: &Pools,
    req: &ChecksumChunksRequest,
    table: &TableSchema,
    throttle: &TaskThrottle,
) -> Result<Vec<ChunkChecksum>> {
    let name = table
        .table
        .as_ref()
        .map(sql::display_name)
        .unwrap_or_default();
    let mut digester = digester(req, table, &name)?;
    let source = req.source.as_ref().ok_or_else(|| {
        CaptureError::InvalidRequest("The request has no source connection".into())
    })?;
    let database = table
        .table
        .as_ref()
        .map(|t| t.database.as_str())
        .unwrap_or_default();
    let mut conn = pools.pool(source, database)?.get().await?;
    let snapshot = inspect::current_database(conn.client())
        .await?
        .snapshot_isolation_on;
    let context = format!("summing chunks of {name}");
    if snapshot {
        inspect::batch(
            conn.client(),
            &context,
            "SET TRANSACTION ISOLATION LEVEL SNAPSHOT",
        )
        .await?;
    }
    let mut buckets = vec![Aggregate::default(); req.buckets as usize];
    let mut out = Vec::with_capacity(if buckets.is_empty() {
        req.chunks.len()
    } else {
        0
    });
    let mut values: Vec<Value> = Vec::with_capacity(table.columns.len());
    for chunk in &req.chunks {
        let mut params = Params::default();
        let query = sql::chunk_query(
            table,
            &req.where_filter,
            chunk.lower.as_ref().map(|b| b.values.as_slice()),
            chunk.upper.as_ref().map(|b| b.values.as_slice()),
            &mut params,
        )?;
        throttle.query().await;
        let mut sums = Aggregate::default();
        let (mut rows, mut bytes) = (0u64, 0u64);
        let client = conn.client();
        let query_values = params.values();
        let mut stream = client
            .query(query.as_str(), &query_values)
            .await
            .map_err(|e| CaptureError::from_tiberius(&context, e))?
            .into_row_stream();
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| CaptureError::from_tiberius(&context, e))?
        {
            values.clear();
            values.extend(row.into_iter().map(decode::to_value));
            bytes += values
                .iter()
                .map(|v| decode::value_size(v) as u64)
                .sum::<u64>();
            let (key, digest) = digester.digests(&values);
            if buckets.is_empty() {
                sums.add(&digest);
            } else {
                let b = bucket_of(&key, req.buckets) as usize;
                buckets[b].add(&digest);
            }
            rows += 1;
            if rows.is_multiple_of(THROTTLE_EVERY) {
                throttle
                    .rows_and_bytes(THROTTLE_EVERY, std::mem::take(&mut bytes))
                    .await;
            }
        }
        drop(stream);
        throttle.rows_and_bytes(rows % THROTTLE_EVERY, bytes).await;
        metrics::counter!("dbsync_capture_rows_read_total").increment(rows);
        if buckets.is_empty() {
            out.push(checksum(chunk.index, &sums));
        }
    }
    for (b, sums) in buckets.iter().enumerate() {
        if sums.rows > 0 {
            out.push(checksum(b as u32, sums));
        }
    }
    if snapshot {
        inspect::batch(
            conn.client(),
            &context,
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )
        .await?;
    }
    conn.mark_clean();
    Ok(out)
}
